"""The values of an incident report (``incident.py`` builds them, ``incident_render.py`` shows them).

Everything is frozen; :meth:`IncidentReport.to_json` is plain JSON data. Strings in a report
came from requesters and upstreams (tool names, principal ids, arguments, reasons): a renderer
must escape them for its medium.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

NOT_RECORDED = "not recorded"
"""What the report says where the audit trail holds nothing: it never guesses."""

CHAIN_VERIFIED, CHAIN_FAILED, CHAIN_UNSIGNED, CHAIN_EMPTY = "verified", "FAILED", "unsigned", "empty"


@dataclass(frozen=True, slots=True)
class IncidentFilter:
    """What the responder asked for; every given filter must match (AND). ``ValueError`` if malformed."""

    since: float
    until: float | None = None
    agent: str | None = None
    user: str | None = None
    tool: str | None = None
    request_id: str | None = None
    tenant: str | None = None

    def __post_init__(self) -> None:
        if not all(t is None or (isinstance(t, float | int) and math.isfinite(t)) for t in (self.since, self.until)):
            raise ValueError("since and until must be finite times")
        if self.until is not None and self.until < self.since:
            raise ValueError("until is before since")
        for value in (self.agent, self.user, self.tool, self.request_id, self.tenant):
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError("a filter value must be a non-empty string")

    def unfiltered(self) -> bool:
        """No filter but the time window."""
        return all(v is None for v in (self.agent, self.user, self.tool, self.request_id, self.tenant))


@dataclass(frozen=True, slots=True)
class ChainRange:
    """The part of the chain the report read and the verifier's verdict on it.

    ``status`` is ``verified`` (the chain from its start through ``last_index + 1`` verifies and
    signed checkpoints exist), ``FAILED`` (at ``first_bad_index``: ``reason``), ``unsigned``
    (self-consistent, but no signed checkpoint: not evidence) or ``empty``.
    """

    status: str
    reason: str
    first_index: int | None
    first_hash: str | None
    last_index: int | None
    last_hash: str | None
    records_checked: int
    first_bad_index: int | None = None
    checkpoints: tuple[int, ...] = ()  # verified signed checkpoints inside the range: the segments' ends
    signed_through: int | None = None  # the range is covered by a verified signature up to this index
    covering_checkpoint: int | None = None  # the first verified checkpoint at or after last_index
    pruned_through: int | None = None
    later_failure: tuple[int | None, str] | None = None  # the chain breaks after the range: (index, reason)

    @property
    def ok(self) -> bool:
        return self.status in (CHAIN_VERIFIED, CHAIN_EMPTY)


@dataclass(frozen=True, slots=True)
class BlastRadius:
    tools: tuple[str, ...]
    services: tuple[str, ...]
    agents: tuple[str, ...]
    users: tuple[str, ...]
    clients: tuple[str, ...]
    tenants: tuple[str, ...]
    classifications: tuple[str, ...]
    effects: tuple[tuple[str, int], ...]  # (effect or "rejected", calls)


@dataclass(frozen=True, slots=True)
class VersionSeen:
    """A policy version that decided calls in the window, and when."""

    version: str
    decisions: int
    first_ts: float
    last_ts: float


@dataclass(frozen=True, slots=True)
class PinSeen:
    """A tool definition in force: its pin (``tool.definition_hash``) as decision records name it."""

    tool: str
    definition_hash: str
    service: str
    decisions: int


@dataclass(frozen=True, slots=True)
class SpawnSeen:
    """One ``spawn`` record: a stdio child's start and its confinement."""

    index: int
    ts: float
    before_window: bool  # the last spawn before the window: what was in force when it opened
    outcome: str
    launcher: str
    program: str
    backend: str
    network: str
    unsafe: tuple[str, ...]
    reason: str | None


@dataclass(frozen=True, slots=True)
class BuildSeen:
    """A build identity in force (``service_identity`` records, consecutive equal ones folded into one).

    Upstream-reported text (``server_name``, ``server_version``, ``protocol_version``) was escaped
    and bounded when recorded; it is still the service's word, not proof.
    """

    index: int  # the first record of this identity
    ts: float
    before_window: bool  # the last identity recorded before the window: in force when it opened
    records: int  # consecutive (re)connects that recorded this same identity
    transport: str
    server_name: str
    server_version: str
    protocol_version: str
    executable: str | None  # stdio: the resolved path
    executable_sha256: str | None
    script: str | None  # stdio, an interpreter's script
    script_sha256: str | None
    module: str | None  # stdio, a module service
    origin: str | None  # HTTP: scheme://host[:port]


@dataclass(frozen=True, slots=True)
class ServiceIdentity:
    """What the trail says about a service: versions it reported, its build identities, its spawns."""

    service: str
    reported_versions: tuple[str, ...]  # serverInfo.version the service reported (decision tool.service_version)
    build: str  # the identity in force, one line, or NOT_RECORDED (no service_identity record)
    builds: tuple[BuildSeen, ...]  # the one in force when the window opened, then every change in it
    build_changed: bool  # more than one distinct identity: the service changed during the window
    spawns: tuple[SpawnSeen, ...]


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    index: int
    ts: float
    request_id: str
    kind: str  # call, rejected, approval, attempt, outcome (of a decision before the window)
    tool: str | None
    service: str | None
    who: tuple[str | None, str | None, str | None, str | None]  # agent, user, client, tenant
    effect: str | None
    rule_ids: tuple[str, ...]
    reasons: tuple[str, ...]
    policy_version: str | None
    approval_events: tuple[str, ...]
    arguments: Any  # as recorded: sensitive values are keyed hashes already
    arguments_hashed: int
    redactions: int  # values the output filter redacted
    findings: tuple[str, ...]
    outcome: str | None
    error_code: Any
    classification: str | None


@dataclass(frozen=True, slots=True)
class IncidentReport:
    filter: IncidentFilter
    chain: ChainRange
    blast_radius: BlastRadius
    policy_versions: tuple[VersionSeen, ...]
    pins: tuple[PinSeen, ...]
    services: tuple[ServiceIdentity, ...]
    timeline: tuple[TimelineEntry, ...]
    records_in_window: int
    records_matched: int
    manifest_set_version: str = NOT_RECORDED  # records name each tool's pin, not a manifest set version

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["chain"]["ok"] = self.chain.ok
        out["blast_radius"]["effects"] = dict(self.blast_radius.effects)
        for entry in out["timeline"]:
            entry["who"] = dict(zip(("agent", "user", "client", "tenant"), entry["who"], strict=True))
        return out
