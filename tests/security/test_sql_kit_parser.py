"""SQL kit, parser layer: SQL injection payloads refused by the ad-hoc check, in both dialects.

Rows follow the public corpora's families (PayloadsAllTheThings, sqlmap tamper styles): stacked
queries, comment tricks, UNION into other tables, boolean/time-based probes, file and extension
functions, PRAGMA/ATTACH/COPY/SET/CALL/DO, writable CTEs, SELECT ... INTO, locking clauses,
quoting and Unicode tricks. Every row must be refused; the benign controls must pass, re-rendered.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portcullis.kits.sql import Param, QueryRefused, ReadOnlyPolicy, SqlDeclarationError, declare_template
from portcullis.kits.sql.select_check import check_select

TABLES = {"people": ["id", "name", "city"], "orders": None}
POLICIES = {d: ReadOnlyPolicy.build(d, TABLES) for d in ("sqlite", "postgres")}

HOSTILE = [
    # stacked queries and statement smuggling
    "SELECT id FROM people; DROP TABLE people",
    "SELECT id FROM people; DELETE FROM people",
    "SELECT id FROM people;SELECT token FROM secrets",
    "SELECT id FROM people WHERE name = 'x'; ATTACH DATABASE '/tmp/x.db' AS x; --'",
    # statements that are not SELECT
    "DELETE FROM people",
    "UPDATE people SET name = 'x'",
    "INSERT INTO people (id) VALUES (1)",
    "DROP TABLE people",
    "CREATE TABLE t AS SELECT * FROM orders",
    "PRAGMA table_info(people)",
    "PRAGMA writable_schema = ON",
    "ATTACH DATABASE '/tmp/evil.db' AS evil",
    "ATTACH '/tmp/evil.db' AS evil",
    "DETACH DATABASE main",
    "VACUUM INTO '/tmp/copy.db'",
    "VACUUM",
    "COPY people TO PROGRAM 'id'",
    "COPY people FROM '/etc/passwd'",
    "COPY (SELECT 1) TO '/tmp/out'",
    "SET statement_timeout = 0",
    "SET ROLE postgres",
    "RESET ROLE",
    "CALL do_things()",
    "DO $$ BEGIN PERFORM pg_sleep(10); END $$",
    "BEGIN; DELETE FROM people; COMMIT",
    "EXPLAIN ANALYZE DELETE FROM people",
    "GRANT ALL ON people TO PUBLIC",
    "LOAD 'auto_explain'",
    "SHOW ALL",
    "DECLARE c CURSOR FOR SELECT 1",
    # writes hidden inside a SELECT
    "WITH x AS (DELETE FROM people RETURNING *) SELECT * FROM x",
    "WITH x AS (UPDATE people SET name = 'a' RETURNING id) SELECT id FROM x",
    "WITH x AS (INSERT INTO people (id) VALUES (9) RETURNING id) SELECT id FROM x",
    "SELECT id INTO newtable FROM people",
    "SELECT * INTO TEMP t FROM orders",
    "SELECT id FROM people FOR UPDATE",
    "SELECT id FROM people FOR SHARE",
    "SELECT id FROM people FOR NO KEY UPDATE NOWAIT",
    # tables and schemas outside the allow-list
    "SELECT token FROM secrets",
    "SELECT id FROM people UNION SELECT token FROM secrets",
    "SELECT id FROM people UNION ALL SELECT password FROM users --",
    "SELECT id FROM people WHERE id IN (SELECT id FROM secrets)",
    "SELECT name FROM sqlite_master",
    "SELECT sql FROM sqlite_schema",
    "SELECT * FROM pg_catalog.pg_shadow",
    "SELECT usename, passwd FROM pg_shadow",
    "SELECT * FROM information_schema.tables",
    "SELECT * FROM main.people",
    "SELECT * FROM public.orders",
    "SELECT id FROM (SELECT * FROM secrets) AS s",
    # CTE tricks
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT n FROM r",
    "WITH people AS (SELECT token AS id FROM secrets) SELECT id FROM people",
    "WITH x AS (SELECT token FROM secrets) SELECT * FROM x",
    "SELECT * FROM (WITH x AS (SELECT 1 AS id) SELECT id FROM x) AS y",
    "WITH a AS (SELECT * FROM b), b AS (SELECT id FROM people) SELECT * FROM a",
    # columns outside the allow-list
    "SELECT * FROM people",
    "SELECT people.* FROM people",
    "SELECT email FROM people",
    "SELECT id FROM people WHERE password = 'x'",
    "SELECT email AS email FROM people",
    "SELECT lower(email) AS email FROM people ORDER BY email",
    "SELECT e AS email FROM (SELECT email AS e FROM people) AS s ORDER BY email",
    "SELECT s.email FROM (SELECT * FROM people) AS s",
    "SELECT people.email FROM people",
    "SELECT p.* FROM orders AS o JOIN people AS p ON p.id = o.pid",
    "SELECT total FROM orders AS o WHERE EXISTS (SELECT 1 FROM people AS p WHERE p.email = o.email)",
    "SELECT id FROM people JOIN orders USING (email)",
    "SELECT id FROM people NATURAL JOIN orders",
    "SELECT (SELECT email FROM people LIMIT 1)",
    "SELECT id FROM people UNION SELECT email FROM people",
    # dangerous or unlisted functions (the parser accepts these as calls; the allow-list must not)
    "SELECT load_extension('/tmp/evil.so')",
    "SELECT load_extension('/tmp/evil.so', 'sqlite3_extension_init')",
    "SELECT readfile('/etc/passwd')",
    "SELECT writefile('/tmp/x', 'data')",
    "SELECT fts3_tokenizer('simple')",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT pg_read_binary_file('/etc/passwd')",
    "SELECT * FROM pg_ls_dir('.')",
    "SELECT lo_import('/etc/passwd')",
    "SELECT lo_export(16385, '/tmp/x')",
    "SELECT * FROM dblink('host=evil', 'SELECT 1') AS t(a int)",
    "SELECT pg_sleep(10)",
    "SELECT id FROM people WHERE 1 = (SELECT 1 FROM pg_sleep(5))",
    "SELECT CASE WHEN 1=1 THEN pg_sleep(5) ELSE NULL END",
    "SELECT current_setting('data_directory')",
    "SELECT set_config('statement_timeout', '0', false)",
    "SELECT query_to_xml('SELECT * FROM secrets', true, true, '')",
    "SELECT randomblob(1000000000)",
    "SELECT id FROM people WHERE 1 = like('abc', upper(hex(randomblob(500000000))))",
    "SELECT sqlite_version()",
    "SELECT version()",
    "SELECT pg_catalog.pg_sleep(1)",
    "SELECT pg_terminate_backend(1)",
    "SELECT id FROM people WHERE name = char(65)",
    "SELECT id FROM generate_series(1, 1000000000) AS g(id)",
    "SELECT name FROM people WHERE name ~ '(a+)+$'",
    # comments and quoting tricks around a second statement
    "SELECT id FROM people /* ; */ ; DROP TABLE people",
    "SELECT id FROM people -- \n; DROP TABLE people",
    "SELECT id FROM people;/**/DELETE FROM people",
    "/* leading */ PRAGMA table_info(people)",
    "-- x\nDELETE FROM people",
    "SELECT id FROM people WHERE name = '' ; DROP TABLE people --'",
    "SELECT id FROM people WHERE name = 'a'' ; DELETE FROM people; --'' ' ; DELETE FROM people",
    "SELECT id FROM people\x00; DROP TABLE people",
    "SELECT id FROM people WHERE name = '\ud800'",
    "SELECT id FROM people \uff1b DROP TABLE people",
    # parameters and session variables in an ad-hoc query
    "SELECT id FROM people WHERE id = ?",
    "SELECT id FROM people WHERE id = :id",
    "SELECT id FROM people WHERE id = $1",
    "SELECT @@version",
    # not a string, empty, too long
    "",
    "   ;  ",
    "SELECT " + "1 + " * 5000 + "1",
]


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
@pytest.mark.parametrize("sql", HOSTILE)
def test_parser_refuses_injection_payload(sql: str, dialect: str) -> None:
    """Every hostile row is refused by the parser layer with a fixed message that echoes nothing."""
    with pytest.raises(QueryRefused) as info:
        check_select(sql, POLICIES[dialect])
    assert info.value.message == "query refused"
    assert info.value.reason.replace("_", "").isalnum()


@pytest.mark.parametrize("value", [None, 42, b"SELECT 1", ["SELECT 1"]])
def test_parser_refuses_non_text(value: object) -> None:
    """Only a string is a query."""
    with pytest.raises(QueryRefused):
        check_select(value, POLICIES["sqlite"])


BENIGN = [
    ("SELECT id, name FROM people WHERE name = 'O''Brien'", "O''Brien"),
    ("SELECT name FROM people WHERE name = 'a;b -- c /* d */'", "a;b -- c /* d */"),
    ("SELECT name FROM people WHERE city = 'Zürich' ORDER BY name LIMIT 5", "Zürich"),
    ("SELECT count(*) FROM orders", "COUNT(*)"),
    ("SELECT upper(name) AS n FROM people ORDER BY n", "UPPER"),
    ("WITH x AS (SELECT id FROM people) SELECT id FROM x", "WITH"),
    ("SELECT id FROM people UNION SELECT id FROM orders", "UNION"),
    ("SELECT * FROM orders WHERE total > 10", "*"),
    ("SELECT CASE WHEN id > 1 THEN 'big' ELSE 'small' END AS size FROM people", "CASE"),
    ("SELECT id FROM people -- trailing comment\n", "people"),
    ("SELECT p.name, o.total FROM people AS p JOIN orders AS o ON o.pid = p.id", "JOIN"),
    ("SELECT id FROM people AS p WHERE EXISTS (SELECT 1 FROM orders AS o WHERE o.pid = p.id)", "EXISTS"),
    ("SELECT upper(name) AS email FROM people ORDER BY email", "UPPER"),
    ("SELECT o.* FROM orders AS o JOIN people AS p ON p.id = o.pid", '"o".*'),
]


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
@pytest.mark.parametrize(("sql", "kept"), BENIGN)
def test_parser_accepts_benign_select(sql: str, kept: str, dialect: str) -> None:
    """Ordinary SELECTs pass; the text that runs is re-rendered: identifiers quoted, comments gone."""
    checked = check_select(sql, POLICIES[dialect])
    assert kept in checked.sql
    assert "--" not in checked.sql.replace("a;b -- c", "") and "/*" not in checked.sql.replace("/* d */", "")
    assert '"people"' in checked.sql or '"orders"' in checked.sql


def test_cte_can_be_turned_off() -> None:
    """With allow_cte off, a WITH is refused."""
    policy = ReadOnlyPolicy.build("sqlite", TABLES, allow_cte=False)
    with pytest.raises(QueryRefused):
        check_select("WITH x AS (SELECT id FROM people) SELECT id FROM x", policy)


@pytest.mark.parametrize(
    ("sql", "params"),
    [
        ("SELECT id FROM people WHERE name = :name", [Param("name", "text"), Param("extra", "integer")]),
        ("SELECT id FROM people WHERE name = :name AND id = :id", [Param("name", "text")]),
        ("SELECT id FROM people WHERE id = ?", []),
        ("SELECT id FROM people WHERE id = $1", []),
        ("DELETE FROM people WHERE id = :id", [Param("id", "integer")]),
        ("SELECT id FROM people WHERE id = :id; DROP TABLE people", [Param("id", "integer")]),
        ("SELECT token FROM secrets WHERE id = :id", [Param("id", "integer")]),
        ("SELECT id FROM people WHERE name = :n", [Param("n", "text"), Param("n", "text")]),
        ("SELECT id FROM people WHERE name = :n", [Param("n", "blob")]),  # type: ignore[arg-type]
        ("SELECT id FROM people WHERE name = :n", [Param("n", "text", pattern="(")]),
        ("SELECT id FROM people WHERE id = :n", [Param("n", "integer", minimum=5, maximum=1)]),
    ],
)
def test_template_declaration_errors(sql: str, params: list[Param]) -> None:
    """A template that does not match its parameters, or is not one allowed SELECT, fails at declaration."""
    with pytest.raises(SqlDeclarationError):
        declare_template("t", sql, params, policy=POLICIES["sqlite"])


@pytest.mark.parametrize(
    "tables", [{}, {"bad name": None}, {"people": []}, {"people": "id"}, {"Robert'); DROP": None}]
)
def test_policy_declaration_errors(tables: dict[str, object]) -> None:
    """An empty allow-list is an error, never "allow all"; names must be plain identifiers."""
    with pytest.raises(SqlDeclarationError):
        ReadOnlyPolicy.build("sqlite", tables)  # type: ignore[arg-type]


_TOKENS = ["SELECT", "FROM", "WHERE", "people", "orders", "secrets", "id", "name", "email", "*", ",", "(", ")",
           ";", "--", "/*", "*/", "'", "''", '"', "UNION", "WITH", "x", "AS", "=", "1", "lower(", "pg_sleep(",
           "INTO", "FOR UPDATE", "DELETE", "\n", "$1", ":n", "?", "#", "ATTACH", "PRAGMA", "OR", "LIMIT"]  # fmt: skip


@settings(max_examples=300)
@given(st.lists(st.sampled_from(_TOKENS), min_size=1, max_size=25), st.sampled_from(["sqlite", "postgres"]))
def test_parser_accepts_only_what_rechecks_to_itself(tokens: list[str], dialect: str) -> None:
    """Token soup is refused or accepted; never another error, and accepted SQL re-checks to the same text."""
    try:
        checked = check_select("SELECT " + " ".join(tokens), POLICIES[dialect])
    except QueryRefused:
        return
    assert check_select(checked.sql, POLICIES[dialect]).sql == checked.sql
    assert "secrets" not in checked.tables and checked.tables <= {"people", "orders"}
