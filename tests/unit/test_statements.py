"""A statement's arguments come in the order its SQL numbers them, by name, or not at all."""

from __future__ import annotations

import pytest

from sagad.domain.steps import Step
from sagad.store.statements import Statement
from sagad.store.steps import compensation_statement, step_statement


def test_arguments_are_ordered_by_their_names() -> None:
    statement = Statement("SELECT $2::int - $1::int", ("low", "high"))
    assert statement.args({"high": 5, "low": 2}) == (2, 5)


def test_a_missing_or_unknown_argument_is_named() -> None:
    statement = Statement("SELECT $1::int, $2::int", ("a", "b"))
    with pytest.raises(TypeError, match=r"missing \['b'\], unknown \['c'\]"):
        statement.args({"a": 1, "c": 3})


def test_sql_whose_parameters_do_not_match_its_names_is_refused_when_built() -> None:
    with pytest.raises(ValueError, match=r"numbers its parameters \[1, 3\] but names 2"):
        Statement("SELECT $1::int, $3::int", ("a", "b"))


@pytest.mark.parametrize("step", list(Step))
def test_every_step_commit_names_each_parameter_its_sql_numbers(step: Step) -> None:
    for with_failures in (False, True):
        statement = step_statement(step, with_failures=with_failures)
        assert statement.params[:3] == ("run_ids", "tokens", "worker")
        assert all(f"{table}." in " ".join(statement.params) for table in step.tables)
    compensation = compensation_statement(frozenset(step.tables))
    assert compensation.params[:4] == ("run_ids", "tokens", "worker", "step_names")
    assert all(name.startswith("undo_") for name in compensation.params[4:])
