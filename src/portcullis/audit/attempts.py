"""``attempt`` records: refused requests, aggregated so a flood cannot grow the trail without bound.

Every request to ``/mcp`` refused before it reached the pipeline (no or a bad credential, a wrong
Host or Origin, an oversized or malformed body, a missing session, a protocol-level refusal such
as too many headers) is one :class:`Attempt`. The :class:`AttemptAggregator` (pure, clock passed
in) keys them by (source, reason, status, method, tool, who) where *source* is the peer address
(IPv6 per /64) and *who* the principal key or the keyed hash of the presented token:

* the first attempt of a key in a window is an ``attempt`` record with ``count`` 1, written at once;
* repeats of that key within ``window_s`` of its first are counted, and written as one record with
  ``count``, ``first_ts`` and ``last_ts`` when the window closes (or at clean stop);
* at most ``max_keys`` keys are tracked; a new key beyond that is folded into an overflow key per
  reason and status (source ``"*"``, nothing else named), still counted.

So the counts of the records always add up to the attempts seen, and a window writes at most
``2 * (max_keys + overflow keys)`` records. :class:`AttemptRecorder` is the I/O edge: ``note`` is
synchronous and O(1) (the request path never waits for the store); its ``run`` task writes what
the aggregator hands out through the :class:`~portcullis.audit.writer.AuditWriter`. A write that
fails is counted in the audit-failure metric and logged with the attempts it carried.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from portcullis.audit.errors import AuditUnavailable

log = logging.getLogger("portcullis.audit")

KIND = "attempt"
#: The closed set of reasons an attempt is refused for.
REASONS = (
    "missing_credentials", "invalid_token", "insufficient_scope", "revoked", "auth_unavailable",
    "host_refused", "origin_refused", "method_not_allowed", "unsupported_media_type", "not_acceptable",
    "body_too_large", "parse_error", "invalid_request", "invalid_params", "header_mismatch",
    "unsupported_version", "missing_session", "unknown_session", "header_limits", "header_timeout",
    "body_timeout", "too_many_connections",
)
_REASON_SET = frozenset(REASONS)
MAX_NAME_CHARS = 128
MAX_DETAIL_CHARS = 64
OVERFLOW_SOURCE = "*"
#: How the method and tool were learnt: request headers, the parsed body, or not at all.
NAMED = ("headers", "body", "unread")


def clip(value: object, limit: int = MAX_NAME_CHARS) -> str | None:
    """``value`` as data: a string cut to ``limit`` characters, anything else ``None``."""
    return value[:limit] if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One refused request. ``who`` is the principal key or token hash the key correlates on."""

    source: str | None
    reason: str
    status: int
    method: str | None = None
    tool: str | None = None
    named: str = "unread"
    principal: Mapping[str, Any] | None = None
    token_hash: str | None = None
    detail: str | None = None
    who: str | None = None

    def __post_init__(self) -> None:
        if self.reason not in _REASON_SET:
            raise ValueError("unknown attempt reason")
        if self.named not in NAMED:
            raise ValueError("unknown attempt naming")

    def key(self) -> tuple[Any, ...]:
        return (self.source, self.reason, self.status, self.method, self.tool, self.who)


def attempt_fields(attempt: Attempt, *, count: int, first_ts: float, last_ts: float,
                   window_s: float) -> dict[str, Any]:
    """The ``fields`` of an ``attempt`` record (layout in docs/audit.md)."""
    return {"source": attempt.source, "reason": attempt.reason, "status": attempt.status,
            "method": attempt.method, "tool": None if attempt.tool is None else {"name": attempt.tool},
            "named": attempt.named,
            "principal": None if attempt.principal is None else dict(attempt.principal),
            "token_hash": attempt.token_hash, "detail": attempt.detail,
            "count": count, "first_ts": first_ts, "last_ts": last_ts, "window_s": window_s}


def overflow_of(attempt: Attempt) -> Attempt:
    """The overflow key an attempt is folded into when the key table is full."""
    return Attempt(OVERFLOW_SOURCE, attempt.reason, attempt.status)


@dataclass(slots=True)
class _Slot:
    attempt: Attempt
    opened: float  # the window closes at opened + window_s
    repeats: int = 0
    first_repeat: float = 0.0
    last_repeat: float = 0.0


class AttemptAggregator:
    """Pure bookkeeping: which attempt records are due. Event-loop thread only."""

    def __init__(self, *, window_s: float = 10.0, max_keys: int = 10_000) -> None:
        if window_s <= 0 or max_keys < 1:
            raise ValueError("window_s must be > 0 and max_keys >= 1")
        self.window_s, self.max_keys = window_s, max_keys
        self._slots: dict[tuple[Any, ...], _Slot] = {}  # insertion order = opening order
        self._overflow: dict[tuple[Any, ...], _Slot] = {}
        self._due: deque[dict[str, Any]] = deque()
        self.seen = 0  # attempts observed (for tests and the operator)

    def observe(self, attempt: Attempt, now: float) -> None:
        """Count one attempt: a new key's first is due at once, a repeat waits for its window."""
        self.seen += 1
        key = attempt.key()
        slots = self._slots
        slot = slots.get(key)
        if slot is None and len(slots) >= self.max_keys:
            attempt = overflow_of(attempt)
            key = attempt.key()
            slots = self._overflow
            slot = slots.get(key)
        if slot is None:
            slots[key] = _Slot(attempt, now)
            self._due.append(attempt_fields(attempt, count=1, first_ts=now, last_ts=now, window_s=self.window_s))
            return
        if slot.repeats == 0:
            slot.first_repeat = now
        slot.repeats += 1
        slot.last_repeat = now

    def close_windows(self, now: float, *, every: bool = False) -> None:
        """Close the windows that ended by ``now`` (all of them with ``every``): their repeats become due."""
        for slots in (self._slots, self._overflow):
            closed = []
            for key, slot in slots.items():  # opening order: stop at the first window still open
                if not every and slot.opened + self.window_s > now:
                    break
                closed.append(key)
            for key in closed:
                slot = slots.pop(key)
                if slot.repeats:
                    self._due.append(attempt_fields(slot.attempt, count=slot.repeats, first_ts=slot.first_repeat,
                                                    last_ts=slot.last_repeat, window_s=self.window_s))

    def take(self, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` due records' fields, oldest first."""
        out: list[dict[str, Any]] = []
        while self._due and len(out) < limit:
            out.append(self._due.popleft())
        return out

    def pending(self) -> int:
        return len(self._due)

    def keys(self) -> int:
        return len(self._slots) + len(self._overflow)


class AttemptHooks(Protocol):
    """What the recorder reports (``GatewayMetrics`` is one)."""

    def attempt(self, reason: str) -> None: ...
    def audit_record(self, kind: str) -> None: ...
    def audit_failure(self) -> None: ...


class NullAttemptHooks:
    def attempt(self, reason: str) -> None:
        pass

    def audit_record(self, kind: str) -> None:
        pass

    def audit_failure(self) -> None:
        pass


class AttemptSink(Protocol):
    """What the transport needs: count an attempt, and hash a presented credential for correlation."""

    def note(self, attempt: Attempt) -> None: ...
    def token_hash(self, credential: str) -> str: ...


TOKEN_HASH_HEX = 16


def token_hash(audit_key: bytes, credential: str) -> str:
    """A short keyed hash of a presented credential: the same token correlates, nothing of it is readable."""
    digest = hmac.new(audit_key, credential.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()
    return f"hmac-sha256:{digest[:TOKEN_HASH_HEX]}"


class RecordWriter(Protocol):
    async def record(self, kind: str, request_id: str, fields: Mapping[str, Any]) -> Any: ...


_BATCH = 256


class AttemptRecorder:
    """Feeds attempts to the aggregator (sync, O(1)) and writes due records in a background task."""

    def __init__(self, writer: RecordWriter, *, audit_key: bytes, clock: Callable[[], float],
                 window_s: float = 10.0, max_keys: int = 10_000, hooks: AttemptHooks | None = None) -> None:
        self._writer, self._clock, self._key = writer, clock, audit_key
        self._hooks: AttemptHooks = hooks or NullAttemptHooks()
        self.aggregator = AttemptAggregator(window_s=window_s, max_keys=max_keys)
        self._wake: anyio.Event | None = None

    def note(self, attempt: Attempt) -> None:
        """Count one refused request; never raises into the refusal path, never waits."""
        try:
            self._hooks.attempt(attempt.reason)
            self.aggregator.observe(attempt, self._clock())
            if self._wake is not None and self.aggregator.pending():
                self._wake.set()
        except Exception:  # a bug here must not turn a refusal into a 500
            log.exception("attempt could not be counted")

    def token_hash(self, credential: str) -> str:
        return token_hash(self._key, credential)

    def refused(self, source: str | None, reason: str, status: int) -> None:
        """The :class:`~portcullis.transport.http_guard.RefusalObserver` interface (protocol-level refusals)."""
        self.note(Attempt(source, reason, status))

    async def flush(self, *, every: bool = False) -> None:
        """Close the windows that ended (all with ``every``) and write everything due."""
        self.aggregator.close_windows(self._clock(), every=every)
        while True:
            batch = self.aggregator.take(_BATCH)
            if not batch:
                return
            async with anyio.create_task_group() as tg:  # concurrent: one group commit for the batch
                for fields in batch:
                    tg.start_soon(self._write, fields)

    async def run(self, tick_s: float = 1.0) -> None:
        """Write firsts as they come and repeats when their window closes; flush all at stop."""
        try:
            while True:
                self._wake = anyio.Event()
                if not self.aggregator.pending():
                    with anyio.move_on_after(min(tick_s, self.aggregator.window_s)):
                        await self._wake.wait()
                await self.flush()
        finally:
            self._wake = None
            with anyio.CancelScope(shield=True):
                await self.flush(every=True)

    async def _write(self, fields: dict[str, Any]) -> None:
        try:
            await self._writer.record(KIND, f"attempt-{uuid.uuid4().hex}", fields)
        except (AuditUnavailable, ValueError) as exc:
            self._hooks.audit_failure()
            log.error("attempt record not written", extra={"fields": {
                "reason": fields["reason"], "status": fields["status"], "count": fields["count"],
                "error": type(exc).__name__}})
            return
        self._hooks.audit_record(KIND)
