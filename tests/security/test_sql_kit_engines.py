"""SQL kit, engine layer: the database refuses what the parser layer would, with the parser bypassed.

The engines take SQL text (they are the kit's inner layer), so these rows go straight to them —
the seam that proves the second layer stands alone. SQLite: a real read-only file with the
authorizer; PostgreSQL: a real server (127.0.0.1:5432, database ``test``), a uniquely named schema
and read-only role per module, dropped after. Benign controls run through the public kit.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from portcullis.kits.sql import (
    ArgumentRefused,
    Param,
    QueryLimits,
    QueryRefused,
    ReadOnlyPolicy,
    SqlKit,
    SqlKitError,
    SqlLimitExceeded,
    SqlUnavailable,
    declare_template,
)
from portcullis.kits.sql.pg_engine import PostgresReadOnly
from portcullis.kits.sql.pg_setup import create_readonly_role, drop_readonly_role
from portcullis.kits.sql.sqlite_engine import SqliteReadOnly

TABLES = {"people": ["id", "name", "city"]}
PEOPLE = [(1, "O'Brien", "Cork"), (2, "Zoë \"Z\" Ünal", "Zürich"), (3, "Robert'); DROP TABLE people;--", "x"),
          (4, "a;b -- c /* d */", "y")]  # fmt: skip
PG_DSN = os.environ.get("PORTCULLIS_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
LOOKUP = "SELECT id, name FROM people WHERE name = :name ORDER BY id"


# ----------------------------------------------------------------------------- SQLite


@pytest.fixture(scope="module")
def sqlite_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlkit") / "people.db"
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, city TEXT, email TEXT);"
                       "CREATE TABLE secrets (token TEXT); INSERT INTO secrets VALUES ('s3cret');")  # fmt: skip
    conn.executemany("INSERT INTO people (id, name, city, email) VALUES (?, ?, ?, 'e')", PEOPLE)
    conn.commit()
    conn.close()
    return path


def sqlite_engine(
    path: Path, *, functions: tuple[str, ...] = (), limits: QueryLimits | None = None
) -> SqliteReadOnly:
    policy = ReadOnlyPolicy.build("sqlite", TABLES, functions={"count", "upper", "like", *functions})
    return SqliteReadOnly(path, policy, limits)


ENGINE_HOSTILE_SQLITE = [
    "SELECT email FROM people",  # column outside the allow-list
    "SELECT token FROM secrets",
    "SELECT id FROM people UNION SELECT token FROM secrets",
    "SELECT name FROM sqlite_master",
    "PRAGMA table_info(people)",
    "PRAGMA writable_schema = ON",
    "ATTACH DATABASE ':memory:' AS evil",
    "DELETE FROM people",
    "UPDATE people SET name = 'x'",
    "INSERT INTO people (id) VALUES (99)",
    "CREATE TABLE t (a)",
    "CREATE TEMP TABLE t (a)",
    "DROP TABLE people",
    "VACUUM",
    "BEGIN",
    "SELECT load_extension('/tmp/nothing.so')",
    "SELECT readfile('/etc/passwd')",
    "SELECT sqlite_version()",
    "SELECT randomblob(16)",  # a function not in this engine's allow-list
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
    "WITH x AS (DELETE FROM people RETURNING id) SELECT id FROM x",
    "SELECT id FROM people; DELETE FROM people",
]


@pytest.mark.parametrize("sql", ENGINE_HOSTILE_SQLITE)
async def test_sqlite_engine_refuses_with_parser_bypassed(sqlite_path: Path, sql: str) -> None:
    """The authorizer, read-only mode and driver refuse each row on their own; the data stays intact."""
    with pytest.raises(QueryRefused):
        await sqlite_engine(sqlite_path).fetch(sql, {}, 10)
    conn = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
    assert conn.execute("SELECT count(*) FROM people").fetchone() == (len(PEOPLE),)
    conn.close()


async def test_sqlite_time_budget_stops_a_runaway_query(sqlite_path: Path) -> None:
    """A cross join that would run for minutes is interrupted by the step budget."""
    engine = sqlite_engine(sqlite_path, limits=QueryLimits(timeout_s=30, max_steps=200_000))
    sql = "SELECT count(*) FROM " + ", ".join(f"people t{i}" for i in range(9))
    with pytest.raises(SqlLimitExceeded) as info:
        await engine.fetch(sql, {}, 10)
    assert info.value.reason == "time_budget"


async def test_sqlite_huge_value_is_refused(sqlite_path: Path) -> None:
    """Even with randomblob allowed, a value past the result budget fails inside SQLite (no allocation)."""
    engine = sqlite_engine(sqlite_path, functions=("randomblob",), limits=QueryLimits(max_result_bytes=10_000))
    with pytest.raises(SqlLimitExceeded):
        await engine.fetch("SELECT randomblob(1000000000)", {}, 10)
    with pytest.raises(SqlLimitExceeded) as info:
        await engine.fetch("SELECT randomblob(9000) UNION ALL SELECT randomblob(9000)", {}, 10)
    assert info.value.reason == "result_too_large"


async def test_sqlite_missing_file_fails_closed(tmp_path: Path) -> None:
    """A database that is not there is an error, and mode=ro never creates it."""
    with pytest.raises(SqlUnavailable):
        await sqlite_engine(tmp_path / "absent.db").fetch("SELECT id FROM people", {}, 10)
    assert not (tmp_path / "absent.db").exists()


@pytest.mark.parametrize(("name", "expected"), [(row[1], row[0]) for row in PEOPLE])
async def test_sqlite_template_finds_tricky_names(sqlite_path: Path, name: str, expected: int) -> None:
    """O'Brien, quotes, Unicode and injection-looking text are plain bound values: the right row comes back."""
    policy = ReadOnlyPolicy.build("sqlite", TABLES)
    template = declare_template("by_name", LOOKUP, [Param("name", "text", max_length=64)], policy=policy)
    kit = SqlKit(SqliteReadOnly(sqlite_path, policy), policy, [template])
    result = await kit.run("by_name", {"name": name})
    assert result.rows == ((expected, name),)


@pytest.mark.parametrize(
    "arguments",
    [{}, {"name": "a\x00b"}, {"name": "\ud800"}, {"name": 1}, {"name": None}, {"name": "x" * 65},
     {"name": "a", "extra": 1}, ["name"]],
)
async def test_sqlite_template_refuses_bad_arguments(sqlite_path: Path, arguments: object) -> None:
    """NUL, lone surrogates, wrong types, overlong and unknown arguments never reach the driver."""
    policy = ReadOnlyPolicy.build("sqlite", TABLES)
    template = declare_template("by_name", LOOKUP, [Param("name", "text", max_length=64)], policy=policy)
    kit = SqlKit(SqliteReadOnly(sqlite_path, policy), policy, [template])
    with pytest.raises(ArgumentRefused):
        await kit.run("by_name", arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize("sql", ["DELETE FROM people", "PRAGMA query_only = OFF", "SELECT token FROM secrets"])
async def test_sqlite_image_engine_is_read_only(sqlite_path: Path, sql: str) -> None:
    """An in-memory image (the demo analytics service's) is locked down like a file: writes and pragmas refused."""
    source = sqlite3.connect(sqlite_path)
    image = source.serialize()
    source.close()
    engine = SqliteReadOnly.from_image(image, ReadOnlyPolicy.build("sqlite", TABLES))
    with pytest.raises(QueryRefused):
        await engine.fetch(sql, {}, 10)
    assert (await engine.fetch("SELECT name FROM people WHERE id = 1", {}, 10)).rows == (("O'Brien",),)


async def test_sqlite_adhoc_query_truncates_rows(sqlite_path: Path) -> None:
    """The ad-hoc query returns at most max_rows rows and says it stopped."""
    policy = ReadOnlyPolicy.build("sqlite", TABLES)
    kit = SqlKit(SqliteReadOnly(sqlite_path, policy), policy, max_rows=2)
    result = await kit.query("SELECT id FROM people ORDER BY id")
    assert result.rows == ((1,), (2,)) and result.truncated


# ----------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="module")
def pg_names() -> Iterator[tuple[str, str]]:
    tag = uuid.uuid4().hex[:12]
    yield f"sqlkit_{tag}", f"sqlkit_ro_{tag}"


@pytest.fixture
async def pg_engine(pg_names: tuple[str, str]) -> AsyncIterator[PostgresReadOnly]:
    """A schema with people and secrets, a read-only role for people's allowed columns; dropped after."""
    schema, role = pg_names
    try:
        admin = await asyncpg.connect(PG_DSN, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required under CI and is not reachable: {type(exc).__name__}")
        pytest.skip("PostgreSQL not reachable at 127.0.0.1:5432 (scripts/bootstrap.sh installs it)")
    try:
        await admin.execute(
            f'CREATE SCHEMA "{schema}"; CREATE TABLE "{schema}".people (id int PRIMARY KEY, name text, city text, '
            f'email text); CREATE TABLE "{schema}".secrets (token text); INSERT INTO "{schema}".secrets VALUES (\'s\')'
        )
        await admin.executemany(f'INSERT INTO "{schema}".people VALUES ($1, $2, $3, \'e\')', PEOPLE)
        await create_readonly_role(admin, role=role, schema=schema, tables=TABLES)
        dsn = PG_DSN.replace("postgres@", f"{role}@", 1)
        yield PostgresReadOnly(dsn, schema=schema, limits=QueryLimits(timeout_s=0.5))
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await drop_readonly_role(admin, role=role)
        await admin.close()


ENGINE_HOSTILE_PG: list[tuple[str, type[SqlKitError]]] = [
    ("SELECT email FROM people", QueryRefused),  # column without a grant
    ("SELECT token FROM secrets", QueryRefused),
    ("DELETE FROM people", QueryRefused),
    ("CREATE TABLE t (a int)", QueryRefused),
    ("CREATE TEMP TABLE t (a int)", QueryRefused),
    ("SELECT id INTO newtable FROM people", QueryRefused),
    ("SELECT id FROM people FOR UPDATE", QueryRefused),
    ("WITH x AS (DELETE FROM people RETURNING id) SELECT id FROM x", QueryRefused),
    ("SELECT id FROM people; DELETE FROM people", QueryRefused),
    ("COPY people TO PROGRAM 'id'", QueryRefused),
    ("COPY (SELECT 1) TO '/tmp/sqlkit_out'", QueryRefused),
    ("SELECT pg_read_file('/etc/passwd')", QueryRefused),
    ("SELECT * FROM pg_ls_dir('.')", QueryRefused),
    ("SELECT lo_import('/etc/passwd')", QueryRefused),
    ("SELECT lo_export(1, '/tmp/sqlkit_lo')", QueryRefused),
    ("SELECT pg_sleep(30)", SqlLimitExceeded),
    ("SELECT set_config('statement_timeout', '0', false), pg_sleep(30)", SqlLimitExceeded),
]


@pytest.mark.parametrize(("sql", "error"), ENGINE_HOSTILE_PG)
async def test_pg_engine_refuses_with_parser_bypassed(
    pg_engine: PostgresReadOnly, pg_names: tuple[str, str], sql: str, error: type[SqlKitError]
) -> None:
    """The read-only role cannot write, read files or outlast the statement timeout."""
    with pytest.raises(error):
        await pg_engine.fetch(sql, (), 10)
    admin = await asyncpg.connect(PG_DSN, timeout=10)
    try:
        assert await admin.fetchval(f'SELECT count(*) FROM "{pg_names[0]}".people') == len(PEOPLE)
    finally:
        await admin.close()


@pytest.mark.parametrize(("name", "expected"), [(row[1], row[0]) for row in PEOPLE])
async def test_pg_template_finds_tricky_names(pg_engine: PostgresReadOnly, name: str, expected: int) -> None:
    """The same benign control on PostgreSQL: $n binding with an explicit cast returns the right row."""
    policy = ReadOnlyPolicy.build("postgres", TABLES)
    template = declare_template("by_name", LOOKUP, [Param("name", "text", max_length=64)], policy=policy)
    kit = SqlKit(pg_engine, policy, [template])
    assert (await kit.run("by_name", {"name": name})).rows == ((expected, name),)
    assert (await kit.query("SELECT count(*) FROM people")).rows == ((len(PEOPLE),),)


async def test_pg_unreachable_fails_closed() -> None:
    """No server at the address: the call is refused as unavailable, not retried without limits."""
    engine = PostgresReadOnly("postgresql://nobody@127.0.0.1:1/test", schema="public")
    with pytest.raises(SqlUnavailable):
        await engine.fetch("SELECT 1", (), 1)


async def test_pg_silent_server_fails_closed_within_the_deadline() -> None:
    """A server that accepts and never answers: refused as unavailable after the connect deadline."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # listens, never accepts or answers
        port = silent.getsockname()[1]
        engine = PostgresReadOnly(f"postgresql://nobody@127.0.0.1:{port}/test", schema="public",
                                  limits=QueryLimits(timeout_s=0.2))
        with pytest.raises(SqlUnavailable):
            await engine.fetch("SELECT 1", (), 1)
