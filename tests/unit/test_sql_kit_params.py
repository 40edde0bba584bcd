"""SQL kit: typed template parameters, PostgreSQL role statements, and kit construction."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from portcullis.kits.sql import (
    ArgumentRefused,
    Param,
    ReadOnlyPolicy,
    SqlDeclarationError,
    SqlKit,
    declare_template,
)
from portcullis.kits.sql.params import coerce
from portcullis.kits.sql.pg_setup import grant_statements
from portcullis.kits.sql.sqlite_engine import SqliteReadOnly

REFUSED = [
    (Param("n", "integer"), True),  # bool is not an integer
    (Param("n", "integer"), 1.0),
    (Param("n", "integer"), "1"),
    (Param("n", "integer"), 2**63),
    (Param("n", "integer", minimum=0, maximum=10), 11),
    (Param("n", "integer", minimum=0), -1),
    (Param("n", "real"), math.nan),
    (Param("n", "real"), math.inf),
    (Param("n", "real"), "1.5"),
    (Param("n", "real", maximum=1.0), 1.5),
    (Param("n", "boolean"), 1),
    (Param("n", "boolean"), "true"),
    (Param("n", "text"), None),
    (Param("n", "text"), b"bytes"),
    (Param("n", "text", max_length=3), "abcd"),
    (Param("n", "text"), "a\x00"),
    (Param("n", "text"), "\udc80"),
    (Param("n", "text", pattern="[a-z]+"), "abc1"),
    (Param("n", "text", pattern="[a-z]+"), "abc\n"),
    (Param("n", "text", pattern="[0-9]{4}"), "١٢٣٤"),  # Arabic-Indic digits are not [0-9]
]


@pytest.mark.parametrize(("param", "value"), REFUSED)
def test_param_refuses_value(param: Param, value: object) -> None:
    """Wrong types, out-of-bounds numbers and text that breaks a bound are refused before binding."""
    with pytest.raises(ArgumentRefused):
        coerce(param, value)


ACCEPTED = [
    (Param("n", "integer", minimum=0, maximum=10), 10, 10),
    (Param("n", "real"), 2, 2.0),
    (Param("n", "boolean"), False, False),
    (Param("n", "text", nullable=True), None, None),
    (Param("n", "text"), "O'Brien", "O'Brien"),
    (Param("n", "text"), "Zoë 🙂 \"quoted\" ; -- /* */", "Zoë 🙂 \"quoted\" ; -- /* */"),
    (Param("n", "text", pattern="[A-Za-z' ]+"), "Mary O'Brien", "Mary O'Brien"),
]


@pytest.mark.parametrize(("param", "value", "bound"), ACCEPTED)
def test_param_accepts_value(param: Param, value: object, bound: object) -> None:
    """Benign values pass unchanged (an integer for a real becomes a float)."""
    assert coerce(param, value) == bound


def test_grant_statements_give_select_only() -> None:
    """The role gets LOGIN, USAGE on one schema and SELECT grants; nothing else, column lists when restricted."""
    statements = grant_statements("ro", "app", {"people": ["id", "name"], "orders": None})
    text = "\n".join(statements)
    assert statements[0].startswith('CREATE ROLE "ro" LOGIN NOSUPERUSER')
    assert 'GRANT SELECT ("id", "name") ON "app"."people" TO "ro"' in statements
    assert 'GRANT SELECT ON "app"."orders" TO "ro"' in statements
    assert "default_transaction_read_only = on" in text
    forbidden = ("INSERT", "UPDATE", "DELETE", "ALL", " SUPERUSER", " CREATEDB", " CREATEROLE")
    assert not any(word in text for word in forbidden)


@pytest.mark.parametrize(
    ("role", "schema", "tables"),
    [('ro"; DROP ROLE postgres; --', "app", {"t": None}), ("ro", "app; x", {"t": None}), ("ro", "app", {}),
     ("ro", "app", {"t": ['id"']})],
)
def test_grant_statements_refuse_bad_names(role: str, schema: str, tables: dict[str, list[str] | None]) -> None:
    """Names are plain identifiers; an empty table list is an error."""
    with pytest.raises(SqlDeclarationError):
        grant_statements(role, schema, tables)


def test_kit_refuses_mismatched_dialect_and_duplicates(tmp_path: Path) -> None:
    """A PostgreSQL policy over a SQLite engine, or two templates of one name, fail at construction."""
    sqlite_policy = ReadOnlyPolicy.build("sqlite", {"t": None})
    pg_policy = ReadOnlyPolicy.build("postgres", {"t": None})
    with pytest.raises(SqlDeclarationError):
        SqliteReadOnly(tmp_path / "x.db", pg_policy)
    engine = SqliteReadOnly(tmp_path / "x.db", sqlite_policy)
    with pytest.raises(SqlDeclarationError):
        SqlKit(engine, pg_policy)
    template = declare_template("t", "SELECT a FROM t", [], policy=sqlite_policy)
    with pytest.raises(SqlDeclarationError):
        SqlKit(engine, sqlite_policy, [template, template])


async def test_kit_refuses_unknown_template(tmp_path: Path) -> None:
    """An unknown template name is an argument error, never a lookup of SQL."""
    policy = ReadOnlyPolicy.build("sqlite", {"t": None})
    kit = SqlKit(SqliteReadOnly(tmp_path / "x.db", policy), policy)
    with pytest.raises(ArgumentRefused):
        await kit.run("SELECT 1", {})
