"""Query templates: SQL declared once by the tool author, called with typed arguments only.

:func:`declare_template` checks the SQL at declaration (start-up), with the same parser layer as
the ad-hoc tool and the same policy, plus: every ``:name`` placeholder is a declared parameter and
every declared parameter is used. The rendered SQL is fixed then; a call supplies only a mapping
of argument values, which :meth:`QueryTemplate.bind` checks and the driver binds — there is no
way to pass SQL text at call time. SQLite binds ``:name`` by name; PostgreSQL gets ``$n`` with an
explicit cast to the declared type, so the server never infers a type from a value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlglot import exp

from portcullis.kits.sql.errors import ArgumentRefused, QueryRefused, SqlDeclarationError
from portcullis.kits.sql.params import PG_CASTS, Param, check_declaration, coerce
from portcullis.kits.sql.policy import IDENTIFIER, ReadOnlyPolicy
from portcullis.kits.sql.select_check import check_tree, render

MAX_ROWS_CEILING = 100_000


@dataclass(frozen=True, slots=True)
class BoundQuery:
    """Rendered SQL and the values to bind: a mapping (SQLite, by name) or a sequence (PostgreSQL, ``$n``)."""

    sql: str
    params: Mapping[str, object] | Sequence[object]
    max_rows: int


@dataclass(frozen=True, slots=True)
class QueryTemplate:
    """A declared template; build with :func:`declare_template`."""

    name: str
    sql: str
    params: tuple[Param, ...]
    slots: tuple[str, ...]  # PostgreSQL: the parameter name behind each $n; SQLite: empty (bound by name)
    max_rows: int
    tables: frozenset[str]

    def bind(self, arguments: Mapping[str, object]) -> BoundQuery:
        """Check every argument against its declaration; raise :class:`ArgumentRefused` on any problem."""
        if not isinstance(arguments, Mapping):
            raise ArgumentRefused("not_an_object")
        declared = {p.name: p for p in self.params}
        if any(key not in declared for key in arguments):
            raise ArgumentRefused("unknown_argument")
        values: dict[str, object] = {}
        for param in self.params:
            if param.name not in arguments and not param.nullable:
                raise ArgumentRefused("missing_argument")
            values[param.name] = coerce(param, arguments.get(param.name))
        if self.slots:
            return BoundQuery(self.sql, tuple(values[name] for name in self.slots), self.max_rows)
        return BoundQuery(self.sql, values, self.max_rows)


def declare_template(
    name: str, sql: str, params: Sequence[Param], *, policy: ReadOnlyPolicy, max_rows: int = 100
) -> QueryTemplate:
    """Validate a template against ``policy``; raise :class:`SqlDeclarationError` if anything is wrong."""
    if not isinstance(name, str) or not IDENTIFIER.fullmatch(name):
        raise SqlDeclarationError("bad_template_name")
    if not 0 < max_rows <= MAX_ROWS_CEILING:
        raise SqlDeclarationError("bad_max_rows")
    for param in params:
        check_declaration(param)
    declared = {p.name: p for p in params}
    if len(declared) != len(params):
        raise SqlDeclarationError("duplicate_param")
    try:
        tree, tables = check_tree(sql, policy, placeholders=True)
    except QueryRefused as exc:
        raise SqlDeclarationError(f"template_{exc.reason}") from None
    used = {str(p.name) for p in tree.find_all(exp.Placeholder)}
    if used != set(declared):
        raise SqlDeclarationError("placeholders_do_not_match_params")
    slots: tuple[str, ...] = ()
    if policy.dialect == "postgres":
        order = tuple(sorted(used))
        numbers = {n: i + 1 for i, n in enumerate(order)}

        def to_parameter(node: exp.Expr) -> exp.Expr:
            if isinstance(node, exp.Placeholder):
                number = exp.Parameter(this=exp.Literal.number(numbers[str(node.name)]))
                return exp.cast(number, PG_CASTS[declared[str(node.name)].type])
            return node

        tree = tree.transform(to_parameter)
        slots = order
    return QueryTemplate(name, render(tree, policy.dialect), tuple(params), slots, max_rows, tables)
