"""Prefill a migrated database with finished runs, in SQL: what weeks of traffic leave in the tables.

``fill(url, runs)`` writes ``runs`` terminal runs in chunks, each chunk a handful of
``INSERT ... SELECT`` statements over ``generate_series``: by default 90% completed runs with every
row a completed run of the built-in pipeline holds (its business rows and one ``step_outputs`` row
per step) and 10% compensated runs (a ``workflow_runs`` row only), the failures split as the
benchmarks' load (4% QC, 3% delivery, 3% invalid). The rows are copied from templates: real runs of
sample briefs taken through the built-in pipeline in-process, so every table gets the rows, sizes
and values a real run writes; each filled run gets its own id, and each row a key derived from it.

The foreign keys are checked as the daemon's commits check them, and the indexes grow by inserts
as in production, so they take the shape the run ids give them: random ids split pages all over an
index (about 70% full), time-ordered ones append at its end (about 90% full). The chunks go in
oldest first; within a chunk, rows go in in key order, so that each index page a chunk touches is
read, and logged whole after a checkpoint, once per chunk rather than once per row: with random ids
and indexes larger than memory, row after row in time order would make nearly every insert a read
and a full-page image. At least 20 chunks make a fill, so the first chunk (ordered inserts into
empty indexes, which leave pages fuller) is a small part of it. The indexes come out the size
traffic would have grown them to (checked at 100,000 runs against a fill in time order).

    python -m bench.fill --database-url URL --runs 100000 [--ids v4|v7]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import anyio
import asyncpg
from sqlalchemy.dialects.postgresql import UUID

from bench.session import rolled_back
from sagad.cli.load import Mix
from sagad.content.pipeline import builtin_pipeline, walk
from sagad.content.samples import Ending, sample_brief
from sagad.domain.rows import Row
from sagad.domain.steps import BUSINESS_TABLES
from sagad.store.db import asyncpg_dsn
from sagad.store.runs import RunStore
from sagad.store.schema import metadata
from sagad.store.writes import column_arrays, written_columns

IdKind = Literal["v4", "v7"]
ID_KINDS: tuple[IdKind, ...] = get_args(IdKind)

CHUNK = 200_000
"""Most runs per chunk: one transaction, one statement per table; bounds the server's memory and shows progress."""
MIN_CHUNKS = 20
MIN_CHUNK = 5_000
RUNS_PER_SECOND = 2_000
"""The pace of the traffic the filled runs stand for: their times (and v7 ids) spread over runs / 2000 s."""
FAILURES = (0.04, 0.03, 0.03)
"""Fractions failing at QC, at delivery and at normalize_brief: the benchmarks' 10% mix."""
TEMPLATES = 200
"""Sample briefs taken through the pipeline for the completed runs (a tenth as many per failure)."""
_CYCLE = 1_000
"""Run n takes the template at position n % _CYCLE of a shuffled cycle of the mix."""

Progress = Callable[[int, int, float], None]
"""Called after each chunk with (runs filled, runs asked for, seconds so far)."""


def run_id_sql(kind: IdKind, random: str, at: str) -> str:
    """SQL for a run id made as ``sagad submit`` makes one of ``kind``.

    ``random`` is a bytea of 16 random bytes in uuid4 layout (version and variant bits set), ``at``
    the run's submission time. A v7 id puts the time in milliseconds in its first 48 bits and 7 in
    its version nibble; the variant bits and the other 74 random bits stay.
    """
    if kind == "v4":
        return f"encode({random}, 'hex')::uuid"
    millis = f"substring(int8send(floor(extract(epoch FROM {at}) * 1000)::int8) FROM 3)"
    stamped = f"overlay({random} PLACING {millis} FROM 1 FOR 6)"
    return f"encode(set_byte({stamped}, 6, (get_byte({random}, 6) & 15) | 112), 'hex')::uuid"


async def store_id_kind(url: str) -> IdKind:
    """The kind of run id the store makes today: it submits one run, in a transaction rolled back."""
    async with rolled_back(url) as db:
        [(run_id, _)] = await RunStore(db).submit_many([({}, None)])
    return "v7" if run_id.version == 7 else "v4"


@dataclass(frozen=True, slots=True)
class Template:
    """A sample brief taken through the pipeline: what a run of it holds once it has ended."""

    number: int
    ending: Ending
    brief: str
    rows: dict[str, list[Row]]
    outputs: tuple[str, ...]
    failed_step: str | None
    next_step: int
    last_error: str | None


async def templates(per_ending: dict[Ending, int]) -> list[Template]:
    """``per_ending[e]`` runs of sample briefs ending as ``e``, walked through the built-in pipeline."""
    pipeline = builtin_pipeline()
    made: list[Template] = []
    for ending, count in per_ending.items():
        for seed in range(count):
            brief = sample_brief(ending, seed)
            walked = await walk(pipeline, uuid.uuid4(), brief)
            if walked.failed_step is not ending.failed_step:
                raise RuntimeError(f"a sample brief built to end {ending} failed at {walked.failed_step}")
            rows: dict[str, list[Row]] = {}
            if walked.failed_step is None:  # a compensated run keeps no rows
                for result in walked.results:
                    for table, written in result.rows.items():
                        rows.setdefault(table, []).extend(written)
            made.append(
                Template(
                    number=len(made),
                    ending=ending,
                    brief=json.dumps(brief),
                    rows=rows,
                    outputs=tuple(json.dumps(r.output) for r in walked.results) if walked.failed_step is None else (),
                    failed_step=None if walked.failed_step is None else walked.failed_step.value,
                    next_step=len(walked.results),
                    last_error=walked.reason,
                )
            )
    return made


def _cycle(made: Sequence[Template], failures: tuple[float, float, float]) -> list[tuple[int, int]]:
    """(position, template) for a shuffled cycle of ``_CYCLE`` runs in the mix, each ending's templates in turn."""
    by_ending: dict[Ending, list[Template]] = {}
    for template in made:
        by_ending.setdefault(template.ending, []).append(template)
    taken: dict[Ending, int] = {}
    cycle = []
    for position, ending in enumerate(Mix.of(_CYCLE, *failures).shuffled(seed=1)):
        pool = by_ending[ending]
        cycle.append((position, pool[taken.get(ending, 0) % len(pool)].number))
        taken[ending] = taken.get(ending, 0) + 1
    return cycle


def _derived(column: str) -> str:
    """A row key of the filled run: its template's key hashed with the run id (unique within the run)."""
    return f"md5(c.id::text || t.{column}::text)::uuid"


def _business_insert(table: str) -> str:
    columns = written_columns(table)
    declared = metadata.tables[table].columns
    values = [
        "c.id" if name == "run_id" else _derived(name) if isinstance(declared[name].type, UUID) else f"t.{name}"
        for name in columns
    ]
    return (
        f"INSERT INTO {table} ({', '.join(columns)}, created_at) "
        f"SELECT {', '.join(values)}, c.at + interval '100 ms' "
        f"FROM fill_chunk c JOIN fill_{table} t ON t.template = c.template ORDER BY 1, 2"
    )


_RUNS_INSERT = """
    INSERT INTO workflow_runs (id, brief, status, next_step, failed_step, last_error, attempts, lease_token,
                               available_at, submitted_at, started_at, failed_at, finished_at, updated_at)
    SELECT c.id, t.brief, t.status, t.next_step, t.failed_step, t.last_error, 1, 1,
           NULL, c.at, c.at + interval '15 ms', CASE WHEN t.failed_step IS NOT NULL THEN c.at + interval '150 ms' END,
           c.at + interval '200 ms', c.at + interval '200 ms'
    FROM fill_chunk c JOIN fill_runs t ON t.template = c.template ORDER BY c.id
"""

_OUTPUTS_INSERT = """
    INSERT INTO step_outputs (run_id, step, output, created_at)
    SELECT c.id, t.step, t.output, c.at + interval '100 ms'
    FROM fill_chunk c JOIN fill_step_outputs t ON t.template = c.template ORDER BY c.id, t.step
"""


def _chunk_insert(kind: IdKind) -> str:
    """Runs $1..$2 of $4, each with its time (run $4 at $3, $5 runs a second before) and its template."""
    return f"""
        INSERT INTO fill_chunk (n, at, id, template)
        SELECT g.n, g.at, {run_id_sql(kind, "g.random", "g.at")}, cy.template
        FROM (
            SELECT n, $3::timestamptz - make_interval(secs => ($4::int8 - n) / $5::float8) AS at,
                   uuid_send(gen_random_uuid()) AS random
            FROM generate_series($1::int8, $2::int8) AS n
        ) AS g
        JOIN fill_cycle cy ON cy.position = g.n % {_CYCLE}
    """


async def _load_templates(conn: asyncpg.Connection, made: Sequence[Template], cycle: list[tuple[int, int]]) -> None:
    """The templates into temporary tables of this session, one per table written."""
    await conn.execute(
        "CREATE TEMP TABLE fill_runs (template int PRIMARY KEY, brief jsonb, status text, next_step smallint,"
        " failed_step text, last_error text);"
        "CREATE TEMP TABLE fill_step_outputs (template int, step smallint, output jsonb);"
        "CREATE TEMP TABLE fill_cycle (position int PRIMARY KEY, template int);"
        "CREATE TEMP TABLE fill_chunk (n int8, at timestamptz, id uuid, template int)"
    )
    runs = [
        (t.number, t.brief, "completed" if t.failed_step is None else "compensated", t.next_step, t.failed_step,
         t.last_error)
        for t in made
    ]  # fmt: skip
    await conn.copy_records_to_table("fill_runs", records=runs)
    outputs = [(t.number, step, output) for t in made for step, output in enumerate(t.outputs)]
    await conn.copy_records_to_table("fill_step_outputs", records=outputs)
    await conn.copy_records_to_table("fill_cycle", records=cycle)
    for table in BUSINESS_TABLES:
        columns = written_columns(table)
        await conn.execute(f"CREATE TEMP TABLE fill_{table} AS SELECT 0 AS template, {', '.join(columns)} "
                           f"FROM {table} WITH NO DATA")  # fmt: skip
        records = []
        for t in made:
            arrays = column_arrays(table, t.rows.get(table, []))
            records += [(t.number, *values) for values in zip(*arrays, strict=True)]
        await conn.copy_records_to_table(f"fill_{table}", records=records, columns=["template", *columns])
    await conn.execute("ANALYZE fill_runs, fill_step_outputs, fill_cycle")
    for table in BUSINESS_TABLES:
        await conn.execute(f"ANALYZE fill_{table}")


@dataclass(frozen=True, slots=True)
class Filled:
    """What a fill wrote, and how long it took."""

    runs: int
    ids: IdKind
    seconds: float
    insert_seconds: float
    database_bytes: int


async def fill(
    url: str,
    runs: int,
    ids: IdKind | None = None,
    *,
    failures: tuple[float, float, float] = FAILURES,
    chunk: int | None = None,
    progress: Progress | None = None,
) -> Filled:
    """Write ``runs`` finished runs into the migrated database at ``url``; then VACUUM ANALYZE and CHECKPOINT.

    ``ids`` is the kind of run id (default: the kind the store makes); ``chunk`` the runs per
    transaction (default: a twentieth of ``runs``, from 5,000 to 200,000). With ``runs`` 0 the
    tables stay as ``sagad migrate`` left them, and only the CHECKPOINT is done. CHECKPOINT needs
    a superuser (or pg_checkpoint) and is skipped without one.
    """
    chunk = chunk or min(CHUNK, max(MIN_CHUNK, -(-runs // MIN_CHUNKS)))
    kind = ids or await store_id_kind(url)
    started = time.perf_counter()
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        if runs:
            await _insert(conn, kind, runs, failures, chunk, progress, started)
        inserted = time.perf_counter() - started
        if runs:
            # As autovacuum would have done long since. Not on empty tables: there it would tell the
            # planner they are empty for good, where a fresh install has never analyzed them.
            await conn.execute("VACUUM ANALYZE")
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CHECKPOINT")
        size = await conn.fetchval("SELECT pg_database_size(current_database())")
    finally:
        await conn.close()
    return Filled(runs, kind, time.perf_counter() - started, inserted, int(size))


async def _insert(
    conn: asyncpg.Connection,
    kind: IdKind,
    runs: int,
    failures: tuple[float, float, float],
    chunk: int,
    progress: Progress | None,
    started: float,
) -> None:
    made = await templates(
        {ending: TEMPLATES if ending is Ending.COMPLETED else max(1, TEMPLATES // 10) for ending in Ending}
    )
    # One commit per chunk: waiting for each flush buys nothing here.
    await conn.execute("SET synchronous_commit = off; SET work_mem = '64MB'")
    await _load_templates(conn, made, _cycle(made, failures))
    end = await conn.fetchval("SELECT now() - interval '1 second'")
    statements = [_RUNS_INSERT, *(_business_insert(t) for t in BUSINESS_TABLES), _OUTPUTS_INSERT]
    for first in range(1, runs + 1, chunk):
        last = min(first + chunk - 1, runs)
        async with conn.transaction():
            await conn.execute("TRUNCATE fill_chunk")
            await conn.execute(_chunk_insert(kind), first, last, end, runs, float(RUNS_PER_SECOND))
            await conn.execute("ANALYZE fill_chunk")
            for statement in statements:
                await conn.execute(statement)
        if progress is not None:
            progress(last, runs, time.perf_counter() - started)


class ShowProgress:
    """A ``Progress`` printing a line a chunk, with the last chunk's pace (a fill slowing down shows)."""

    def __init__(self, prefix: str = "") -> None:
        self._prefix = prefix
        self._last = (0, 0.0)

    def __call__(self, done: int, total: int, seconds: float) -> None:
        pace = (done - self._last[0]) / max(seconds - self._last[1], 1e-9)
        self._last = (done, seconds)
        print(f"{self._prefix}filled {done:,} of {total:,} runs ({seconds:.1f} s; last chunk {pace:,.0f} runs/s)",
              file=sys.stderr, flush=True)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fill", description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="A database migrated by `sagad migrate`.")
    parser.add_argument("--runs", type=int, required=True, help="Finished runs to write.")
    parser.add_argument("--ids", choices=ID_KINDS, help="Kind of run id (default: what `sagad submit` makes).")
    parser.add_argument("--chunk", type=int, help="Runs per transaction (default: runs / 20, 5,000 to 200,000).")
    args = parser.parse_args(argv)
    filled = anyio.run(lambda: fill(args.database_url, args.runs, args.ids, chunk=args.chunk, progress=ShowProgress()))
    print(
        f"{filled.runs:,} runs ({filled.ids} ids) in {filled.seconds:.1f} s "
        f"(inserts {filled.insert_seconds:.1f} s); database {filled.database_bytes / 2**20:,.0f} MiB"
    )


if __name__ == "__main__":
    main()
