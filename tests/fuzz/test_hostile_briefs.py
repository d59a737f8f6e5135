"""Hostile briefs by the thousand: parse_brief only ever accepts or refuses, and the daemon never breaks.

Each test counts the inputs it tried and prints the count (shown even when pytest captures output).
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sagad.content.brief import MAX_BRIEF_BYTES, Brief, parse_brief
from sagad.content.pipeline import builtin_pipeline, walk
from sagad.domain.runs import RunId, RunStatus
from sagad.errors import InvalidBrief
from sagad.metrics import ACTORS
from sagad.store.audit import audit_database
from sagad.store.db import Database
from sagad.store.runs import RunStore
from sagad.supervisor import Supervisor
from tests.fuzz.strategies import (
    DEEPLY_NESTED,
    FIELDS,
    JSON_VALUES,
    LINE_BREAKS,
    OVERSIZED,
    SQL_PAYLOADS,
    STORABLE_CHARACTERS,
    VALID_BRIEFS,
    WRONG_TYPES,
    HugeInteger,
    encoded,
    mutated_briefs,
    with_value,
    without,
)
from tests.helpers import TABLES, expected_totals, rows_of, rows_per_table, running_daemon, shown, wait_terminal

FUZZ = settings(
    deadline=None,
    database=None,  # no .hypothesis/ folder in the work tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    print_blob=True,
)
PROBLEMS = (
    "brief is not valid JSON: ",
    "brief is not UTF-8 text: byte ",
    "brief is nested too deeply",
    "brief must be a JSON object, not ",
    "brief: ",  # an error of the whole object (pydantic's empty location)
)
OVER_SIZE = re.compile(rf"brief is \d+ bytes, over the {MAX_BRIEF_BYTES}-byte limit")
BUILTIN = builtin_pipeline()
VALID_EXAMPLE = json.loads((Path(__file__).parents[2] / "examples" / "brief.json").read_text())


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _keys(item)


def _strings(value: Any) -> Iterator[str]:
    """Every key and string value in a decoded JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _echoes_a_line_break(data: bytes) -> bool:
    """Whether the input has an object key holding a line break (refusals echo such keys: a known bug)."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return False
    return any(LINE_BREAKS.intersection(key) for key in _keys(value))


def judged(data: bytes) -> Brief | str:
    """parse_brief's verdict on ``data``: the brief, or the refusal's message, checked for what it promises.

    Any exception but InvalidBrief escapes, and fails the test with the input that raised it.
    """
    try:
        brief, raw = parse_brief(data)
    except InvalidBrief as refusal:
        message = str(refusal)
        names_something = message.startswith("field '") or message.startswith(PROBLEMS) or OVER_SIZE.fullmatch(message)
        assert names_something, f"the refusal names no field and no problem: {message!r}"
        if not _echoes_a_line_break(data):
            assert len(message.splitlines()) == 1, f"the refusal is not one line: {message!r}"
        return message
    assert isinstance(raw, dict)
    assert Brief.model_validate(raw) == brief
    # What submit stores must be storable: PostgreSQL's jsonb has no NUL and no lone surrogate.
    for text in _strings(raw):
        assert "\x00" not in text
        text.encode("utf-8")
    return brief


def failing_step(raw: Any) -> str | None:
    """The step at which a stored brief fails, or None when it completes: the daemon must agree.

    A step that raised anything but StepFailed would crash the walk, and the test with it.
    """
    walked = anyio.run(walk, BUILTIN, uuid.uuid4(), raw)
    return None if walked.failed_step is None else walked.failed_step.value


def _report(capsys: pytest.CaptureFixture[str], what: str, counts: Counter[str]) -> None:
    with capsys.disabled():
        details = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
        print(f"\n[fuzz] {what}: {counts.total()} inputs ({details})")


def test_random_bytes_are_accepted_or_refused_with_a_named_problem(capsys: pytest.CaptureFixture[str]) -> None:
    verdicts: Counter[str] = Counter()

    @settings(FUZZ, max_examples=2000)
    @given(
        st.one_of(
            st.binary(max_size=512),
            st.text(alphabet='{}[]",:0123456789.eE+-truefalsn \\u\t\n', max_size=200).map(str.encode),
            DEEPLY_NESTED,
            OVERSIZED,
        )
    )
    @example(b"")
    @example(b"\xef\xbb\xbf{}")  # a byte order mark
    @example(b'"\xed\xa0\x80"')  # a surrogate encoded as UTF-8 (CESU)
    def check(data: bytes) -> None:
        verdicts["accepted" if isinstance(judged(data), Brief) else "refused"] += 1

    check()
    _report(capsys, "random bytes", verdicts)
    assert verdicts["refused"] > 0


def test_random_json_values_are_accepted_or_refused_with_a_named_problem(capsys: pytest.CaptureFixture[str]) -> None:
    verdicts: Counter[str] = Counter()

    @settings(FUZZ, max_examples=800)
    @given(
        st.one_of(JSON_VALUES, st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=12)), JSON_VALUES)),
        st.booleans(),
    )
    @example({"client": "\ud800"}, True)
    @example({"\ud800": 1}, True)
    @example({"budget_eur": HugeInteger(5000)}, True)
    @example({"client": "'; DROP TABLE workflow_runs; --"}, False)
    def check(value: Any, ascii_only: bool) -> None:
        verdicts["accepted" if isinstance(judged(encoded(value, ascii_only)), Brief) else "refused"] += 1

    check()
    _report(capsys, "random JSON values", verdicts)


def test_hostile_but_valid_briefs_are_accepted_and_every_step_only_succeeds_or_fails(
    capsys: pytest.CaptureFixture[str],
) -> None:
    outcomes: Counter[str] = Counter()

    @settings(FUZZ, max_examples=600)
    @given(VALID_BRIEFS, st.booleans())
    def check(brief: dict[str, Any], ascii_only: bool) -> None:
        data = encoded(brief, ascii_only)
        verdict = judged(data)
        if len(data) > MAX_BRIEF_BYTES:
            assert isinstance(verdict, str)
            assert OVER_SIZE.fullmatch(verdict)
            outcomes["too large"] += 1
            return
        assert isinstance(verdict, Brief), verdict
        step = failing_step(brief)  # raises anything but StepFailed: a step would crash on it
        outcomes[f"fails at {step}" if step else "completes"] += 1

    check()
    _report(capsys, "hostile valid briefs", outcomes)
    assert outcomes["completes"] > 0


def test_a_valid_brief_with_one_refused_value_is_refused_naming_that_field(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: Counter[str] = Counter()

    @settings(FUZZ, max_examples=600)
    @given(st.sampled_from(sorted(WRONG_TYPES)).flatmap(lambda path: st.tuples(st.just(path), WRONG_TYPES[path])))
    def check(change: tuple[str, Any]) -> None:
        path, value = change
        verdict = judged(encoded(with_value(VALID_EXAMPLE, path, value), ascii_only=True))
        assert isinstance(verdict, str), f"{path} = {value!r} was accepted"
        seen[path] += 1
        # Unless the value broke the whole input (an integer of 5,000 digits, a string past the size limit):
        if not verdict.startswith("brief is not valid JSON: ") and not OVER_SIZE.fullmatch(verdict):
            assert verdict.startswith(f"field '{path}"), verdict

    check()
    _report(capsys, "one wrong field", seen)


@pytest.mark.parametrize("path", ["client", "goals", "budget_eur", "delivery", "delivery.target"])
def test_a_valid_brief_without_a_field_is_refused_naming_it(path: str) -> None:
    assert judged(encoded(without(VALID_EXAMPLE, path), ascii_only=True)) == f"field '{path}': Field required"


def test_mutated_briefs_are_accepted_or_refused_with_a_named_problem(capsys: pytest.CaptureFixture[str]) -> None:
    verdicts: Counter[str] = Counter()

    @settings(FUZZ, max_examples=600)
    @given(mutated_briefs())
    def check(data: bytes) -> None:
        verdicts["accepted" if isinstance(judged(data), Brief) else "refused"] += 1

    check()
    _report(capsys, "mutated briefs", verdicts)
    assert verdicts["refused"] > 0


def test_a_duplicated_key_is_decided_by_its_last_occurrence() -> None:
    body = json.dumps(VALID_EXAMPLE).encode()
    assert isinstance(judged(b'{"client": 5, ' + body[1:]), Brief)
    assert judged(body[:-1] + b', "client": 5}') == "field 'client': Input should be a valid string"


@pytest.mark.parametrize("key", ["a\nb", "x\r\ny", "tail\u2028"])
def test_an_unknown_field_whose_name_holds_a_line_break_is_refused_in_one_line(key: str) -> None:
    data = json.dumps({**VALID_EXAMPLE, key: 1}).encode()
    try:
        parse_brief(data)
    except InvalidBrief as refusal:
        assert len(str(refusal).splitlines()) == 1, repr(str(refusal))
    else:
        pytest.fail("an unknown field was accepted")


# ---------------------------------------------------------------------------------------------------------------
# End to end: a few hundred hostile briefs through a real daemon on a real database.


SUBMISSIONS = st.tuples(
    st.integers(0, 3).flatmap(
        lambda n: mutated_briefs() if n == 0 else st.builds(encoded, VALID_BRIEFS, ascii_only=st.booleans())
    ),
    st.one_of(
        st.none(),
        st.text(STORABLE_CHARACTERS, min_size=1, max_size=200),
        st.tuples(st.sampled_from(SQL_PAYLOADS), st.integers(0, 99)).map(lambda key: f"{key[0]} #{key[1]}"),
    ),
)


def _restarts(daemon: Supervisor) -> dict[str, float | None]:
    """Restarts per actor; None for an actor the daemon does not export (which the test refuses)."""
    registry = daemon.metrics.registry
    return {actor: registry.get_sample_value("sagad_actor_restarts_total", {"actor": actor}) for actor in ACTORS}


def test_hostile_briefs_submitted_as_sagad_submit_would_all_end_and_leave_the_database_consistent(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: Counter[str] = Counter()
    submitted: set[RunId] = set()

    with anyio.from_thread.start_blocking_portal() as portal:
        db = portal.call(lambda: Database.connect(database_url, max_size=10))
        runs = RunStore(db)
        try:
            with portal.wrap_async_context_manager(running_daemon(db, drain_seconds=5)) as daemon:

                @settings(FUZZ, max_examples=500)
                @given(SUBMISSIONS)
                def submit(submission: tuple[bytes, str | None]) -> None:
                    data, key = submission
                    try:
                        _, raw = parse_brief(data)
                    except InvalidBrief:
                        seen["refused at submit"] += 1
                        return
                    run_id, created = portal.call(runs.submit, raw, key)
                    seen["submitted" if created else "same key again"] += 1
                    submitted.add(run_id)

                submit()
                statuses = portal.call(lambda: wait_terminal(db, list(submitted), 90))
                restarts = _restarts(daemon)
            rows = portal.call(lambda: db.fetch("SELECT id, brief, failed_step, last_error FROM workflow_runs"))
            totals = portal.call(rows_per_table, db)
            expected = portal.call(expected_totals, db)
            audit = portal.call(audit_database, db)
        finally:
            portal.call(db.close)

    _report(capsys, "hostile briefs end to end", seen)
    _report(capsys, "runs the daemon ended", Counter(statuses.values()))
    assert set(statuses) == set(submitted)
    assert set(restarts.values()) == {0}, restarts
    for row in rows:
        step = failing_step(row["brief"])
        assert (statuses[row["id"]], row["failed_step"]) == ("compensated" if step else "completed", step), row
        if step:
            assert row["last_error"].startswith(f"{step}: "), row
    assert totals == expected
    assert audit.clean, audit.render()


# ---------------------------------------------------------------------------------------------------------------
# Runs stored by other means (bypassing submit) are judged by normalize_brief like any other.

STORED = {
    "an array": ("[]", "brief: Input should be a valid dictionary"),
    "a string": ('"x"', "brief: Input should be a valid dictionary"),
    "null": ("null", "brief: Input should be a valid dictionary"),
    "a number": ("1e300", "brief: Input should be a valid dictionary"),
    "an empty object": ("{}", "field 'client': Field required"),
    "a nested client": ('{"client": {"nested": 1}}', "field 'client': Input should be a valid string"),
    "a huge array": (json.dumps(list(range(200_000))), "brief: Input should be a valid dictionary"),
    "100,000 goals": (
        json.dumps({**VALID_EXAMPLE, "goals": ["x"] * 100_000}),
        "field 'goals': List should have at most 10 items",
    ),
    "5,000 unknown fields": (
        json.dumps({**VALID_EXAMPLE, **{f"extra{i}": i for i in range(5000)}}),
        "field 'extra9': Extra inputs are not permitted; and 4990 more",
    ),
    "a deep but decodable value": (
        json.dumps({**VALID_EXAMPLE, "client": json.loads("[" * 400 + "]" * 400)}),
        "field 'client': Input should be a valid string",
    ),
    "a budget as text": (json.dumps({**VALID_EXAMPLE, "budget_eur": "12000"}), "field 'budget_eur'"),
    "a budget of 300 digits": (
        json.dumps({**VALID_EXAMPLE, "budget_eur": 10**300}),
        "field 'budget_eur': Input should be less than or equal to 100000000",
    ),
    "an unknown channel": (json.dumps({**VALID_EXAMPLE, "channels": ["'; DROP TABLE x; --"]}), "unknown channel"),
}
UNDECODABLE = {
    "a budget of 5,000 digits": '{"budget_eur": 1e5000}',
    "5,000 nested arrays": '{"client": ' + "[" * 5000 + "]" * 5000 + "}",
}
"""Stored briefs that PostgreSQL keeps but Python's json cannot decode (digit limit, recursion limit)."""


async def _store_directly(db: Database, brief: str) -> RunId:
    run_id = RunId(uuid.uuid4())
    await db.fetch("INSERT INTO workflow_runs (id, brief) VALUES ($1, $2::text::jsonb)", run_id, brief)
    return run_id


async def _good_runs(runs: RunStore, n: int) -> list[RunId]:
    return [(await runs.submit(VALID_EXAMPLE))[0] for _ in range(n)]


@pytest.mark.anyio
async def test_hostile_briefs_stored_directly_are_compensated_at_normalize_naming_the_problem(
    db: Database, runs: RunStore
) -> None:
    good = await _good_runs(runs, 3)
    bad = {name: await _store_directly(db, text) for name, (text, _) in STORED.items()}
    good += await _good_runs(runs, 3)
    async with running_daemon(db) as daemon:
        statuses = await wait_terminal(db, [*good, *bad.values()], 60)
        restarts = _restarts(daemon)
    assert set(restarts.values()) == {0}, restarts
    assert {statuses[run] for run in good} == {"completed"}
    for name, run_id in bad.items():
        status = await shown(db, run_id)
        assert status is not None
        assert (name, status.status, status.failed_step) == (name, RunStatus.COMPENSATED, "normalize_brief")
        assert status.last_error is not None
        assert status.last_error.startswith("normalize_brief: invalid brief: "), (name, status.last_error[:300])
        assert STORED[name][1] in status.last_error, (name, status.last_error[:300])
        assert await rows_of(db, run_id) == dict.fromkeys(TABLES, 0)
    assert await rows_per_table(db) == await expected_totals(db)
    audit = await audit_database(db)
    assert audit.clean, audit.render()


@pytest.mark.parametrize("name", list(UNDECODABLE))
@pytest.mark.anyio
async def test_a_stored_brief_python_cannot_decode_is_compensated_and_other_runs_complete(
    name: str, db: Database, runs: RunStore
) -> None:
    poison = await _store_directly(db, UNDECODABLE[name])
    good = await _good_runs(runs, 3)
    async with running_daemon(db, lease_seconds=1, drain_seconds=1) as daemon:
        try:
            statuses = await wait_terminal(db, [poison, *good], 5)
        finally:
            restarts = _restarts(daemon)
    assert set(restarts.values()) == {0}, restarts
    assert statuses == {poison: "compensated", **dict.fromkeys(good, "completed")}
    status = await shown(db, poison)
    assert status is not None
    assert status.failed_step == "normalize_brief"
