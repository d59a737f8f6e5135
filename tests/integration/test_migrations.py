"""The alembic migrations: they round-trip, build exactly the declared schema, and keep its key rules."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Index, MetaData, Text, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from sagad.domain.steps import BUSINESS_TABLES
from sagad.store import migrate
from sagad.store.db import Database
from sagad.store.schema import metadata

pytestmark = pytest.mark.anyio

SAGAD_TABLES = set(metadata.tables)
BUSINESS = set(BUSINESS_TABLES)
# What alembic itself leaves behind after a downgrade to base: its version table and that table's key.
ALEMBIC_RELATIONS = {"alembic_version", "alembic_version_pkc"}


async def fetch(url: str, query: str, *args: Any) -> list[dict[str, Any]]:
    db = await Database.connect(url, max_size=1)
    try:
        return [dict(row) for row in await db.fetch(query, *args)]
    finally:
        await db.close()


async def public_relations(url: str) -> set[str]:
    """Tables, indexes, sequences and views in the public schema."""
    rows = await fetch(url, "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace")
    return {row["relname"] for row in rows}


async def public_tables(url: str) -> set[str]:
    rows = await fetch(
        url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    return {row["table_name"] for row in rows}


async def upgrade(url: str, revision: str = "head") -> None:
    await anyio.to_thread.run_sync(migrate.upgrade, url, revision)


async def downgrade(url: str, revision: str) -> None:
    await anyio.to_thread.run_sync(migrate.downgrade, url, revision)


def _diff(connection: Connection, target: MetaData) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True, "compare_server_default": True})
    return list(compare_metadata(context, target))


async def schema_drift(url: str, target: MetaData = metadata) -> list[Any]:
    """What alembic autogenerate would change to make the database match ``target`` (empty: no drift)."""
    engine = create_async_engine(migrate.sqlalchemy_url(url), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_diff, target)
    finally:
        await engine.dispose()


def copy_of_schema() -> MetaData:
    copy = MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.sorted_tables:
        table.to_metadata(copy)
    return copy


async def test_upgrade_downgrade_to_base_and_upgrade_again_round_trips(empty_database_url: str) -> None:
    url = empty_database_url
    await upgrade(url)
    assert await public_tables(url) == SAGAD_TABLES | {"alembic_version"}
    assert await fetch(url, "SELECT version_num FROM alembic_version") == [{"version_num": migrate.head_revision()}]

    await downgrade(url, "base")
    assert await public_relations(url) <= ALEMBIC_RELATIONS, "the downgrade left sagad tables or indexes behind"
    assert await fetch(url, "SELECT version_num FROM alembic_version") == []

    await upgrade(url)
    assert await public_tables(url) == SAGAD_TABLES | {"alembic_version"}
    assert await schema_drift(url) == []


async def test_upgrade_twice_changes_nothing(empty_database_url: str) -> None:
    await upgrade(empty_database_url)
    before = await public_relations(empty_database_url)
    await upgrade(empty_database_url)
    assert await public_relations(empty_database_url) == before


async def test_migrated_schema_matches_the_declared_schema(empty_database_url: str) -> None:
    await upgrade(empty_database_url)
    assert await schema_drift(empty_database_url) == []


async def test_drift_check_reports_a_column_the_migrations_lack(database_url: str) -> None:
    changed = copy_of_schema()
    changed.tables["qc_issues"].append_column(Column("reviewer_note", Text, nullable=True))
    drift = await schema_drift(database_url, changed)
    assert [(d[0], d[2], d[3].name) for d in drift] == [("add_column", "qc_issues", "reviewer_note")]


async def test_drift_check_reports_an_index_the_migrations_lack(database_url: str) -> None:
    changed = copy_of_schema()
    Index("ix_qc_issues_severity", changed.tables["qc_issues"].c.severity)
    drift = await schema_drift(database_url, changed)
    assert [(d[0], d[1].name) for d in drift] == [("add_index", "ix_qc_issues_severity")]


async def test_drift_check_reports_a_table_the_declared_schema_lacks(database_url: str) -> None:
    changed = copy_of_schema()
    changed.remove(changed.tables["delivery_artifacts"])
    drift = await schema_drift(database_url, changed)
    assert ("remove_table", "delivery_artifacts") in [(d[0], d[1].name) for d in drift if d[0] == "remove_table"]


async def test_no_foreign_key_cascades_deletes_or_updates(database_url: str) -> None:
    rows = await fetch(
        database_url,
        "SELECT conrelid::regclass::text AS tbl, conname, confdeltype::text, confupdtype::text FROM pg_constraint "
        "WHERE contype = 'f' AND connamespace = 'public'::regnamespace",
    )
    declared = sum(len(table.foreign_key_constraints) for table in metadata.tables.values())
    assert len(rows) == declared > 0
    acting = [row for row in rows if row["confdeltype"] != "a" or row["confupdtype"] != "a"]
    assert acting == [], "foreign keys must be NO ACTION: compensation deletes children itself"


async def test_every_foreign_key_leads_some_index(database_url: str) -> None:
    foreign_keys = await fetch(
        database_url,
        "SELECT conrelid, conrelid::regclass::text AS tbl, conname, conkey::int2[] AS columns FROM pg_constraint "
        "WHERE contype = 'f' AND connamespace = 'public'::regnamespace",
    )
    indexes = await fetch(
        database_url,
        "SELECT i.indrelid, i.indkey::int2[] AS columns FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
        "WHERE c.relnamespace = 'public'::regnamespace AND i.indpred IS NULL",
    )
    assert foreign_keys
    uncovered = [
        (fk["tbl"], fk["conname"])
        for fk in foreign_keys
        if not any(
            index["indrelid"] == fk["conrelid"] and set(index["columns"][: len(fk["columns"])]) == set(fk["columns"])
            for index in indexes
        )
    ]
    assert uncovered == [], "a foreign key without an index makes every parent delete scan the child"


async def test_every_business_table_has_primary_key_run_id_then_id(database_url: str) -> None:
    rows = await fetch(
        database_url,
        "SELECT tc.table_name, array_agg(k.column_name::text ORDER BY k.ordinal_position) AS columns "
        "FROM information_schema.table_constraints tc "
        "JOIN information_schema.key_column_usage k "
        "  ON k.constraint_name = tc.constraint_name AND k.table_schema = tc.table_schema "
        "WHERE tc.table_schema = 'public' AND tc.constraint_type = 'PRIMARY KEY' "
        "GROUP BY tc.table_name",
    )
    keys = {row["table_name"]: row["columns"] for row in rows}
    assert {table for table in keys if table in BUSINESS} == BUSINESS
    assert {table: keys[table] for table in BUSINESS} == {table: ["run_id", "id"] for table in BUSINESS}


async def test_business_foreign_keys_lead_with_run_id(database_url: str) -> None:
    rows = await fetch(
        database_url,
        "SELECT c.conrelid::regclass::text AS tbl, c.confrelid::regclass::text AS parent, "
        "  array(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, o) "
        "        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.o) AS columns, "
        "  array(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, o) "
        "        JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.o) AS parent_columns "
        "FROM pg_constraint c WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace",
    )
    by_table: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_table.setdefault(row["tbl"], []).append(row)
    for table in BUSINESS:
        to_runs = [row for row in by_table[table] if row["parent"] == "workflow_runs"]
        # Only the root references the run; the others reach it through their parents' keys.
        expected = [(["run_id"], ["id"])] if table == "onboarding_brief" else []
        assert [(row["columns"], row["parent_columns"]) for row in to_runs] == expected, table
        assert table == "onboarding_brief" or by_table[table], f"{table} has no parent"
        for row in by_table[table]:
            if row["parent"] != "workflow_runs":
                assert row["parent"] in BUSINESS
                assert row["columns"][0] == "run_id", (table, row)
                assert row["parent_columns"] == ["run_id", "id"], (table, row)
