"""The parser layer of the ad-hoc query tool: one SELECT over allow-listed names, re-rendered.

:func:`check_select` is pure. It follows these steps, each refusing with a fixed reason code:

1. The text is a ``str`` within ``max_sql_chars``, without NUL or unencodable characters.
2. Its first token is ``SELECT``, ``WITH`` or ``(`` — anything else (PRAGMA, COPY, ATTACH, SET, CALL,
   DO, VACUUM, ...) is refused before sqlglot could fall back to an opaque ``Command``.
3. sqlglot parses it for the policy's dialect into exactly one statement (empty statements from
   stray ``;`` are ignored; a second real one is refused: stacked queries).
4. The root is a SELECT or a set operation (UNION/INTERSECT/EXCEPT) of SELECTs.
5. No node anywhere is a write, DDL, command, ``INTO``, locking clause, ``RETURNING``, parameter,
   placeholder or session variable (writable CTEs, ``SELECT ... INTO``, ``FOR UPDATE``).
6. ``WITH`` only at the top, never ``RECURSIVE``, CTE names never shadow an allowed table, and a
   CTE body sees only the CTEs declared before it.
7. Every table is unqualified and allow-listed (or a visible CTE); every function call is
   unqualified and allow-listed by the name it is rendered with.
8. When a table restricts its columns, every column reference resolves to an allowed column
   (:mod:`.column_check`, scope by scope; the engine layer checks exactly again).
9. The tree is re-rendered without comments and with every identifier quoted; only that text is
   ever executed, so what runs is what was checked.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot
from sqlglot import TokenType, exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers

from portcullis.kits.sql.column_check import check_columns
from portcullis.kits.sql.errors import QueryRefused
from portcullis.kits.sql.policy import IDENTIFIER, ReadOnlyPolicy

_FIRST_TOKENS = frozenset({TokenType.SELECT, TokenType.WITH, TokenType.L_PAREN})

# Node kinds that have no place in a read-only query, wherever they appear (step 5).
_FORBIDDEN: tuple[type[exp.Expr], ...] = (
    exp.DML, exp.DDL, exp.Command, exp.Pragma, exp.Set, exp.Attach, exp.Detach, exp.Transaction,
    exp.Commit, exp.Rollback, exp.Into, exp.Lock, exp.Returning, exp.Placeholder, exp.Parameter,
    exp.SessionParameter, exp.Use, exp.Describe, exp.Kill, exp.Analyze, exp.Grant, exp.Revoke,
    exp.Cache, exp.Uncache, exp.LoadData, exp.Declare, exp.Show, exp.Execute,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CheckedQuery:
    """A query that passed the parser layer: the re-rendered SQL and the tables it reads."""

    sql: str
    tables: frozenset[str]


def _refuse(reason: str) -> QueryRefused:
    return QueryRefused(reason)


def parse_single(sql: object, dialect: str, max_chars: int) -> exp.Expr:
    """Steps 1-3: one statement, parsed; shared with the template declarations."""
    if not isinstance(sql, str) or not sql.strip():
        raise _refuse("empty")
    if len(sql) > max_chars:
        raise _refuse("too_long")
    if "\x00" in sql:
        raise _refuse("nul")
    try:
        sql.encode("utf-8")
        tokens = sqlglot.tokenize(sql, read=dialect)
    except (UnicodeEncodeError, SqlglotError):
        raise _refuse("unparsable") from None
    meaningful = [t for t in tokens if t.token_type != TokenType.SEMICOLON]
    if not meaningful or meaningful[0].token_type not in _FIRST_TOKENS:
        raise _refuse("not_select")
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except (SqlglotError, RecursionError, ValueError):
        raise _refuse("unparsable") from None
    if len(statements) != 1:
        raise _refuse("not_single_statement")
    return normalize_identifiers(statements[0], dialect=dialect)


def _check_shape(tree: exp.Expr, *, placeholders: bool) -> None:
    """Steps 4-5; ``placeholders``: named ``:name`` placeholders are allowed (template declarations)."""
    if not isinstance(tree, exp.Select | exp.SetOperation):
        raise _refuse("not_select")
    for node in tree.walk():
        if placeholders and isinstance(node, exp.Placeholder) and IDENTIFIER.fullmatch(str(node.name)):
            continue
        if isinstance(node, _FORBIDDEN):
            raise _refuse("forbidden_clause")
        if isinstance(node, exp.With) and node.parent is not tree:
            raise _refuse("nested_with")
        if isinstance(node, exp.Query) and not isinstance(node, exp.Select | exp.SetOperation | exp.Subquery):
            raise _refuse("not_select")


def _cte_scopes(tree: exp.Expr, policy: ReadOnlyPolicy) -> dict[int, frozenset[str]]:
    """Step 6: for each CTE body (by id), the CTE names it may see; the main query sees all."""
    with_ = tree.args.get("with_") or tree.args.get("with")
    if with_ is None:
        return {}
    if not policy.allow_cte:
        raise _refuse("cte_not_allowed")
    if with_.args.get("recursive"):
        raise _refuse("recursive_cte")
    seen: list[str] = []
    scopes: dict[int, frozenset[str]] = {}
    for cte in with_.expressions:
        name = cte.alias_or_name
        if not IDENTIFIER.fullmatch(name) or name in policy.tables or name in seen:
            raise _refuse("bad_cte_name")
        scopes[id(cte)] = frozenset(seen)
        seen.append(name)
    scopes[id(tree)] = frozenset(seen)
    return scopes


def _visible_ctes(node: exp.Expr, scopes: dict[int, frozenset[str]]) -> frozenset[str]:
    """The CTE names visible at ``node``: those of the nearest enclosing CTE body, else the main query's."""
    parent: exp.Expr | None = node
    while parent is not None:
        if id(parent) in scopes:
            return scopes[id(parent)]
        parent = parent.parent
    return frozenset()


def _function_name(node: exp.Func, dialect: str) -> str | None:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    rendered = node.sql(dialect=dialect, comments=False).split("(", 1)[0].strip().lower()
    return rendered if IDENTIFIER.fullmatch(rendered) else None


def _check_names(tree: exp.Expr, policy: ReadOnlyPolicy, scopes: dict[int, frozenset[str]]) -> frozenset[str]:
    """Steps 7-8; returns the allow-listed tables read."""
    tables: set[str] = set()
    for node in tree.walk():
        if isinstance(node, exp.Table):
            if node.args.get("db") or node.args.get("catalog"):
                raise _refuse("qualified_table")
            if isinstance(node.this, exp.Func):
                continue  # a table-valued function: checked as a function below
            name = node.name
            if name in _visible_ctes(node, scopes):
                continue
            if name not in policy.tables:
                raise _refuse("table_not_allowed")
            tables.add(name)
        elif isinstance(node, exp.Dot) and isinstance(node.expression, exp.Func):
            raise _refuse("qualified_function")
        elif isinstance(node, exp.Func) and not _structural(node):
            if _function_name(node, policy.dialect) not in policy.functions:
                raise _refuse("function_not_allowed")
    if policy.restricts_columns:
        check_columns(tree, policy)
    return frozenset(tables)


def _structural(node: exp.Func) -> bool:
    """CASE and its WHEN branches, CAST, EXISTS, AND/OR/XOR and COLLATE are syntax sqlglot models as functions.

    Every other function node is checked by the name it renders with; one that renders as an operator
    (``->``, ``~``) has no such name and is refused.
    """
    if isinstance(node, exp.If):
        return isinstance(node.parent, exp.Case)
    return isinstance(node, exp.Case | exp.Cast | exp.Exists | exp.Connector | exp.Collate)


def check_tree(sql: object, policy: ReadOnlyPolicy, *, placeholders: bool = False) -> tuple[exp.Expr, frozenset[str]]:
    """Steps 1-8: the checked tree and the tables it reads (templates render it themselves)."""
    tree = parse_single(sql, policy.dialect, policy.max_sql_chars)
    try:
        _check_shape(tree, placeholders=placeholders)
        scopes = _cte_scopes(tree, policy)
        return tree, _check_names(tree, policy, scopes)
    except RecursionError:  # nesting the parser accepted but a recursive walk or rendering does not
        raise _refuse("too_deep") from None


def render(tree: exp.Expr, dialect: str) -> str:
    """Step 9: the only text ever executed — no comments, every identifier quoted."""
    try:
        return tree.sql(dialect=dialect, identify=True, comments=False, unsupported_level=sqlglot.ErrorLevel.RAISE)
    except (SqlglotError, RecursionError):
        raise _refuse("unrenderable") from None


def check_select(sql: object, policy: ReadOnlyPolicy) -> CheckedQuery:
    """Run steps 1-9 on caller-supplied SQL; return what may be executed or raise QueryRefused."""
    tree, tables = check_tree(sql, policy)
    return CheckedQuery(render(tree, policy.dialect), tables)
