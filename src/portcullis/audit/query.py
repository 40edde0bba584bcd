"""Forensic search over the embedded SQLite audit store, read-only.

Contract:

* Every query opens the store with :meth:`SqliteAuditStore.open_readonly` (``mode=ro``): a
  search never creates, migrates or writes the file, and a missing or foreign file is
  :class:`~portcullis.audit.errors.AuditUnavailable`.
* The SQL is fixed text; every value is a bound parameter. Principal fields come from the
  whitelist :data:`PRINCIPAL_FIELDS`, so nothing a caller types reaches the SQL or a JSON path.
* Filters read ``fields`` with SQLite's JSON functions; a record whose ``fields`` is not valid
  JSON (tampering) matches no filter but still appears in an unfiltered search.
* Search does not verify: run ``verify`` first; what search returns is evidence only if the
  chain verifies.

Filters and the record layout (``docs/audit.md``): ``tool`` and ``principal`` exist on
``decision`` and ``rejected`` records only, so those filters never match ``outcome`` records
(use :func:`timeline` to see outcomes with their decisions). ``effect="deny"`` matches
``decision`` records that denied *and* ``rejected`` records (refused before a decision): both
are calls the gateway refused, which is what an investigator hunting a caller wants; add
``kind="decision"`` for policy denials only.

Cost: only ``request_id`` has an index; other filters scan ``audit_record`` from the newest
record backwards and stop after ``limit`` matches, so a rare match in a large store is a full scan.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from portcullis.audit.record import KINDS, AuditRecord
from portcullis.audit.store import SqliteAuditStore

EFFECTS = frozenset({"allow", "deny", "require_approval"})
MAX_LIMIT = 100_000

_SCALAR_PRINCIPAL = ("client_id", "auth_method", "issuer", "issuer_name", "user_id", "agent_id", "session_id",
                     "source_app", "tenant")
_LIST_PRINCIPAL = ("roles", "scopes")
PRINCIPAL_FIELDS = frozenset(_SCALAR_PRINCIPAL + _LIST_PRINCIPAL)
"""Principal fields a query may filter on; ``roles`` and ``scopes`` match one member of the list."""

# JSON is read through `j`, which is '{}' for a row whose fields are not valid JSON, so one
# tampered row cannot make json_extract abort the whole query.
_ROWS = ("SELECT idx, ts, request_id, kind, fields, prev_hash, hash, "
         "CASE WHEN json_valid(fields) THEN fields ELSE '{}' END AS j FROM audit_record")
_COLUMNS = "idx, ts, request_id, kind, fields, prev_hash, hash"
_PRINCIPAL_SQL = {
    **{name: f"json_extract(j, '$.principal.{name}') = ?" for name in _SCALAR_PRINCIPAL},
    **{name: f"EXISTS (SELECT 1 FROM json_each(j, '$.principal.{name}') WHERE value = ?)"  # noqa: S608 - names are constants above
       for name in _LIST_PRINCIPAL},
}


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
        if self.effect is not None and self.effect not in EFFECTS:
            raise ValueError(f"effect must be one of: {', '.join(sorted(EFFECTS))}")
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"kind must be one of: {', '.join(sorted(KINDS))}")
        if any(t is not None and not math.isfinite(t) for t in (self.since, self.until)):
            raise ValueError("since and until must be finite")
        if type(self.limit) is not int or not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}")


def _where(*, tool: str | None = None, principal: Mapping[str, str] | None = None, since: float | None = None,
           until: float | None = None, effect: str | None = None, kind: str | None = None,
           request_id: str | None = None) -> tuple[str, list[object]]:
    """The WHERE clause (fixed text from the tables above) and its bound values."""
    clauses: list[str] = []
    params: list[object] = []

    def add(sql: str, *values: object) -> None:
        clauses.append(sql)
        params.extend(values)

    if request_id is not None:
        add("request_id = ?", request_id)
    if kind is not None:
        add("kind = ?", kind)
    if since is not None:
        add("ts >= ?", since)
    if until is not None:
        add("ts <= ?", until)
    if tool is not None:
        add("kind IN ('decision', 'rejected', 'attempt') AND json_extract(j, '$.tool.name') = ?", tool)
    for name, value in sorted((principal or {}).items()):
        add(_PRINCIPAL_SQL[name], value)  # KeyError impossible: AuditQuery whitelists the names
    if effect == "deny":
        add("((kind = 'decision' AND json_extract(j, '$.decision.effect') = 'deny') OR kind = 'rejected')")
    elif effect is not None:
        add("kind = 'decision' AND json_extract(j, '$.decision.effect') = ?", effect)
    return (" AND ".join(f"({c})" for c in clauses) or "1"), params


async def search(store_path: str | Path, query: AuditQuery) -> list[AuditRecord]:
    """The newest ``query.limit`` records matching ``query``, newest first."""
    where, params = _where(tool=query.tool, principal=query.principal, since=query.since, until=query.until,
                           effect=query.effect, kind=query.kind, request_id=query.request_id)
    sql = f"SELECT {_COLUMNS} FROM ({_ROWS}) WHERE {where} ORDER BY idx DESC LIMIT ?"  # noqa: S608 - fixed text, values bound
    async with await SqliteAuditStore.open_readonly(store_path) as store:
        return await store.select_records(sql, [*params, query.limit])


@dataclass(frozen=True, slots=True)
class RequestTimeline:
    """Every record of one request (decision or rejection, then outcome), in index order."""

    request_id: str
    records: tuple[AuditRecord, ...]

    def of_kind(self, kind: str) -> AuditRecord | None:
        """The first record of ``kind`` in this request, if any."""
        return next((r for r in self.records if r.kind == kind), None)


async def timeline(store_path: str | Path, *, request_id: str | None = None, agent_id: str | None = None,
                   since: float | None = None, until: float | None = None,
                   limit: int = 100) -> list[RequestTimeline]:
    """The latest ``limit`` requests matching the filters, oldest first, each with all its records.

    A request matches when any of its records matches (``agent_id`` is on decision and
    rejected records only); its other records (the outcome) come with it even when they fall
    outside ``since``/``until``. With no filter at all: the latest ``limit`` requests.
    """
    principal = {} if agent_id is None else {"agent_id": agent_id}
    checked = AuditQuery(principal=principal, since=since, until=until, request_id=request_id, limit=limit)
    where, params = _where(principal=checked.principal, since=since, until=until, request_id=request_id)
    sql = (f"WITH chosen AS (SELECT request_id, MAX(idx) AS last FROM ({_ROWS}) WHERE {where} "  # noqa: S608 - fixed text, values bound
           "GROUP BY request_id ORDER BY last DESC LIMIT ?) "
           f"SELECT {_COLUMNS} FROM audit_record WHERE request_id IN (SELECT request_id FROM chosen) ORDER BY idx")
    async with await SqliteAuditStore.open_readonly(store_path) as store:
        rows = await store.select_records(sql, [*params, checked.limit])
    groups: dict[str, list[AuditRecord]] = {}
    for record in rows:  # dicts keep insertion order: groups come out ordered by their first index
        groups.setdefault(record.request_id, []).append(record)
    return [RequestTimeline(rid, tuple(records)) for rid, records in groups.items()]
