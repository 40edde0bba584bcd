"""Forensic queries over the audit trail, read-only, in SQLite or PostgreSQL: one SQL text per query.

Contract:

* :class:`AuditQuery` is the checked filter; :func:`search_sql`, :func:`timeline_sql` and :func:`edge_sql`
  turn it into fixed SQL text for a :class:`~portcullis.audit.sql_dialect.Dialect` (SQLite's ``?`` and
  JSON1, PostgreSQL's ``%s`` and ``json``) plus bound values. Principal fields come from the whitelist
  :data:`PRINCIPAL_FIELDS`, so nothing a caller types reaches the SQL or a JSON path; every value is
  bound and compared for equality (no ``LIKE``: ``%``, ``_`` and backslashes are plain characters).
* They run through an :class:`~portcullis.audit.reader.AuditReader` (``reader.py``), on a read-only
  store; this module is pure (no I/O).
* Filters read ``fields`` as JSON; a record whose ``fields`` is not valid JSON (tampering) matches no
  filter in SQLite and fails the filtered query closed in PostgreSQL (``sql_dialect.py``); either way
  it still appears in an unfiltered search.
* Search does not verify: run ``verify`` first; what search returns is evidence only if the chain verifies.

Filters and the record layout (``docs/audit.md``): ``tool`` and ``principal`` exist on
``decision`` and ``rejected`` records only, so those filters never match ``outcome`` records
(use a timeline to see outcomes with their decisions). ``effect="deny"`` matches
``decision`` records that denied *and* ``rejected`` records (refused before a decision): both
are calls the gateway refused, which is what an investigator hunting a caller wants; add
``kind="decision"`` for policy denials only.

Cost: ``request_id`` has an index (and ``ts`` in PostgreSQL); other filters scan ``audit_record`` from
the newest record backwards and stop after ``limit`` matches, so a rare match in a large store is a full scan.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from portcullis.audit.record import KINDS, AuditRecord
from portcullis.audit.sql_dialect import Dialect

EFFECTS = frozenset({"allow", "deny", "require_approval"})
MAX_LIMIT = 100_000

_SCALAR_PRINCIPAL = ("client_id", "auth_method", "issuer", "issuer_name", "user_id", "agent_id", "session_id",
                     "source_app", "tenant")
_LIST_PRINCIPAL = ("roles", "scopes")
PRINCIPAL_FIELDS = frozenset(_SCALAR_PRINCIPAL + _LIST_PRINCIPAL)
"""Principal fields a query may filter on; ``roles`` and ``scopes`` match one member of the list."""

COLUMNS = "idx, ts, request_id, kind, fields, prev_hash, hash"

@dataclass(frozen=True, slots=True)
class AuditQuery:
    """What to look for; every given filter must match (AND). ``ValueError`` on a bad filter."""

    tool: str | None = None
    principal: Mapping[str, str] = field(default_factory=dict)
    since: float | None = None  # UNIX seconds, inclusive
    until: float | None = None  # UNIX seconds, inclusive
    effect: str | None = None
    kind: str | None = None
    request_id: str | None = None
    limit: int = 100

    def __post_init__(self) -> None:
        object.__setattr__(self, "principal", MappingProxyType(dict(self.principal)))  # frozen means frozen
        unknown = sorted(set(self.principal) - PRINCIPAL_FIELDS)
        if unknown:
            raise ValueError(f"unknown principal field {unknown[0]!r}; one of: {', '.join(sorted(PRINCIPAL_FIELDS))}")
        texts = [self.tool, self.request_id, *self.principal.values()]
        if not all(v is None or isinstance(v, str) for v in texts):
            raise ValueError("tool, request_id and principal values must be strings")
        if not all(v is None or _encodable(v) for v in texts):
            raise ValueError("tool, request_id and principal values must be valid Unicode (no lone surrogates)")
        if self.effect is not None and self.effect not in EFFECTS:
            raise ValueError(f"effect must be one of: {', '.join(sorted(EFFECTS))}")
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"kind must be one of: {', '.join(sorted(KINDS))}")
        if any(t is not None and not math.isfinite(t) for t in (self.since, self.until)):
            raise ValueError("since and until must be finite")
        if type(self.limit) is not int or not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def where(dialect: Dialect, *, tool: str | None = None, principal: Mapping[str, str] | None = None,
          since: float | None = None, until: float | None = None, effect: str | None = None, kind: str | None = None,
          request_id: str | None = None) -> tuple[str, list[object]]:
    """The WHERE clause (fixed text of ``dialect``) and its bound values, over ``dialect.rows``."""
    clauses: list[str] = []
    params: list[object] = []
    p = dialect.param

    def add(sql: str, *values: object) -> None:
        clauses.append(sql)
        params.extend(values)

    if request_id is not None:  # PostgreSQL text holds no NUL: such an id is in no row (and cannot be bound)
        add(*((f"request_id = {p}", request_id) if dialect.can_bind(request_id) else ("FALSE",)))
    if kind is not None:
        add(f"kind = {p}", kind)
    if since is not None:
        add(f"ts >= {p}", since)
    if until is not None:
        add(f"ts <= {p}", until)
    if tool is not None:
        add(f"kind IN ('decision', 'rejected', 'attempt') AND {dialect.text_at(('tool', 'name'))}",
            dialect.value(tool))
    for name, value in sorted((principal or {}).items()):  # names: AuditQuery's whitelist, never input
        at = ("principal", name)
        add(dialect.member_of(at) if name in _LIST_PRINCIPAL else dialect.text_at(at), dialect.value(value))
    if effect == "deny":
        add(f"((kind = 'decision' AND {dialect.text_at(('decision', 'effect'))}) OR kind = 'rejected')",
            dialect.value("deny"))
    elif effect is not None:
        add(f"kind = 'decision' AND {dialect.text_at(('decision', 'effect'))}", dialect.value(effect))
    return (" AND ".join(f"({c})" for c in clauses) or "TRUE"), params


def search_sql(dialect: Dialect, query: AuditQuery) -> tuple[str, list[object]]:
    """The newest ``query.limit`` records matching ``query``, newest first."""
    clause, params = where(dialect, tool=query.tool, principal=query.principal, since=query.since,
                           until=query.until, effect=query.effect, kind=query.kind, request_id=query.request_id)
    sql = (f"SELECT {COLUMNS} FROM ({dialect.rows}) AS r WHERE {clause} "  # noqa: S608 - fixed text, values bound
           f"ORDER BY idx DESC LIMIT {dialect.param}")
    return sql, [*params, query.limit]


def timeline_query(*, request_id: str | None = None, agent_id: str | None = None, since: float | None = None,
                   until: float | None = None, limit: int = 100) -> AuditQuery:
    """The checked filter of a timeline (``ValueError`` on a bad one): one request, or one agent's."""
    principal = {} if agent_id is None else {"agent_id": agent_id}
    return AuditQuery(principal=principal, since=since, until=until, request_id=request_id, limit=limit)


def timeline_sql(dialect: Dialect, query: AuditQuery) -> tuple[str, list[object]]:
    """Every record of the latest ``query.limit`` requests with a record matching ``query``, in index order."""
    clause, params = where(dialect, principal=query.principal, since=query.since, until=query.until,
                           request_id=query.request_id)
    sql = (f"WITH chosen AS (SELECT request_id, MAX(idx) AS last FROM ({dialect.rows}) AS r "  # noqa: S608 - fixed
           f"WHERE {clause} GROUP BY request_id ORDER BY last DESC LIMIT {dialect.param}) "
           f"SELECT {COLUMNS} FROM audit_record WHERE request_id IN (SELECT request_id FROM chosen) ORDER BY idx")
    return sql, [*params, query.limit]


def edge_sql(dialect: Dialect, *, newest: bool) -> str:
    """The first (or last) record whose time is in ``[since, until]`` (two bound values)."""
    p = dialect.param
    return (f"SELECT {COLUMNS} FROM audit_record WHERE {dialect.numeric_ts} "  # noqa: S608 - fixed text
            f"AND ts >= {p} AND ts <= {p} ORDER BY idx {'DESC' if newest else 'ASC'} LIMIT 1")


@dataclass(frozen=True, slots=True)
class RequestTimeline:
    """Every record of one request (decision or rejection, then outcome), in index order."""

    request_id: str
    records: tuple[AuditRecord, ...]

    def of_kind(self, kind: str) -> AuditRecord | None:
        """The first record of ``kind`` in this request, if any."""
        return next((r for r in self.records if r.kind == kind), None)


def group_requests(rows: list[AuditRecord]) -> list[RequestTimeline]:
    """Rows in index order as requests, ordered by their first index."""
    groups: dict[str, list[AuditRecord]] = {}
    for record in rows:  # dicts keep insertion order
        groups.setdefault(record.request_id, []).append(record)
    return [RequestTimeline(rid, tuple(records)) for rid, records in groups.items()]
