"""Step 8 of the parser layer: column allow-lists, resolved scope by scope.

Runs only when some table restricts its columns. sqlglot's scope analysis gives, for each SELECT,
its sources (real tables, CTEs, derived tables) and the column references it makes (an ``ORDER BY``
reference to the SELECT's own output alias is not one). A reference is resolved to its source by its
qualifier, or, unqualified, to the only source of the innermost scope that has any; with several
sources, at least one must allow the name (coarse: the engine checks the exact column). A reference
to a restricted table's column outside its list is refused, whatever alias it is given later; so are
``*``/``t.*`` over a restricted table and ``USING``/``NATURAL`` joins (they compare columns by name,
unnamed in the query). Columns of CTEs and derived tables are checked where those are defined.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.scope import Scope, traverse_scope

from portcullis.kits.sql.errors import QueryRefused
from portcullis.kits.sql.policy import ReadOnlyPolicy


def _allowed(source: object, policy: ReadOnlyPolicy) -> frozenset[str] | None:
    """The allowed columns of a source, or None when it is unrestricted (a CTE, subquery, open table)."""
    if isinstance(source, exp.Table) and not isinstance(source.this, exp.Func):
        return policy.tables.get(source.name)
    return None


def _lookup(scope: Scope, qualifier: str) -> object:
    current: Scope | None = scope
    while current is not None:
        if qualifier in current.sources:
            return current.sources[qualifier]
        current = current.parent
    raise QueryRefused("column_not_allowed")


def _unqualified_sources(scope: Scope) -> Iterable[object]:
    current: Scope | None = scope
    while current is not None:
        if current.sources:
            return list(current.sources.values())
        current = current.parent
    return []


def _check_scope(scope: Scope, policy: ReadOnlyPolicy) -> None:
    for join in scope.expression.find_all(exp.Join):
        if join.args.get("using") or join.method.upper() == "NATURAL":
            raise QueryRefused("join_by_name_not_allowed")
    for column in scope.columns:
        if isinstance(column.this, exp.Star):
            continue  # t.* is checked with the stars below
        if column.table:
            sources = [_lookup(scope, column.table)]
        else:
            sources = list(_unqualified_sources(scope))
        lists = [_allowed(s, policy) for s in sources]
        if lists and all(a is not None and column.name not in a for a in lists):
            raise QueryRefused("column_not_allowed")
    if isinstance(scope.expression, exp.Select):
        for projection in scope.expression.expressions:
            if isinstance(projection, exp.Star):
                stars: list[object] = list(scope.sources.values())
            elif isinstance(projection, exp.Column) and isinstance(projection.this, exp.Star):
                stars = [_lookup(scope, projection.table)]
            else:
                continue
            if any(_allowed(s, policy) is not None for s in stars):
                raise QueryRefused("star_not_allowed")


def check_columns(tree: exp.Expr, policy: ReadOnlyPolicy) -> None:
    """Refuse a reference to a column outside its table's allow-list (module docstring)."""
    try:
        scopes = traverse_scope(tree)
    except SqlglotError:
        raise QueryRefused("unresolvable") from None
    for scope in scopes:
        _check_scope(scope, policy)
