"""The domain core: steps in order, the tables each owns, run ids ordered by time, the step contract's checks."""

from __future__ import annotations

import math
import time
import uuid

import pytest

from sagad.content.pipeline import builtin_pipeline
from sagad.domain.pipeline import Pipeline, RetryPolicy, StepContext, StepResult, StepSpec
from sagad.domain.rows import row_key
from sagad.domain.runs import RunId, new_run_id
from sagad.domain.steps import BUSINESS_TABLES, STEP_NAMES, Step, step_of_table
from sagad.store.schema import metadata, tables_of_step


def test_steps_are_ordered_and_indexed_as_declared() -> None:
    assert [step.value for step in Step] == list(STEP_NAMES)
    assert [step.index for step in Step] == list(range(len(Step)))
    assert [Step.at(n) for n in range(len(Step))] == list(Step)
    assert sorted(reversed(list(Step))) == list(Step)
    assert Step.DELIVER.is_last
    assert not Step.QC_EVALUATE.is_last
    assert str(Step.GENERATE_DRAFT) == "generate_draft"
    with pytest.raises(IndexError):
        Step.at(len(Step))


def test_the_schema_declares_exactly_the_tables_the_steps_own() -> None:
    declared = {name for name, table in metadata.tables.items() if "step" in table.info}
    assert declared == set(BUSINESS_TABLES)
    for step in Step:
        assert tuple(table.name for table in tables_of_step(step)) == step.tables
        assert all(step_of_table(table) is step for table in step.tables)
        assert all(metadata.tables[table].info["step"] is step for table in step.tables)


def test_run_ids_are_uuid7_and_ordered_by_time() -> None:
    first = new_run_id()
    time.sleep(0.002)
    later = [new_run_id() for _ in range(1000)]
    assert all(run.version == 7 and run.variant == uuid.RFC_4122 for run in [first, *later])
    assert all(first < run for run in later)
    assert len(set(later)) == len(later)
    millis = first.int >> 80
    assert abs(millis - time.time() * 1000) < 5_000


def test_row_keys_are_stable_per_run_and_entity_and_distinct_otherwise() -> None:
    run, other = new_run_id(), new_run_id()
    assert row_key(run, "draft") == row_key(run, "draft")
    assert row_key(run, "draft") != row_key(run, "strategy")
    assert row_key(run, "draft") != row_key(other, "draft")
    assert row_key(run, "draft") == uuid.UUID(int=row_key(run, "draft").int)  # a plain, whole UUID


async def _call(ctx: StepContext) -> StepResult:
    return StepResult()


def test_a_pipeline_must_declare_the_five_steps_in_order() -> None:
    specs = builtin_pipeline().steps
    with pytest.raises(ValueError, match="declares the steps normalize_brief, generate_strategy"):
        Pipeline(specs[:4])
    with pytest.raises(ValueError, match="this one declares deliver, qc_evaluate"):
        Pipeline(tuple(reversed(specs)))
    with pytest.raises(TypeError, match="must be a tuple of StepSpec"):
        Pipeline([*specs])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"call": lambda ctx: None}, "its call must be an async function"),
        ({"undo": lambda ctx: None}, "its undo must be an async function"),
        ({"timeout_seconds": 0}, "timeout_seconds must be > 0"),
        ({"concurrency": 0}, "concurrency must be >= 1"),
    ],
)
def test_a_step_spec_refuses_what_cannot_run(changes: dict[str, object], message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        StepSpec(**{"step": Step.QC_EVALUATE, "call": _call, **changes})  # type: ignore[arg-type]


def test_a_callable_object_with_an_async_call_is_a_step() -> None:
    class Service:
        async def __call__(self, ctx: StepContext) -> StepResult:
            return StepResult()

    assert StepSpec(Step.QC_EVALUATE, Service()).step is Step.QC_EVALUATE


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"attempts": 0}, "at least 1 attempt"),
        ({"first_wait_seconds": 5, "max_wait_seconds": 1}, "first_wait_seconds <= max_wait_seconds"),
        ({"jitter_seconds": -1}, "jitter cannot be negative"),
    ],
)
def test_a_retry_policy_refuses_what_cannot_be(policy: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**policy)  # type: ignore[arg-type]


def test_backoff_doubles_up_to_its_cap_plus_jitter() -> None:
    policy = RetryPolicy(attempts=10, first_wait_seconds=0.1, max_wait_seconds=1.0, jitter_seconds=0.5)
    assert [policy.wait(n, 0.0) for n in range(1, 6)] == [0.1, 0.2, 0.4, 0.8, 1.0]
    assert policy.wait(1, 0.5) == pytest.approx(0.35)


def test_the_step_contract_is_imported_from_sagad_itself() -> None:
    import sagad  # noqa: PLC0415

    assert set(sagad.__all__) >= {
        "Pipeline",
        "StepSpec",
        "StepContext",
        "StepResult",
        "UndoContext",
        "RetryPolicy",
        "Step",
        "StepFailed",
        "TransientStepError",
    }
    assert all(hasattr(sagad, name) for name in sagad.__all__)


def test_an_undo_rebuilds_the_key_its_call_gave_an_entity() -> None:
    import sagad  # noqa: PLC0415

    run_id = RunId(uuid.uuid4())
    call = sagad.StepContext(run_id, {}, {}, deadline=math.inf)
    undo = sagad.UndoContext(run_id, {}, None, "no", deadline=math.inf)
    assert undo.key("package") == call.key("package") != undo.key("other")
