"""SQL is composed only from the schema and fixed text; every value travels as a bound parameter.

The static half reads store/ with ``ast``: what each ``execute``/``fetch`` call sends, and every value
interpolated into the SQL text on the way. The live half sends SQL injection payloads in every field
of a brief and checks that they come back verbatim and that nothing else changed.
"""

from __future__ import annotations

import ast
import inspect
import json
import math
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import anyio
import pytest

from sagad.content.normalize import normalized
from sagad.domain.db_operations import Operation
from sagad.domain.runs import STATUS_NAMES, RunId, WorkerId
from sagad.domain.steps import BUSINESS_TABLES, STEP_NAMES, Step
from sagad.errors import StepFailed
from sagad.store import audit, fence, liveness, runs, steps, writes
from sagad.store.db import Database
from sagad.store.limits import SessionLimits
from sagad.store.pooler import ServerFacts, TransactionLimits
from sagad.store.schema import metadata
from sagad.store.steps import StepStore
from tests.fuzz.strategies import SQL_PAYLOADS
from tests.helpers import TABLES, expected_rows, rows_of, running_daemon, wait_terminal
from tests.security.cli import REPO, sagad

STORE = REPO / "store"
SENDS_SQL = frozenset({"execute", "executemany", "fetch", "fetchrow", "fetchval"})
BUILDERS = frozenset(
    {
        "insert_statement",
        "step_statement",
        "compensation_statement",
        "_compensation_without_history",
        "delete_statement",
        "list_query",
        "cancel_page_query",
    }
)
"""Functions in store/ that return a whole statement: their f-strings are checked below."""
FRAGMENTS = frozenset({"locked_leases", "skipped_leases", "_checks", "_matching", "placeholder"})
"""Functions in store/ that return pieces of statements: their f-strings are checked below too."""
PASS_THROUGH = frozenset({("db.py", "fetch", "query"), ("db.py", "_limited", "begin")})
"""(module, function, name): a wrapper handing its caller's SQL on, whose callers are checked; or, for
``_limited``'s ``begin``, ``TransactionLimits.statement``, whose whole shape is checked below."""
LITERAL_ONLY_PARAMETERS = {
    "locked_leases": ("where", "extra_columns", "extra_aliases"),
    "skipped_leases": ("where",),
    "insert_statement": ("runs_from",),
    "delete_statement": ("run_ids",),
}
SPLICING: dict[str, Callable[..., str]] = {
    "locked_leases": fence.locked_leases,
    "skipped_leases": fence.skipped_leases,
    "insert_statement": writes.insert_statement,
    "delete_statement": writes.delete_statement,
}
"""Parameters spliced into SQL text: every call in store/ must pass a string literal (or a module constant
holding one, or nothing) for them."""

SAFE_INTERPOLATIONS = {
    ("_checks", "table"): "a table name of the domain (BUSINESS_TABLES), each declared in store.schema",
    ("_checks", "step"): "a Step, in an invariant's label",
    ("_checks", "step.index"): "an int: the position of the table's step",
    ("audit_database", "query"): "a statement built by _checks(), whose f-strings are checked here",
    ("audit_database", "_EXAMPLES"): "an int constant",
    ("locked_leases", "extra_columns"): "a literal at every call (checked below)",
    ("locked_leases", "extra_aliases"): "a literal at every call (checked below)",
    ("locked_leases", "where"): "a literal at every call (checked below)",
    ("locked_leases", "' SKIP LOCKED' if skip_locked else ''"): "one of two literals",
    (
        "<module>",
        "locked_leases(\"r.status IN ('running', 'compensating')\", skip_locked=True)",
    ): "locked_leases(literals)",
    ("step_statement", "_ALREADY_PAST_STEP"): "a module constant without interpolation",
    ("step_statement", "_KEEP_OUTPUTS"): "a module constant without interpolation",
    ("step_statement", "skipped_leases(_STEP_FENCE)"): "skipped_leases(a literal constant)",
    ("skipped_leases", "where"): "a literal at every call (checked below)",
    ("compensation_statement", "_FINISH_COMPENSATION"): "a module constant without interpolation",
    ("compensation_statement", "_ALREADY_COMPENSATED"): "a module constant without interpolation",
    ("compensation_statement", "_DELETE_OUTPUTS"): "a module constant without interpolation",
    ("compensation_statement", "_KEEP_COMMITS"): "a module constant without interpolation",
    ("compensation_statement", "_KEEP_UNDOS"): "a module constant without interpolation",
    ("compensation_statement", "_KEEP_DELETIONS"): "a module constant without interpolation",
    ("compensation_statement", "' UNION ALL '.join(deleted)"): "selects of the delete CTEs, named from the schema",
    ("compensation_statement", "per_run"): "the union of the delete CTEs above, or a constant",
    ("step_statement", "_KEEP_FAILED_CALLS"): "a module constant without interpolation",
    ("step_statement", "_KEEP_OUTPUTS_ONLY"): "a module constant without interpolation",
    ("_compensation_without_history", "_FINISH_COMPENSATION"): "a module constant without interpolation",
    ("_compensation_without_history", "_ALREADY_COMPENSATED"): "a module constant without interpolation",
    ("_compensation_without_history", "_DELETE_OUTPUTS"): "a module constant without interpolation",
    ("_compensation_without_history", "skipped_leases(_COMPENSATION_FENCE)"): "skipped_leases(a literal constant)",
    ("_compensation_without_history", "', '.join(parts)"): "locked_leases(literals), constants, delete_statement()",
    ("_compensation_without_history", "' UNION ALL '.join(counts)"): "counts of the delete CTEs, named from the schema",
    ("_compensation_without_history", "table"): "a table of the schema (children_first)",
    (
        "_compensation_without_history",
        "delete_statement(table, _DOOMED)",
    ): "delete_statement(a schema table, a constant)",
    ("compensation_statement", "skipped_leases(_COMPENSATION_FENCE)"): "skipped_leases(a literal constant)",
    ("compensation_statement", "', '.join(parts)"): "locked_leases(literals), constants and delete_statement() outputs",
    ("compensation_statement", "table"): "a table of the schema (children_first and step_outputs)",
    ("compensation_statement", "delete_statement(table, _DOOMED)"): "delete_statement(a schema table, a constant)",
    ("delete_statement", "table.name"): "metadata.tables[table_name]: KeyError for any name not in the schema",
    ("delete_statement", "run_ids"): "a literal at every call (checked below)",
    ("step_statement", "', '.join(parts)"): "locked_leases(literals), _ADVANCE and insert_statement() outputs",
    ("step_statement", "_ADVANCE"): "a module constant without interpolation",
    ("step_statement", "table.name"): "a Table of store.schema (tables_of_step)",
    ("step_statement", "insert"): "an insert_statement() output",
    ("step_statement", "column"): "a parameter's name (table.column) for Statement.params, never SQL text",
    ("insert_statement", "table.name"): "metadata.tables[table_name]: KeyError for any name not in the schema",
    ("insert_statement", "', '.join(columns)"): "column names of that table (written_columns)",
    ("insert_statement", "', '.join(selects)"): "u.<column> for those columns",
    ("insert_statement", "', '.join(params)"): "$<n>::<type>[]: n an int, type compiled from the schema",
    ("insert_statement", "n"): "an int: a parameter number",
    ("insert_statement", "'TEXT' if is_json else column_type.compile(dialect=_DIALECT)"): "a schema column's type",
    ("insert_statement", "name"): "a column name of the table",
    ("insert_statement", "where"): "a clause around runs_from",
    ("insert_statement", "runs_from"): "a literal at every call (checked below)",
    ("<module>", "_CANCELLED"): "a module constant without interpolation",
    ("<module>", "_NAMED"): "a module constant without interpolation",
    ("<module>", "_CANCEL_LOCKED"): "a module constant without interpolation",
    ("<module>", "_CANCEL_CHANGES"): "a module constant without interpolation",
    ("<module>", "_RUN_COLUMNS"): "a module constant without interpolation",
    ("list_query", "_RUN_COLUMNS"): "a module constant without interpolation",
    ("placeholder", "len(self.values)"): "an int: a parameter number",
    ("placeholder", "cast"): "a type name, a literal at every call of placeholder()",
    ("_matching", "p"): "a placeholder ($n::type) from placeholder(): the value itself is bound",
    ("_matching", "q"): "a placeholder ($n::type) from placeholder(): the value itself is bound",
    ("list_query", "p"): "a placeholder ($n::type) from placeholder(): the value itself is bound",
    ("list_query", "condition"): "_matching(): ' AND '.join of its own f-strings and literals",
    ("cancel_page_query", "p"): "a placeholder ($n::type) from placeholder(): the value itself is bound",
    ("cancel_page_query", "condition"): "_matching(): ' AND '.join of its own f-strings and literals",
    ("cancel_page_query", "chosen"): "this function's own f-string of condition and p",
    ("cancel_page_query", "_CANCEL_LOCKED"): "a module constant without interpolation",
    ("cancel_page_query", "_CANCEL_CHANGES"): "a module constant without interpolation",
}
"""(function, expression): every value store/ splices into SQL text, and why it cannot come from outside."""

ALLOWED_SQL_LITERALS = {
    *STATUS_NAMES,
    *STEP_NAMES,
    *metadata.tables,
    *("owned", "skipped", "run"),
    "committed",  # the history event a compensation keeps for each step its run committed
    "call failed",  # the history event of a failed call's measure (attempts, time, retry reasons)
    "undo",  # the history event of what a step's undo came to, kept by the compensation
    "deleted",  # the history event of the rows a compensation deleted per table of a run
    *("", " (", ")", " held by ", " since ", " step ", "alembic_version"),
    *("status", "{}"),  # the column whose statistics estimate finished runs, and an empty JSON object
    # store/liveness.py and store/db.py: session states, wait events, lock modes and a setting
    *("active", "ClientRead", "ClientWrite", "RowShareLock", "RowExclusiveLock", "transaction_timeout"),
}
"""The only quoted literals allowed in SQL text: statuses, steps, tables, the kinds of rows a commit returns,
fixed punctuation of audit reports, and fixed names of the server's catalogs and settings."""


@dataclass(frozen=True)
class Module:
    name: str
    tree: ast.Module

    @property
    def constants(self) -> dict[str, ast.expr]:
        """Module-level ``NAME = <str or f-string>`` assignments, and ``NAME = Statement(<str or f-string>, ...)``."""
        found: dict[str, ast.expr] = {}
        for node in self.tree.body:
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and (
                    isinstance(node.value, ast.JoinedStr)
                    or _is_text(node.value)
                    or _statement_constant(node.value) is not None
                )
            ):
                found[node.targets[0].id] = node.value
        return found

    def functions(self) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield node


def _is_text(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _store_modules() -> list[Module]:
    return [Module(path.name, ast.parse(path.read_text(), str(path))) for path in sorted(STORE.glob("*.py"))]


def _calls(tree: ast.AST) -> Iterator[tuple[ast.Call, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            yield node, name


Scope = ast.FunctionDef | ast.AsyncFunctionDef


def _sql_call_sites(modules: list[Module]) -> Iterator[tuple[Module, Scope, ast.Call]]:
    for module in modules:
        for function in module.functions():
            for call, name in _calls(function):
                if name in SENDS_SQL and isinstance(call.func, ast.Attribute) and call.args:
                    yield module, function, call


def _where(module: Module, node: ast.AST) -> str:
    return f"store/{module.name}:{getattr(node, 'lineno', '?')}: {ast.unparse(node)[:120]}"


def unchecked_statements(modules: list[Module]) -> tuple[int, list[str]]:
    """How many execute/fetch calls there are, and those sending SQL from a source this file does not check."""
    unexplained = []
    sites = 0
    for module, function, call in _sql_call_sites(modules):
        sites += 1
        sql = call.args[0]
        if _is_text(sql) or isinstance(sql, ast.JoinedStr):  # f-strings: see unexplained_interpolations
            continue
        if isinstance(sql, ast.Name) and sql.id in module.constants:
            continue
        if isinstance(sql, ast.Call) and isinstance(sql.func, ast.Name) and sql.func.id in BUILDERS:
            continue
        if isinstance(sql, ast.Name) and (module.name, function.name, sql.id) in PASS_THROUGH:
            continue
        if isinstance(sql, ast.Attribute) and sql.attr == "sql" and _a_statement(sql.value, module, function):
            continue
        unexplained.append(_where(module, call))
    return sites, unexplained


def _builder_call(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in BUILDERS


def _statement_constant(value: ast.expr) -> ast.JoinedStr | ast.Constant | None:
    """The SQL of ``Statement(<sql>, ...)`` held by a module constant."""
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "Statement" and value.args:
        sql = value.args[0]
        if isinstance(sql, ast.JoinedStr | ast.Constant):
            return sql
    return None


def _a_statement(node: ast.expr, module: Module, function: Scope) -> bool:
    """``<statement>.sql``: a builder's, a module constant's ``Statement(...)``, or a local bound to a builder's."""
    if _builder_call(node):
        return True
    if not isinstance(node, ast.Name):
        return False
    constant = module.constants.get(node.id)
    if constant is not None and _statement_constant(constant) is not None:
        return True
    assigned = [
        statement.value
        for statement in ast.walk(function)
        if isinstance(statement, ast.Assign)
        and any(isinstance(target, ast.Name) and target.id == node.id for target in statement.targets)
    ]
    return bool(assigned) and all(_builder_call(value) for value in assigned)


def _sql_fstrings(modules: list[Module]) -> Iterator[tuple[Module, str, ast.JoinedStr]]:
    """(module, scope, f-string) for f-strings that end up in SQL: sent, constants that are sent, builders'."""
    sent: dict[str, set[str]] = {}
    for module, function, call in _sql_call_sites(modules):
        sql = call.args[0]
        if isinstance(sql, ast.JoinedStr):
            yield module, function.name, sql
        elif isinstance(sql, ast.Name):
            sent.setdefault(module.name, set()).add(sql.id)
    for module in modules:
        for name, value in module.constants.items():
            # Private constants may be sent from another function of the module, or spliced into builders.
            if isinstance(value, ast.JoinedStr) and (name in sent.get(module.name, ()) or name.startswith("_")):
                yield module, "<module>", value
            statement_sql = _statement_constant(value)
            if isinstance(statement_sql, ast.JoinedStr):
                yield module, "<module>", statement_sql
        for function in module.functions():
            if function.name in BUILDERS | FRAGMENTS:
                for node in ast.walk(function):
                    if isinstance(node, ast.JoinedStr):
                        yield module, function.name, node


def _fixed(node: ast.expr, module: Module) -> bool:
    """A string literal, or the name of a module constant holding one."""
    if isinstance(node, ast.Name):
        constant = module.constants.get(node.id)
        return constant is not None and _is_text(constant)
    return _is_text(node)


def _literal_fragment_call(node: ast.expr, module: Module) -> bool:
    """``locked_leases("...")``: a fragment built from literals only."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("locked_leases", "skipped_leases")
        and all(_fixed(arg, module) for arg in node.args)
        and all(_fixed(keyword.value, module) for keyword in node.keywords)
    )


def unexplained_interpolations(modules: list[Module]) -> tuple[int, list[str]]:
    """How many values are spliced into SQL text, and those without a reason in SAFE_INTERPOLATIONS."""
    unexplained = []
    checked = 0
    for module, scope, fstring in _sql_fstrings(modules):
        for part in fstring.values:
            if not isinstance(part, ast.FormattedValue):
                continue
            checked += 1
            source = ast.unparse(part.value)
            if (scope, source) not in SAFE_INTERPOLATIONS and not _literal_fragment_call(part.value, module):
                unexplained.append(f"{_where(module, fstring)}\n    {scope}() interpolates {source}")
    return checked, unexplained


def test_every_statement_sent_is_a_literal_a_module_constant_or_built_by_a_store_builder() -> None:
    sites, unexplained = unchecked_statements(_store_modules())
    assert sites >= 15, "the scan found too few call sites to be looking at the right code"
    assert unexplained == [], "SQL from an unchecked source:\n" + "\n".join(unexplained)


def test_every_value_interpolated_into_sql_text_comes_from_the_schema_or_fixed_text() -> None:
    checked, unexplained = unexplained_interpolations(_store_modules())
    assert checked >= 20, "the scan found too few interpolations to be looking at the right code"
    assert unexplained == [], "values spliced into SQL without a reason on file:\n" + "\n".join(unexplained)


SPLICING_STORE = """
_BY_ID = "SELECT * FROM workflow_runs WHERE id = $1"

async def by_client(conn, client):
    await conn.fetch(_BY_ID, client)                                    # fine: bound
    await conn.fetch(f"SELECT * FROM onboarding_brief WHERE client = '{client}'")
    query = "SELECT * FROM onboarding_brief WHERE client = '" + client + "'"
    await conn.execute(query)

def insert_statement(table_name):
    return f"INSERT INTO {table_name} DEFAULT VALUES"
"""


def test_the_scan_flags_values_spliced_into_sql() -> None:
    """The checks above, run on a store that splices a client name into SQL three ways."""
    modules = [Module("splicing.py", ast.parse(SPLICING_STORE))]
    sites, statements = unchecked_statements(modules)
    checked, interpolations = unexplained_interpolations(modules)
    assert (sites, checked) == (3, 2)
    assert [line.split(": ", 1)[0] for line in statements] == ["store/splicing.py:8"]
    assert [line.rsplit(" ", 1)[-1] for line in interpolations] == ["client", "table_name"]


def test_parameters_spliced_into_sql_text_get_literals_at_every_call() -> None:
    offending = []
    for module in _store_modules():
        for call, name in _calls(module.tree):
            if name not in LITERAL_ONLY_PARAMETERS:
                continue
            spliced = LITERAL_ONLY_PARAMETERS[name]
            positions = list(inspect.signature(SPLICING[name]).parameters)
            for index, arg in enumerate(call.args):
                if positions[index] in spliced and not _fixed(arg, module):
                    offending.append(_where(module, call))
            for keyword in call.keywords:
                if keyword.arg in spliced and not _fixed(keyword.value, module):
                    offending.append(_where(module, call))
    assert offending == []


def test_store_formats_no_string_with_percent_or_format() -> None:
    found = []
    for module in _store_modules():
        for node in ast.walk(module.tree):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and _is_text(node.left):
                found.append(_where(module, node))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
                found.append(_where(module, node))
    assert found == []


def _statements() -> dict[str, str]:
    """Every statement text store/ can send, with everything the builders can build from the schema."""
    texts: dict[str, str] = {}
    for source in (runs, steps, audit, fence, writes, liveness):
        for name, value in vars(source).items():
            constant = name.lstrip("_").isupper()
            if constant and isinstance(value, str) and re.search(r"\b(SELECT|UPDATE|INSERT|DELETE|WITH)\b", value):
                texts[f"{source.__name__}.{name}"] = value
    for table in metadata.tables.values():
        texts[f"insert into {table.name}"] = writes.insert_statement(table.name)
    for step in Step:
        texts[f"commit of {step}"] = steps.step_statement(step).sql
        texts[f"compensation up to {step}"] = steps.compensation_statement(frozenset(step.tables)).sql
    for invariant, query in audit._checks():
        texts[f"audit: {invariant}"] = query
    for module, _, call in _sql_call_sites(_store_modules()):  # literal statements at the call sites
        sql = call.args[0]
        if isinstance(sql, ast.Constant) and isinstance(sql.value, str):
            texts[_where(module, call)] = sql.value
    return texts


def test_sql_text_quotes_no_value_but_statuses_steps_and_fixed_punctuation() -> None:
    texts = _statements()
    assert len(texts) > 20
    literals = {literal for text in texts.values() for literal in re.findall(r"'((?:[^']|'')*)'", text)}
    assert literals <= ALLOWED_SQL_LITERALS, literals - ALLOWED_SQL_LITERALS


def test_statements_are_built_only_for_tables_and_steps_of_the_schema() -> None:
    hostile = "onboarding_brief; DROP TABLE workflow_runs; --"
    with pytest.raises(KeyError):
        writes.insert_statement(hostile)
    with pytest.raises(KeyError):
        writes.written_columns(hostile)
    for table in BUSINESS_TABLES:  # and the schema's own tables build without complaint
        assert writes.insert_statement(table).startswith(f"INSERT INTO {table} (")


@pytest.mark.anyio
async def test_deletes_and_step_commits_refuse_names_outside_the_schema(db: Database) -> None:
    with pytest.raises(KeyError):
        writes.delete_statement("onboarding_brief WHERE true; DROP TABLE workflow_runs; --", "$1::uuid[]")
    hostile = cast(Step, "normalize_brief'; DROP TABLE workflow_runs; --")
    with pytest.raises(AttributeError):  # a step is a Step, never a name spliced into SQL
        await StepStore(db, WorkerId("w")).commit_step(hostile, [])
    tables = await db.fetch("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
    assert tables[0][0] == len(metadata.tables) + 1  # and alembic_version


@pytest.mark.anyio
async def test_an_audit_with_an_infinite_grace_is_clean(db: Database) -> None:
    report = await audit.audit_database(db, grace_seconds=math.inf)
    assert report.clean


# ---------------------------------------------------------------------------------------------------------------
# Injection payloads in every field come back verbatim, and change nothing else


def _payload_brief(channels: list[str]) -> dict[str, Any]:
    pick = iter(SQL_PAYLOADS * 3)
    return {
        "client": next(pick),
        "product": next(pick),
        "audience": " ".join(SQL_PAYLOADS),
        "key_message": " | ".join(reversed(SQL_PAYLOADS)),
        "tone": "'; drop table workflow_runs; --",
        "goals": [payload[:40] for payload in SQL_PAYLOADS[:10]],
        "channels": channels,
        "budget_eur": 12000,
        "word_limit": 100,
        "delivery": {"target": "cms", "destination": next(pick)},
    }


async def _database_state(db: Database) -> dict[str, Any]:
    """Relations, roles, and row counts of every sagad table."""
    relations = await db.fetch("SELECT relname, relkind FROM pg_class WHERE relnamespace = 'public'::regnamespace")
    roles = await db.fetch("SELECT rolname, rolsuper FROM pg_roles")
    counts = {table: int((await db.fetch(f"SELECT count(*) FROM {table}"))[0][0]) for table in metadata.tables}
    return {"relations": sorted(map(tuple, relations)), "roles": sorted(map(tuple, roles)), "rows": counts}


async def _submit(database_url: str, cwd: Path, brief: dict[str, Any], key: str) -> str:
    result = await anyio.to_thread.run_sync(
        lambda: sagad(
            "submit",
            "-",
            "--idempotency-key",
            key,
            "--database-url",
            database_url,
            cwd=cwd,
            stdin=json.dumps(brief).encode(),
        )
    )
    assert result.code == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.slow
@pytest.mark.anyio
async def test_sql_injection_payloads_in_every_field_are_stored_verbatim_and_change_nothing_else(
    database_url: str, db: Database, tmp_path: Path
) -> None:
    before = await _database_state(db)
    completing = _payload_brief(["email", "blog"])
    refused = _payload_brief([payload[:40] for payload in SQL_PAYLOADS[:10]])
    ids = [
        await _submit(database_url, tmp_path, completing, SQL_PAYLOADS[0]),
        await _submit(database_url, tmp_path, refused, SQL_PAYLOADS[1]),
    ]
    assert await _submit(database_url, tmp_path, refused, SQL_PAYLOADS[0]) == ids[0]  # the key, verbatim, found again
    run_ids = [RunId(uuid.UUID(run_id)) for run_id in ids]
    async with running_daemon(db):
        statuses = await wait_terminal(db, run_ids)
    assert [statuses[run] for run in run_ids] == ["completed", "compensated"]

    stored = await db.fetch("SELECT id, brief, idempotency_key, last_error FROM workflow_runs ORDER BY submitted_at")
    assert [(row["brief"], row["idempotency_key"]) for row in stored] == [
        (completing, SQL_PAYLOADS[0]),
        (refused, SQL_PAYLOADS[1]),
    ]
    [intake] = await db.fetch("SELECT client, product, tone, payload FROM onboarding_brief")
    expected = normalized(completing)
    assert dict(intake) == {
        "client": completing["client"],
        "product": completing["product"],
        "tone": completing["tone"],
        "payload": expected.model_dump(),
    }
    with pytest.raises(StepFailed) as failure:
        normalized(refused)
    assert stored[1]["last_error"] == f"normalize_brief: {failure.value}"
    assert SQL_PAYLOADS[0].lower() in stored[1]["last_error"]

    status = await anyio.to_thread.run_sync(
        lambda: sagad("status", ids[1], "--database-url", database_url, cwd=tmp_path)
    )
    assert json.loads(status.stdout)["last_error"] == stored[1]["last_error"]

    after = await _database_state(db)
    assert after["relations"] == before["relations"]
    assert after["roles"] == before["roles"]
    grown = {table: after["rows"][table] - before["rows"][table] for table in metadata.tables}
    # The completed run keeps an output per step; the compensated one keeps nothing. Their history: a claim
    # and five commits and an end for one, a claim and a failure and an end for the other; intake untouched.
    history = grown.pop("run_history")
    assert grown == {
        "workflow_runs": 2,
        "step_outputs": len(Step),
        "sagad_intake": 0,
        **await expected_rows(run_ids[0], completing),
    }
    assert history >= 2
    assert await rows_of(db, run_ids[1]) == dict.fromkeys(TABLES, 0)


@pytest.mark.parametrize("version", [15, 17])
@pytest.mark.parametrize("operation", list(Operation))
def test_the_limits_a_pooled_transaction_sets_are_fixed_names_and_whole_milliseconds(
    operation: Operation, version: int
) -> None:
    facts = ServerFacts(pooled=True, max_connections=100, server_version=version)
    for lease in (0.5, 30.0, 1e6):
        begin = TransactionLimits(SessionLimits.for_lease(lease), facts).statement(operation)
        assert begin is not None
        assert re.fullmatch(r"BEGIN(; SET LOCAL [a-z_]+ = [0-9]+)+", begin), begin
