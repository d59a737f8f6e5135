"""The content generators: deterministic rows keyed by the run, and the business failures they decide."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import ForeignKeyConstraint

from sagad.content import delivery, draft, normalize, qc, strategy
from sagad.content.brief import Brief
from sagad.content.samples import Ending, sample_brief
from sagad.domain.rows import Row
from sagad.domain.steps import BUSINESS_TABLES, Step
from sagad.errors import StepFailed
from sagad.store.schema import metadata, tables_of_step

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RUN = uuid.UUID("6f1c0d6e-2f0a-4c55-9a38-6a0d6c1e8b01")
OTHER_RUN = uuid.UUID("0b7e54a1-90d4-4f0e-8f3e-2b0c6d4a7c12")

Generator = Callable[[uuid.UUID, Brief], dict[str, list[Row]]]
GENERATORS: dict[Step, Generator] = {
    Step.NORMALIZE_BRIEF: normalize.rows,
    Step.GENERATE_STRATEGY: strategy.rows,
    Step.GENERATE_DRAFT: draft.rows,
    Step.QC_EVALUATE: qc.rows,
    Step.DELIVER: delivery.rows,
}


def example(name: str = "brief.json", **changes: Any) -> dict[str, Any]:
    brief: dict[str, Any] = json.loads((EXAMPLES / name).read_bytes())
    brief.update(changes)
    return brief


def all_rows(run_id: uuid.UUID, raw: Any) -> dict[str, list[Row]]:
    """Every row a completed run of ``raw`` writes, per table."""
    brief = normalize.normalized(raw)
    rows: dict[str, list[Row]] = {}
    for step in Step:
        for table, table_rows in GENERATORS[step](run_id, brief).items():
            rows.setdefault(table, []).extend(table_rows)
    return rows


def keys(rows: dict[str, list[Row]], table: str) -> set[tuple[uuid.UUID, uuid.UUID]]:
    return {(row["run_id"], row["id"]) for row in rows[table]}


def step_that_fails(raw: Any) -> Step | None:
    """The first step that raises StepFailed for ``raw``, or None when every step passes."""
    try:
        brief = normalize.normalized(raw)
        normalize.rows(RUN, brief)
    except StepFailed:
        return Step.NORMALIZE_BRIEF
    for step in tuple(Step)[1:]:
        try:
            GENERATORS[step](RUN, brief)
        except StepFailed:
            return step
    return None


def test_every_step_has_a_generator_writing_exactly_its_tables() -> None:
    brief = normalize.normalized(example())
    for step in Step:
        written = set(GENERATORS[step](RUN, brief))
        assert written == {t.name for t in tables_of_step(step)}, step


def test_generated_rows_carry_only_columns_of_their_table_and_every_required_one() -> None:
    for table, rows in all_rows(RUN, example()).items():
        columns = metadata.tables[table].columns
        required = {c.name for c in columns if not c.nullable and c.server_default is None}
        for row in rows:
            assert set(row) <= set(columns.keys()), table
            assert required <= set(row), table


@pytest.mark.parametrize("name", ["brief.json", "brief_qc_fail.json", "brief_delivery_fail.json"])
def test_generators_are_deterministic_for_the_same_run_and_brief(name: str) -> None:
    brief = example(name)
    for step in Step:
        try:
            first = GENERATORS[step](RUN, normalize.normalized(brief))
        except StepFailed as failure:
            with pytest.raises(StepFailed) as again:
                GENERATORS[step](RUN, normalize.normalized(brief))
            assert str(again.value) == str(failure)
            break
        assert GENERATORS[step](RUN, normalize.normalized(brief)) == first


def test_every_key_differs_between_runs_of_the_same_brief() -> None:
    first, second = all_rows(RUN, example()), all_rows(OTHER_RUN, example())
    ids = {row["id"] for rows in first.values() for row in rows}
    other_ids = {row["id"] for rows in second.values() for row in rows}
    assert len(ids) == sum(len(rows) for rows in first.values()), "keys repeat within a run"
    assert not ids & other_ids


def test_every_row_belongs_to_the_run() -> None:
    for table, rows in all_rows(RUN, example()).items():
        assert rows, table
        assert {row["run_id"] for row in rows} == {RUN}, table


def test_every_foreign_key_points_at_a_row_generated_for_the_same_run() -> None:
    rows = all_rows(RUN, example())
    checked = 0
    for table in map(metadata.tables.get, BUSINESS_TABLES):
        assert table is not None
        for constraint in table.constraints:
            if not isinstance(constraint, ForeignKeyConstraint) or constraint.referred_table.name == "workflow_runs":
                continue
            run_column, parent_column = constraint.column_keys
            assert run_column == "run_id"
            parents = keys(rows, constraint.referred_table.name)
            for row in rows[table.name]:
                assert (row["run_id"], row[parent_column]) in parents, (table.name, parent_column)
                checked += 1
    assert checked > 0


def test_assets_hang_off_bundles_and_artifacts_off_assets() -> None:
    rows = all_rows(RUN, example())
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


def test_brief_with_a_banned_claim_fails_qc_with_score_threshold_and_claim() -> None:
    brief = normalize.normalized(example(key_message="A risk-free trial on every trail"))
    with pytest.raises(StepFailed) as failure:
        qc.rows(RUN, brief)
    message = str(failure.value)
    assert "0.57" in message  # 1 - 0.4 for the claim - 0.01 for each of the 3 channel notes
    assert f"{qc.THRESHOLD:.2f}" in message
    assert "'risk-free'" in message


def test_qc_failure_names_every_banned_claim() -> None:
    brief = normalize.normalized(example("brief_qc_fail.json"))
    with pytest.raises(StepFailed) as failure:
        qc.rows(RUN, brief)
    for claim in ("'guaranteed'", "'cure'", "'miracle'"):
        assert claim in str(failure.value)


def test_clean_brief_passes_qc_and_still_writes_its_issues() -> None:
    brief = normalize.normalized(example(key_message="Secure footing for curious runners"))
    rows = qc.rows(RUN, brief)
    [result] = rows["qc_results"]
    assert result["passed"] is True
    assert result["score"] == 0.97
    assert result["score"] >= qc.THRESHOLD
    assert len(rows["qc_issues"]) == len(brief.channels)
    assert {issue["severity"] for issue in rows["qc_issues"]} == {"info"}
    assert {issue["qc_result_id"] for issue in rows["qc_issues"]} == {result["id"]}


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
        delivery.rows(RUN, normalize.normalized(raw))
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
    rows = delivery.rows(RUN, normalize.normalized(raw))
    [package] = rows["delivery_packages"]
    assert package["total_words"] == delivery.WORD_LIMITS[target]
    assert len(rows["delivery_artifacts"]) == len(channels) * len(draft.ASSET_KINDS)


def test_duplicate_channels_count_once_towards_the_delivery_limit() -> None:
    raw = example(channels=["email", "Email"], word_limit=1000, delivery={"target": "email", "destination": "x"})
    [package] = delivery.rows(RUN, normalize.normalized(raw))["delivery_packages"]
    assert package["total_words"] == 1000


@pytest.mark.parametrize(
    ("name", "failed_step"),
    [
        ("brief.json", None),
        ("brief_qc_fail.json", "qc_evaluate"),
        ("brief_delivery_fail.json", "deliver"),
    ],
)
def test_example_briefs_end_as_documented(name: str, failed_step: str | None) -> None:
    assert step_that_fails(example(name)) == (None if failed_step is None else Step(failed_step))


@pytest.mark.parametrize("outcome", list(Ending), ids=lambda outcome: outcome.value)
def test_sample_briefs_end_as_their_outcome_for_every_seed(outcome: Ending) -> None:
    wrong = {
        seed: step
        for seed in range(500)
        if (step := step_that_fails(sample_brief(outcome, seed))) != outcome.failed_step
    }
    assert not wrong, f"seeds ending elsewhere than {outcome.failed_step}: {wrong}"


def test_sample_briefs_are_deterministic_per_seed_and_vary_across_seeds() -> None:
    assert sample_brief(Ending.COMPLETED, 7) == sample_brief(Ending.COMPLETED, 7)
    assert len({json.dumps(sample_brief(Ending.COMPLETED, seed)) for seed in range(50)}) == 50
