"""``sagad demo``: the example briefs through a daemon, each outcome printed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import anyio
import typer

from sagad.cli.common import DatabaseUrl, apply_migrations, migrated_database, run_async
from sagad.content.brief import parse_brief
from sagad.domain.runs import RunId, WorkerId
from sagad.errors import InvalidBrief
from sagad.metrics import Metrics
from sagad.store.operations import OperationsStore
from sagad.store.runs import RunStore
from sagad.supervisor import Settings, Supervisor


async def _outcome(runs: OperationsStore, run_id: RunId) -> str:
    while True:
        status = await runs.show(run_id)
        if status is None:
            return "gone: the run is no longer in the database"
        if status.status.is_terminal:
            reason = f": {status.last_error}" if status.last_error else ""
            return f"{status.status.value}{reason}"
        await anyio.sleep(0.05)


def demo_command(
    examples: Annotated[Path, typer.Option(help="Folder of briefs (*.json).", exists=True, file_okay=False)] = Path(
        "examples"
    ),
    database_url: DatabaseUrl = None,
) -> None:
    """Migrate, start a daemon in this process, submit every brief in EXAMPLES, print how each ends."""
    url = apply_migrations(database_url)

    async def main() -> None:
        async with migrated_database(url) as db:
            runs = RunStore(db)
            stop = anyio.Event()
            supervisor = Supervisor(db, Settings(worker_id=WorkerId("demo"), poll_seconds=0.2), Metrics())
            async with anyio.create_task_group() as tg:
                await tg.start(supervisor.run, stop)
                for path in sorted(examples.glob("*.json")):
                    try:
                        _, raw = parse_brief(path.read_bytes())
                    except InvalidBrief as error:
                        print(f"{path.name:28} rejected at submit: {error}")
                        continue
                    run_id, _ = await runs.submit(raw)
                    print(f"{path.name:28} run {run_id} {await _outcome(OperationsStore(db), run_id)}")
                stop.set()

    run_async(main)
