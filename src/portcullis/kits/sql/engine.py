"""The engine seam: what both database layers promise, and the result accounting they share.

An :class:`Engine` runs SQL that the kit has already checked (the ad-hoc tool's re-rendered text,
or a template's fixed text) and enforces the same allow-lists a second time with the database's
own machinery, plus time, row and size limits. Engines take SQL text, so they are the kit's inner
layer, not a tool's API: a tool exposes :class:`portcullis.kits.sql.kit.SqlKit` only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from portcullis.kits.sql.errors import SqlDeclarationError, SqlLimitExceeded

Params = Mapping[str, object] | Sequence[object]


@dataclass(frozen=True, slots=True)
class QueryLimits:
    """Per-query budgets. ``max_steps`` is SQLite's virtual-machine step budget (PostgreSQL has none)."""

    timeout_s: float = 5.0
    max_result_bytes: int = 1_000_000
    max_steps: int = 50_000_000

    def __post_init__(self) -> None:
        if not (0 < self.timeout_s <= 600 and 0 < self.max_result_bytes <= 1 << 30 and self.max_steps > 0):
            raise SqlDeclarationError("bad_limits")


@dataclass(frozen=True, slots=True)
class QueryResult:
    """Column names, rows, and whether rows past ``max_rows`` were left unread."""

    columns: tuple[str, ...]
    rows: tuple[tuple[object, ...], ...]
    truncated: bool


class Engine(Protocol):
    """A database layer; see the module docstring."""

    @property
    def dialect(self) -> str: ...

    async def fetch(self, sql: str, params: Params, max_rows: int) -> QueryResult: ...


def value_bytes(value: object) -> int:
    """A value's share of the result-size budget: its encoded length, 8 for a number, 4 for NULL."""
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    if value is None:
        return 4
    if isinstance(value, bool | int | float):
        return 8
    return len(str(value))


def collect(columns: Sequence[str], rows: Iterable[Sequence[object]], max_rows: int, max_bytes: int) -> QueryResult:
    """Take at most ``max_rows`` rows (reading one more tells truncation); refuse past ``max_bytes``."""
    kept: list[tuple[object, ...]] = []
    size = sum(len(c) for c in columns)
    truncated = False
    for row in rows:
        if len(kept) == max_rows:
            truncated = True
            break
        size += sum(value_bytes(v) for v in row)
        if size > max_bytes:
            raise SqlLimitExceeded("result_too_large")
        kept.append(tuple(row))
    return QueryResult(tuple(columns), tuple(kept), truncated)
