"""How the daemon's statements run on a database as it is (a filled one, say), changing nothing.

    python -m bench.plans --database-url URL [--batch 50] [--generic] [--audit] [--query-text]

In one transaction, rolled back at the end, a batch of runs goes through the store's own methods:
submitted (the load test's mix), claimed, each step committed, the failed runs compensated (the first
commit and the compensation twice, as a retry after a lost connection would); then the sampler's
counts (and with ``--audit`` the audit). PostgreSQL's auto_explain hands back each statement's plan
as it ran, with its buffers and its foreign key triggers; a summary names every statement that read
a table whole (a sequential scan), and every join that compared rows in vain (a batch scanned once
for each row of another). ``--generic`` runs every statement on its generic plan, the one the
daemon's prepared statements settle on after five executions. Needs a superuser (to LOAD auto_explain).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass

import anyio
import asyncpg

from bench.ceiling import plan_run
from bench.fill import FAILURES
from bench.session import OneConnection, rolled_back
from sagad.cli.load import Mix
from sagad.content.samples import sample_brief
from sagad.domain.runs import Lease, RunId, WorkerId
from sagad.domain.steps import Step
from sagad.store.audit import audit_database
from sagad.store.runs import RunStore
from sagad.store.steps import StepStore

_SETTINGS = {
    "auto_explain.log_min_duration": "0",
    "auto_explain.log_analyze": "on",
    "auto_explain.log_buffers": "on",
    "auto_explain.log_triggers": "on",
    "auto_explain.log_level": "notice",  # sent to this client, not to the server's log
}
# Tables of one row by their CHECK constraint (the fleet's intake): reading one whole reads its row.
_ONE_ROW = frozenset({"sagad_intake"})
_JOIN_FILTERED = re.compile(r"Rows Removed by Join Filter: (\d+)")
_SEQ_SCAN = re.compile(r"Seq Scan on (\w+).*?\(actual time=[\d.]+\.\.([\d.]+) rows=(\d+) loops=(\d+)\)")


@dataclass(frozen=True, slots=True)
class Plan:
    """One statement as it ran: what the store was doing, and auto_explain's report."""

    doing: str
    report: str

    @property
    def milliseconds(self) -> float:
        found = re.search(r"duration: ([\d.]+) ms", self.report)
        return float(found.group(1)) if found else float("nan")

    def scans(self) -> list[str]:
        """The tables read whole (not CTEs or functions), with the rows read and the time it took."""
        return [
            f"{table}: {int(rows) * int(loops):,} rows, {float(ms) * int(loops):.1f} ms"
            for table, ms, rows, loops in _SEQ_SCAN.findall(self.report)
            if not table.startswith(("held", "locked", "advanced", "finished")) and table not in _ONE_ROW
        ]

    def joined_in_vain(self) -> int:
        """Rows a join compared and threw away: a batch scanned once per row of another shows up here."""
        return sum(int(n) for n in _JOIN_FILTERED.findall(self.report))

    def shown(self, *, query_text: bool) -> str:
        lines = self.report.splitlines()
        if not query_text:
            # The query text is the statement as the store wrote it; the plan follows its last line.
            start = next((n for n, line in enumerate(lines) if re.match(r"\s*(\w[\w ]*)?\s*\(cost=", line)), 0)
            lines = [lines[0], *lines[start:]]
        return "\n".join(lines)


_FLUSH = "SELECT 'bench.plans: flush'"


class _Recorder:
    """Takes auto_explain's notices, each under what the store was doing when it ran the statement."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.doing = "start"
        self.plans: list[Plan] = []

    def __call__(self, conn: asyncpg.Connection, message: asyncpg.PostgresLogMessage) -> None:
        text = message.message
        # Not the flushes, nor the driver's look-ups of the types it meets.
        if "plan:" in text and _FLUSH not in text and "typeinfo" not in text:
            plan = Plan(self.doing, text)
            if len(plan.shown(query_text=False).splitlines()) > 2:  # not a lone Result (the driver's own)
                self.plans.append(plan)

    async def now(self, doing: str) -> None:
        # A statement's plan is reported when its portal closes, which the next statement does: a
        # simple query closes it and its own at once, so every report is in before the label changes.
        await self.conn.execute(_FLUSH)
        self.doing = doing


async def _carry_batch(db: OneConnection, recorder: _Recorder, batch: int) -> None:
    runs, steps = RunStore(db), StepStore(db, WorkerId("bench-plans"))
    briefs = [sample_brief(ending, n) for n, ending in enumerate(Mix.of(batch, *FAILURES).shuffled())]
    await recorder.now("submit")
    submitted = await runs.submit_many([(brief, None) for brief in briefs])
    planned = {run_id: await plan_run(run_id, brief) for (run_id, _), brief in zip(submitted, briefs, strict=True)}
    await recorder.now("claim")
    alive: list[Lease] = [run.lease for run in await runs.claim(WorkerId("bench-plans"), batch, 300.0)]
    failed: list[Lease] = []
    tables: set[str] = set()
    for index, step in enumerate(Step):
        await recorder.now(f"commit {step}")
        writes = [planned[RunId(lease.run_id)].write(index, lease) for lease in alive]
        await steps.commit_step(step, writes)
        if index == 0:  # a retry after a lost connection finds its first attempt made
            await recorder.now(f"commit {step} again")
            await steps.commit_step(step, writes)
        failed += [w.lease for w in writes if w.failure is not None]
        if any(w.failure is not None for w in writes):
            tables.update(table for earlier in tuple(Step)[: index + 1] for table in earlier.tables)
        alive = [w.lease for w in writes if w.failure is None]
    if failed:
        await recorder.now(f"compensate {len(failed)} runs")
        await steps.compensate(failed, frozenset(tables))
        await recorder.now(f"compensate {len(failed)} runs again")
        await steps.compensate(failed, frozenset(tables))
    await recorder.now("sampler: count_by_status")
    await runs.count_by_status()
    await recorder.now("sampler: count_overdue")
    await runs.count_overdue()


async def explain(url: str, batch: int, *, generic: bool, audit: bool) -> list[Plan]:
    """The plans of a batch carried through, all rolled back."""
    async with rolled_back(url) as db:
        recorder = _Recorder(db.conn)
        db.conn.add_log_listener(recorder)
        await db.conn.execute("LOAD 'auto_explain'")
        for name, value in {**_SETTINGS, **({"plan_cache_mode": "force_generic_plan"} if generic else {})}.items():
            await db.conn.execute(f"SET LOCAL {name} = '{value}'")
        await _carry_batch(db, recorder, batch)
        if audit:
            await recorder.now("audit")
            await audit_database(db)
        await recorder.now("end")
        return recorder.plans


def render(plans: list[Plan], *, query_text: bool) -> str:
    lines = []
    for plan in plans:
        lines += [f"== {plan.doing} ({plan.milliseconds:.1f} ms)", plan.shown(query_text=query_text), ""]
    lines.append("Statements that read a table whole:")
    scanned = [(plan, scans) for plan in plans if (scans := plan.scans())]
    lines += [f"  {plan.doing}: {'; '.join(scans)}" for plan, scans in scanned] or ["  none"]
    lines.append("Rows joins compared in vain:")
    lines += [f"  {plan.doing}: {n:,}" for plan in plans if (n := plan.joined_in_vain())] or ["  none"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.plans", description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="A migrated database (filled, say); left as it was.")
    parser.add_argument("--batch", type=int, default=50, help="Runs carried through together (a group commit).")
    parser.add_argument("--generic", action="store_true", help="Generic plans, as prepared statements settle on.")
    parser.add_argument("--audit", action="store_true", help="Also the audit's statements.")
    parser.add_argument("--query-text", action="store_true", help="Show each statement's text too.")
    args = parser.parse_args(argv)
    plans = anyio.run(lambda: explain(args.database_url, args.batch, generic=args.generic, audit=args.audit))
    print(render(plans, query_text=args.query_text))


if __name__ == "__main__":
    main()
