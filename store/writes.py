"""Multi-row inserts and deletes generated from the declared tables (names only from the schema)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import orjson
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB

from sagad.domain.rows import Row
from sagad.store.schema import metadata

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


@cache
def insert_statement(table_name: str, first_param: int = 1, runs_from: str | None = None) -> str:
    """``INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING``: one array parameter per column.

    Parameters are numbered from ``first_param``; ``runs_from`` (a query returning run ids), when
    given, keeps only the rows of those runs. The conflict clause makes a re-run step a no-op:
    every key is derived from the run.
    """
    table = metadata.tables[table_name]
    columns = written_columns(table_name)
    params, selects = [], []
    for n, name in enumerate(columns, start=first_param):
        column_type = table.columns[name].type
        is_json = isinstance(column_type, JSONB)
        # JSON travels as text and is cast per element: asyncpg has no codec for jsonb[].
        params.append(f"${n}::{'TEXT' if is_json else column_type.compile(dialect=_DIALECT)}[]")
        selects.append(f"u.{name}::jsonb" if is_json else f"u.{name}")
    where = f" WHERE u.run_id IN ({runs_from})" if runs_from else ""
    return (
        f"INSERT INTO {table.name} ({', '.join(columns)}) "
        f"SELECT {', '.join(selects)} FROM unnest({', '.join(params)}) AS u({', '.join(columns)}){where} "
        "ON CONFLICT DO NOTHING"
    )


@cache
def written_columns(table_name: str) -> tuple[str, ...]:
    """The columns an insert fills: all but those the server fills (``created_at``)."""
    return tuple(c.name for c in metadata.tables[table_name].columns if c.server_default is None)


@cache
def _json_columns(table_name: str) -> frozenset[str]:
    return frozenset(c.name for c in metadata.tables[table_name].columns if isinstance(c.type, JSONB))


def column_arrays(table_name: str, rows: Sequence[Row]) -> list[list[object]]:
    """The rows as one list per written column, in ``written_columns`` order."""
    json_columns = _json_columns(table_name)
    arrays: list[list[object]] = []
    for name in written_columns(table_name):
        values = [row[name] for row in rows]
        if name in json_columns:
            values = [orjson.dumps(v).decode() for v in values]
        arrays.append(values)
    return arrays


@cache
def delete_statement(table_name: str, run_ids: str) -> str:
    """``DELETE ... WHERE run_id = ANY(<run_ids>) RETURNING run_id``: every row of those runs in one table.

    ``run_ids`` is an expression giving a uuid[] (a parameter, or a subquery of the statement).
    """
    table = metadata.tables[table_name]
    return f"DELETE FROM {table.name} WHERE run_id = ANY({run_ids}) RETURNING run_id"
