"""Multi-row inserts and deletes generated from the declared tables (names only from the schema)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache

import asyncpg
from sqlalchemy import Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB

from store.records import Row
from store.schema import metadata

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


def _written_columns(table: Table) -> list[str]:
    return [c.name for c in table.columns if c.server_default is None]


@cache
def insert_statement(table_name: str) -> tuple[str, tuple[str, ...]]:
    """``INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING``: one array per column.

    The conflict clause makes a re-run step a no-op: every key is derived from the run.
    """
    table = metadata.tables[table_name]
    columns = _written_columns(table)
    params, selects = [], []
    for n, name in enumerate(columns, start=1):
        column_type = table.columns[name].type
        is_json = isinstance(column_type, JSONB)
        # JSON travels as text and is cast per element: asyncpg has no codec for jsonb[].
        params.append(f"${n}::{'TEXT' if is_json else column_type.compile(dialect=_DIALECT)}[]")
        selects.append(f"u.{name}::jsonb" if is_json else f"u.{name}")
    statement = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) "
        f"SELECT {', '.join(selects)} FROM unnest({', '.join(params)}) AS u({', '.join(columns)}) "
        "ON CONFLICT DO NOTHING"
    )
    return statement, tuple(columns)


def _affected(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def insert_rows(conn: asyncpg.Connection, table_name: str, rows: Sequence[Row]) -> int:
    """Insert ``rows`` into the table in one statement; returns how many were new."""
    if not rows:
        return 0
    statement, columns = insert_statement(table_name)
    table = metadata.tables[table_name]
    arrays = []
    for name in columns:
        values = [row[name] for row in rows]
        if isinstance(table.columns[name].type, JSONB):
            values = [json.dumps(v) for v in values]
        arrays.append(values)
    return _affected(await conn.execute(statement, *arrays))


async def delete_runs(conn: asyncpg.Connection, table_name: str, run_ids: Sequence[object]) -> int:
    """Hard-delete every row of these runs from one table; returns how many went."""
    table = metadata.tables[table_name]
    return _affected(await conn.execute(f"DELETE FROM {table.name} WHERE run_id = ANY($1::uuid[])", run_ids))
