"""What an ad-hoc read-only query may touch: dialect, tables (and columns), functions.

Declared once by the tool author, validated at declaration and frozen. An empty table list is a
declaration error, never "allow everything". Names are compared lower-case, the way both engines
fold unquoted identifiers (SQLite compares case-insensitively; PostgreSQL folds to lower case).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from portcullis.kits.sql.errors import SqlDeclarationError

Dialect = Literal["sqlite", "postgres"]
DIALECTS: frozenset[str] = frozenset({"sqlite", "postgres"})

IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")

# Scalar and aggregate functions that read nothing but their arguments and are cheap. ``like`` and
# ``glob`` are here because SQLite runs the LIKE/GLOB operators as functions (its authorizer sees them).
DEFAULT_FUNCTIONS: frozenset[str] = frozenset(
    {
        "count", "sum", "avg", "min", "max", "total",
        "lower", "upper", "length", "trim", "ltrim", "rtrim", "substr", "substring", "replace",
        "abs", "round", "coalesce", "ifnull", "nullif", "like", "glob",
    }
)  # fmt: skip


def _name(value: str, what: str) -> str:
    name = value.lower()
    if not IDENTIFIER.fullmatch(name):
        raise SqlDeclarationError(f"bad_{what}_name")
    return name


@dataclass(frozen=True, slots=True)
class ReadOnlyPolicy:
    """The allow-lists of the ad-hoc query tool.

    ``tables`` maps each allowed table to its allowed columns, or ``None`` for all of them.
    ``allow_cte``: a top-level, non-recursive ``WITH`` of plain SELECTs (docs/kits.md, "SQL kit").
    """

    dialect: Dialect
    tables: Mapping[str, frozenset[str] | None]
    functions: frozenset[str] = DEFAULT_FUNCTIONS
    allow_cte: bool = True
    max_sql_chars: int = 10_000
    _restricted: bool = field(default=False, repr=False)

    @classmethod
    def build(
        cls,
        dialect: str,
        tables: Mapping[str, Iterable[str] | None],
        *,
        functions: Iterable[str] = DEFAULT_FUNCTIONS,
        allow_cte: bool = True,
        max_sql_chars: int = 10_000,
    ) -> ReadOnlyPolicy:
        """Validate and freeze a policy; raises :class:`SqlDeclarationError` on any mistake."""
        if dialect not in DIALECTS:
            raise SqlDeclarationError("unknown_dialect")
        if not tables:
            raise SqlDeclarationError("no_tables")  # an empty allow-list is an error, not "allow all"
        frozen: dict[str, frozenset[str] | None] = {}
        for table, columns in tables.items():
            if isinstance(columns, str):
                raise SqlDeclarationError("columns_not_a_list")
            cols = None if columns is None else frozenset(_name(c, "column") for c in columns)
            if cols is not None and not cols:
                raise SqlDeclarationError("no_columns")
            frozen[_name(table, "table")] = cols
        funcs = frozenset(_name(f, "function") for f in functions)
        if not 0 < max_sql_chars <= 1_000_000:
            raise SqlDeclarationError("bad_max_sql_chars")
        return cls(
            dialect,  # type: ignore[arg-type]  # checked against DIALECTS above
            MappingProxyType(frozen),
            funcs,
            allow_cte,
            max_sql_chars,
            any(c is not None for c in frozen.values()),
        )

    @property
    def restricts_columns(self) -> bool:
        """True when at least one table allows only some of its columns."""
        return self._restricted
