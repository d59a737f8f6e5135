"""``sagad run --pipeline module:attr``: a team's own steps run as they are; a bad one is refused at start."""

from __future__ import annotations

import textwrap
import zlib
from pathlib import Path

import pytest

from sagad.content.samples import Ending, sample_brief
from sagad.store.db import Database
from sagad.store.runs import RunStore
from tests.acceptance.test_cli_input import row_counts, sagad
from tests.chaos.fleet import sample
from tests.helpers import expected_rows, rows_of, wait_terminal
from tests.processes import REPO, Daemon

pytestmark = pytest.mark.slow

# Modules a team might point --pipeline at, each wrong in its own way.
BROKEN = {
    "missing module": ("", "no_such_pipelines:pipeline", "--pipeline no_such_pipelines:pipeline: no module named"),
    "no colon": ("", "teampipes", "--pipeline must be MODULE:ATTRIBUTE"),
    "missing attribute": ("pipeline = None\n", "teampipes:nothing", "teampipes has no attribute 'nothing'"),
    "not a pipeline": ("pipeline = 42\n", "teampipes:pipeline", "is a int, not a sagad Pipeline"),
    "import error": ("raise RuntimeError('no API key')\n", "teampipes:pipeline", "RuntimeError: no API key"),
    "a step that is not async": (
        """
        from sagad.content.pipeline import builtin_pipeline
        from sagad.domain.pipeline import Pipeline, StepSpec

        def strategy(ctx):
            return None

        steps = list(builtin_pipeline().steps)
        steps[1] = StepSpec(steps[1].step, strategy)
        pipeline = Pipeline(tuple(steps))
        """,
        "teampipes:pipeline",
        "step generate_strategy: its call must be an async function",
    ),
    "steps out of order": (
        """
        from sagad.content.pipeline import builtin_pipeline
        from sagad.domain.pipeline import Pipeline

        pipeline = lambda: Pipeline(tuple(reversed(builtin_pipeline().steps)))
        """,
        "teampipes:pipeline",
        "a pipeline declares the steps normalize_brief, generate_strategy, generate_draft, qc_evaluate, deliver",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_bad_pipeline_is_refused_at_start_with_one_line(case: str, database_url: str, tmp_path: Path) -> None:
    source, name, message = BROKEN[case]
    if source:
        (tmp_path / "teampipes.py").write_text(textwrap.dedent(source))
    result = sagad("run", "--pipeline", name, "--database-url", database_url, cwd=tmp_path, timeout=30)
    assert result.code == 1
    line = result.one_error_line()
    assert message in line, line
    assert row_counts(database_url)["workflow_runs"] == 0


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--simulate-latency", "fast"),
        ("--simulate-latency", "300:100"),
        ("--simulate-latency", "0:10"),
        ("--delivery-hosts", "http://example.com/"),
        ("--delivery-hosts", "example.com:port"),
        ("--undo-retry-seconds", "-1"),
    ],
)
def test_a_bad_step_option_exits_naming_the_option(option: str, value: str, database_url: str, tmp_path: Path) -> None:
    result = sagad("run", option, value, "--database-url", database_url, cwd=tmp_path, timeout=30)
    assert result.code != 0
    assert option in result.stderr
    assert "Traceback" not in result.stderr


def test_delivery_hosts_belong_to_the_built_in_pipeline(database_url: str, tmp_path: Path) -> None:
    result = sagad(
        "run",
        "--pipeline",
        "examples.pipeline:pipeline",
        "--delivery-hosts",
        "127.0.0.1",
        "--database-url",
        database_url,
        cwd=REPO,
        timeout=30,
    )
    assert "--delivery-hosts configures the built-in pipeline" in result.one_error_line()


@pytest.mark.anyio
async def test_the_example_pipeline_runs_a_mix_to_the_end(
    database_url: str, db: Database, runs: RunStore, tmp_path: Path
) -> None:
    endings = [Ending.COMPLETED] * 12 + [Ending.QC_FAIL, Ending.DELIVERY_FAIL] * 2
    submitted = {}
    for seed, ending in enumerate(endings):
        run_id, _ = await runs.submit(sample_brief(ending, seed))
        submitted[run_id] = (ending, sample_brief(ending, seed))
    daemon = Daemon(database_url, "team", tmp_path, "--pipeline", "examples.pipeline:pipeline").start()
    try:
        await daemon.metrics_url()
        statuses = await wait_terminal(db, submitted, seconds=60)
        retried = await sample(daemon, "sagad_step_retries_total", step="generate_strategy", reason="transient")
        assert await daemon.stop() == 0
    finally:
        daemon.ensure_stopped()
    for run_id, (ending, brief) in submitted.items():
        assert statuses[run_id] == ("completed" if ending is Ending.COMPLETED else "compensated")
        assert await rows_of(db, run_id) == await expected_rows(run_id, brief)
    # The stand-in planner tells the first call of one run in ten to try again.
    assert retried == sum(1 for run_id in submitted if zlib.crc32(f"planner/{run_id}".encode()) % 10 == 0)
    assert "pipeline examples.pipeline:pipeline" in daemon.log.read_text()
