"""The built-in steps: deterministic rows keyed by the run, each step fed by the one before, and the
business failures they decide."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import ForeignKeyConstraint

from sagad.content import delivery, draft, normalize, qc, strategy
from sagad.content.brief import BriefData
from sagad.content.pipeline import builtin_pipeline, walk
from sagad.content.samples import Ending, sample_brief
from sagad.domain.rows import Row, row_key
from sagad.domain.steps import BUSINESS_TABLES, Step
from sagad.errors import StepFailed
from sagad.store.schema import metadata

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RUN = uuid.UUID("6f1c0d6e-2f0a-4c55-9a38-6a0d6c1e8b01")
OTHER_RUN = uuid.UUID("0b7e54a1-90d4-4f0e-8f3e-2b0c6d4a7c12")
BUILTIN = builtin_pipeline()

pytestmark = pytest.mark.anyio


def example(name: str = "brief.json", **changes: Any) -> dict[str, Any]:
    brief: dict[str, Any] = json.loads((EXAMPLES / name).read_bytes())
    brief.update(changes)
    return brief


def data(raw: Any) -> BriefData:
    """The normalized brief, as later steps get it."""
    return cast(BriefData, normalize.normalized(raw).model_dump())


async def all_rows(run_id: uuid.UUID, raw: Any) -> dict[str, list[Row]]:
    """Every row a completed run of ``raw`` writes, per table."""
    walked = await walk(BUILTIN, run_id, raw)
    assert walked.failed_step is None, walked.reason
    rows: dict[str, list[Row]] = {}
    for result in walked.results:
        for table, table_rows in result.rows.items():
            rows.setdefault(table, []).extend(table_rows)
    return rows


def keys(rows: dict[str, list[Row]], table: str) -> set[tuple[uuid.UUID, uuid.UUID]]:
    return {(row["run_id"], row["id"]) for row in rows[table]}


async def test_every_step_writes_exactly_its_tables() -> None:
    walked = await walk(BUILTIN, RUN, example())
    assert walked.failed_step is None
    for step, result in zip(Step, walked.results, strict=True):
        assert set(result.rows) == set(step.tables), step


async def test_generated_rows_carry_only_columns_of_their_table_and_every_required_one() -> None:
    for table, rows in (await all_rows(RUN, example())).items():
        columns = metadata.tables[table].columns
        required = {c.name for c in columns if not c.nullable and c.server_default is None}
        for row in rows:
            assert set(row) <= set(columns.keys()), table
            assert required <= set(row), table


@pytest.mark.parametrize("name", ["brief.json", "brief_qc_fail.json", "brief_delivery_fail.json"])
async def test_steps_are_deterministic_for_the_same_run_and_brief(name: str) -> None:
    assert await walk(BUILTIN, RUN, example(name)) == await walk(BUILTIN, RUN, example(name))


async def test_each_step_follows_the_output_of_the_step_before() -> None:
    walked = await walk(BUILTIN, RUN, example())
    normalized, planned, written, verdict, receipt = (result.output for result in walked.results)
    assert planned == strategy.plan(normalized)
    assert written == draft.write(normalized, planned)
    assert written["body"].startswith(planned["positioning"])
    assert verdict == qc.evaluate(written)
    assert receipt == {"package_id": str(row_key(RUN, "package")), "delivered_to": None}
    assert [row["content"] for row in walked.results[2].rows["production_bundle_assets"]] == [
        asset["content"] for asset in written["assets"]
    ]


async def test_outputs_survive_json_as_a_resumed_run_reads_them() -> None:
    walked = await walk(BUILTIN, RUN, example())
    for result in walked.results:
        assert json.loads(json.dumps(result.output)) == result.output


async def test_every_key_differs_between_runs_of_the_same_brief() -> None:
    first, second = await all_rows(RUN, example()), await all_rows(OTHER_RUN, example())
    ids = {row["id"] for rows in first.values() for row in rows}
    other_ids = {row["id"] for rows in second.values() for row in rows}
    assert len(ids) == sum(len(rows) for rows in first.values()), "keys repeat within a run"
    assert not ids & other_ids


async def test_every_row_belongs_to_the_run() -> None:
    for table, rows in (await all_rows(RUN, example())).items():
        assert rows, table
        assert {row["run_id"] for row in rows} == {RUN}, table


async def test_every_foreign_key_points_at_a_row_generated_for_the_same_run() -> None:
    rows = await all_rows(RUN, example())
    checked = 0
    for name in BUSINESS_TABLES:
        for constraint in metadata.tables[name].constraints:
            if not isinstance(constraint, ForeignKeyConstraint) or constraint.referred_table.name == "workflow_runs":
                continue
            run_column, parent_column = constraint.column_keys
            assert run_column == "run_id"
            parents = keys(rows, constraint.referred_table.name)
            for row in rows[name]:
                assert (row["run_id"], row[parent_column]) in parents, (name, parent_column)
                checked += 1
    assert checked > 0


async def test_assets_hang_off_bundles_and_artifacts_off_assets() -> None:
    rows = await all_rows(RUN, example())
    bundle_ids = {row["id"] for row in rows["production_bundles"]}
    asset_ids = {row["id"] for row in rows["production_bundle_assets"]}
    assert {row["bundle_id"] for row in rows["production_bundle_assets"]} == bundle_ids
    assert {row["asset_id"] for row in rows["delivery_artifacts"]} == asset_ids
    assert len(rows["production_bundles"]) == 3  # one per channel
    assert len(rows["production_bundle_assets"]) == 3 * len(draft.ASSET_KINDS)


def test_normalized_collapses_whitespace_and_lower_cases_and_dedupes_channels_and_goals() -> None:
    raw = example(
        client="  Acme \t  Outdoor\n",
        product="Trailblazer   running shoes",
        tone="  Very   Friendly ",
        goals=["Awareness", " awareness", "Newsletter  Signups", "newsletter signups"],
        channels=["Email", " email ", "SOCIAL", "blog", "Blog"],
    )
    brief = normalize.normalized(raw)
    assert brief.client == "Acme Outdoor"
    assert brief.product == "Trailblazer running shoes"
    assert brief.tone == "very friendly"
    assert brief.goals == ["awareness", "newsletter signups"]
    assert brief.channels == ["email", "social", "blog"]


def test_normalized_keeps_the_first_order_of_channels() -> None:
    assert normalize.normalized(example(channels=["video", "email", "Video"])).channels == ["video", "email"]


def test_unknown_channel_fails_naming_the_field_and_the_channel() -> None:
    with pytest.raises(StepFailed) as failure:
        normalize.normalized(example(channels=["email", "Fax"]))
    message = str(failure.value)
    assert "field 'channels'" in message
    assert "'fax'" in message


def test_malformed_brief_fails_normalize_naming_the_field() -> None:
    with pytest.raises(StepFailed) as failure:
        normalize.normalized(example(word_limit="400"))
    assert "field 'word_limit'" in str(failure.value)


def test_blank_client_fails_normalize() -> None:
    with pytest.raises(StepFailed) as failure:
        normalize.normalized(example(client=" \t "))
    assert "field 'client'" in str(failure.value)


@pytest.mark.parametrize("field", ["product", "audience", "key_message", "tone"])
def test_blank_text_fields_fail_normalize(field: str) -> None:
    with pytest.raises(StepFailed) as failure:
        normalize.normalized(example(**{field: "   "}))
    assert f"field '{field}'" in str(failure.value)


def _draft_of(raw: Any) -> draft.Draft:
    brief = data(raw)
    return draft.write(brief, strategy.plan(brief))


def test_a_draft_with_a_banned_claim_fails_qc_with_score_threshold_and_claim() -> None:
    with pytest.raises(StepFailed) as failure:
        qc.evaluate(_draft_of(example(key_message="A risk-free trial on every trail")))
    message = str(failure.value)
    assert "0.57" in message  # 1 - 0.4 for the claim - 0.01 for each of the 3 channel notes
    assert f"{qc.THRESHOLD:.2f}" in message
    assert "'risk-free'" in message


def test_qc_failure_names_every_banned_claim() -> None:
    with pytest.raises(StepFailed) as failure:
        qc.evaluate(_draft_of(example("brief_qc_fail.json")))
    for claim in ("'guaranteed'", "'cure'", "'miracle'"):
        assert claim in str(failure.value)


def test_qc_reads_the_draft_not_the_brief() -> None:
    clean = _draft_of(example())
    tainted = {**clean, "assets": [*clean["assets"], {"channel": "blog", "kind": "extra", "content": "a miracle"}]}
    qc.evaluate(clean)
    with pytest.raises(StepFailed, match="'miracle'"):
        qc.evaluate(cast(draft.Draft, tainted))


def test_clean_draft_passes_qc_and_still_writes_its_issues() -> None:
    brief = example(key_message="Secure footing for curious runners")
    verdict = qc.evaluate(_draft_of(brief))
    rows = qc.rows(RUN, verdict)
    [result] = rows["qc_results"]
    assert result["passed"] is True
    assert result["score"] == 0.97
    assert result["score"] >= qc.THRESHOLD
    assert len(rows["qc_issues"]) == len(brief["channels"])
    assert {issue["severity"] for issue in rows["qc_issues"]} == {"info"}
    assert {issue["qc_result_id"] for issue in rows["qc_issues"]} == {result["id"]}


def _package(raw: Any) -> dict[str, Any]:
    brief = data(raw)
    written = draft.write(brief, strategy.plan(brief))
    return delivery.package(RUN, brief, written, qc.evaluate(written))


@pytest.mark.parametrize(
    ("target", "channels", "word_limit"),
    [
        ("social", ["email", "blog"], 501),
        ("email", ["email", "blog", "video"], 667),
        ("cms", ["blog", "email", "search", "social", "video"], 4001),
    ],
)
def test_delivery_over_the_target_limit_fails_naming_target_and_limit(
    target: str, channels: list[str], word_limit: int
) -> None:
    raw = example(channels=channels, word_limit=word_limit, delivery={"target": target, "destination": "x"})
    words = word_limit * len(channels)
    limit = delivery.WORD_LIMITS[target]
    assert words > limit
    with pytest.raises(StepFailed) as failure:
        _package(raw)
    message = str(failure.value)
    assert f"'{target}'" in message
    assert str(limit) in message
    assert str(words) in message


@pytest.mark.parametrize(
    ("target", "channels", "word_limit"),
    [
        ("social", ["email", "blog"], 500),
        ("email", ["email", "blog"], 1000),
        ("cms", ["email", "blog", "video", "search"], 5000),
    ],
)
def test_delivery_of_exactly_the_target_limit_passes(target: str, channels: list[str], word_limit: int) -> None:
    raw = example(channels=channels, word_limit=word_limit, delivery={"target": target, "destination": "x"})
    assert word_limit * len(channels) == delivery.WORD_LIMITS[target]
    rows = delivery.rows(RUN, _package(raw))
    [package] = rows["delivery_packages"]
    assert package["total_words"] == delivery.WORD_LIMITS[target]
    assert len(rows["delivery_artifacts"]) == len(channels) * len(draft.ASSET_KINDS)


def test_duplicate_channels_count_once_towards_the_delivery_limit() -> None:
    raw = example(channels=["email", "Email"], word_limit=1000, delivery={"target": "email", "destination": "x"})
    [package] = delivery.rows(RUN, _package(raw))["delivery_packages"]
    assert package["total_words"] == 1000


async def test_an_http_destination_outside_the_allowed_hosts_fails_delivery_without_a_request() -> None:
    raw = example(delivery={"target": "cms", "destination": "http://127.0.0.1:9/packages"})
    walked = await walk(BUILTIN, RUN, raw)
    assert walked.failed_step is Step.DELIVER
    assert walked.reason is not None
    assert "delivery to 127.0.0.1:9 is not allowed" in walked.reason


def test_the_idempotency_key_is_the_runs_package_and_differs_between_runs() -> None:
    assert delivery.idempotency_key(RUN) == delivery.idempotency_key(RUN)
    assert delivery.idempotency_key(RUN) != delivery.idempotency_key(OTHER_RUN)
    assert _package(example())["package_id"] in delivery.idempotency_key(RUN)


async def _failing_step(raw: Any) -> Step | None:
    return (await walk(BUILTIN, uuid.uuid4(), raw)).failed_step


@pytest.mark.parametrize(
    ("name", "failed_step"),
    [
        ("brief.json", None),
        ("brief_qc_fail.json", "qc_evaluate"),
        ("brief_delivery_fail.json", "deliver"),
    ],
)
async def test_example_briefs_end_as_documented(name: str, failed_step: str | None) -> None:
    assert await _failing_step(example(name)) == (None if failed_step is None else Step(failed_step))


@pytest.mark.parametrize("ending", list(Ending), ids=lambda ending: ending.value)
async def test_sample_briefs_end_as_built_for_every_seed(ending: Ending) -> None:
    wrong = {}
    for seed in range(500):
        step = await _failing_step(sample_brief(ending, seed))
        if step != ending.failed_step:
            wrong[seed] = step
    assert not wrong, f"seeds ending elsewhere than {ending.failed_step}: {wrong}"


def test_sample_briefs_are_deterministic_per_seed_and_vary_across_seeds() -> None:
    assert sample_brief(Ending.COMPLETED, 7) == sample_brief(Ending.COMPLETED, 7)
    assert len({json.dumps(sample_brief(Ending.COMPLETED, seed)) for seed in range(50)}) == 50
