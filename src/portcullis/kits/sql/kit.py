"""The SQL kit a tool uses: named templates, and (optionally) a read-only ad-hoc query.

::

    kit = SqlKit(SqliteReadOnly(path, policy), policy, [declare_template(...)])
    await kit.run("customer_by_name", {"name": "O'Brien"})     # template: arguments only
    await kit.query("SELECT name FROM customers LIMIT 5")      # ad-hoc: parser layer, then engine

Both paths end in the same engine, which enforces the policy a second time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from portcullis.kits.sql.engine import Engine, QueryResult
from portcullis.kits.sql.errors import ArgumentRefused, SqlDeclarationError
from portcullis.kits.sql.policy import ReadOnlyPolicy
from portcullis.kits.sql.select_check import check_select
from portcullis.kits.sql.templates import MAX_ROWS_CEILING, QueryTemplate


class SqlKit:
    """Templates and the ad-hoc query over one engine and one policy."""

    def __init__(
        self, engine: Engine, policy: ReadOnlyPolicy, templates: Sequence[QueryTemplate] = (), *, max_rows: int = 100
    ) -> None:
        if engine.dialect != policy.dialect:
            raise SqlDeclarationError("dialect_mismatch")
        if not 0 < max_rows <= MAX_ROWS_CEILING:
            raise SqlDeclarationError("bad_max_rows")
        by_name = {t.name: t for t in templates}
        if len(by_name) != len(templates):
            raise SqlDeclarationError("duplicate_template")
        if any(not t.tables <= policy.tables.keys() for t in templates):
            raise SqlDeclarationError("template_outside_policy")  # declared against another policy
        self._engine = engine
        self._policy = policy
        self._templates = by_name
        self._max_rows = max_rows

    @property
    def templates(self) -> Mapping[str, QueryTemplate]:
        return dict(self._templates)

    async def run(self, name: str, arguments: Mapping[str, object]) -> QueryResult:
        """Run the template ``name`` with ``arguments`` (checked, then bound by the driver)."""
        template = self._templates.get(name)
        if template is None:
            raise ArgumentRefused("unknown_template")
        bound = template.bind(arguments)
        return await self._engine.fetch(bound.sql, bound.params, bound.max_rows)

    async def query(self, sql: object) -> QueryResult:
        """Run caller-written SQL if it is one allowed SELECT; only the re-rendered text runs."""
        checked = check_select(sql, self._policy)
        return await self._engine.fetch(checked.sql, (), self._max_rows)
