"""The push channel: server-to-client requests to a 2025-era caller, on its call's own SSE stream.

While a 2025-era (session) caller's ``tools/call`` runs, the gateway may need to ask that caller
something: an upstream pushed ``sampling/createMessage``, ``elicitation/create`` or ``roots/list``
mid-call (:mod:`portcullis.upstream.client_relay`), or the gateway bridges an ``input_required``
result for it. A 2025-era server sends such a request as an SSE event on the stream answering the
call (the only back-channel this gateway keeps: GET streams are not served), and the caller answers
with a separate POST carrying a JSON-RPC response.

The rules, in the order the code follows them:

1. **Only on the call's own stream.** :class:`CallPush` is made per call by the transport and made
   current (:data:`PUSH`) while the call runs. Without ``text/event-stream`` in the caller's
   ``Accept`` it has no stream (``deliver`` is None): the client request is refused (``no_stream``).
2. **Bounded.** At most ``max_pending_per_call`` requests wait at once and ``max_requests_per_call``
   are asked per call; at most ``max_pending`` wait on this replica. Each waits ``timeout_s`` at most
   (``timeout``); the call ending cancels what still waits (``call_ended``).
3. **Unguessable ids.** Each request gets a fresh id (``pcr-`` and 192 random bits), never the
   upstream's, so a caller cannot answer a request it was not sent, by guessing or replay.
4. **Answers are matched, never guessed.** :meth:`PushRegistry.answer` takes a POSTed JSON-RPC
   response: it settles a waiting request only when the id is one this replica issued and still
   waits for, *and* it came on the same sealed session *and* from the same principal. Anything else
   (unknown id, another session, another principal, a duplicate, a late answer after a timeout or
   after the call ended) is dropped and counted; the transport answers every response POST alike
   (202), so a caller learns nothing from the status.
5. **Checked before it goes anywhere.** An answer from the right caller that is too large
   (``max_answer_bytes``), malformed for its method (:mod:`.push_answers`) or a JSON-RPC error
   settles the request as refused, so the upstream gets an error at once instead of waiting.

**Replicas.** The waiting request lives in the memory of the replica holding the call's stream, so
the caller's answer must reach that replica: a caller behind a load balancer without session
affinity may have its answer land on another replica, where it is an unknown id (dropped, counted)
and the request times out. Routing answers across replicas (cluster mode) is a later issue.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import anyio

from portcullis.notifications import ANSWER_OUTCOMES as ANSWER_OUTCOMES  # the metric's closed label set
from portcullis.transport.push_answers import MalformedAnswer, checked_answer

#: why a client request was not answered by the caller (the push channel's part of the refusal reasons)
PUSH_REFUSALS = frozenset({"no_stream", "call_ended", "too_many_pending", "too_many_requests", "busy",
                           "backpressure", "timeout", "answer_too_large", "answer_malformed", "caller_error"})
ID_PREFIX = "pcr-"
MAX_RECORDS = 64  # client requests recorded per call (the outcome record); more are counted only


class PushRefused(Exception):
    """The caller was not asked, or did not answer usefully; ``reason`` is one of :data:`PUSH_REFUSALS`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PushBounds:
    """Bounds on server-to-client requests (per call and per replica)."""

    max_pending_per_call: int = 4
    max_requests_per_call: int = 16
    max_answer_bytes: int = 256 * 1024
    timeout_s: float = 60.0
    max_pending: int = 1024
    remembered: int = 4096  # finished ids kept, only to count duplicate and late answers apart


def session_hash(session_id: str | None) -> str:
    """What a waiting request keeps of the sealed session id it was sent on."""
    return hashlib.sha256((session_id or "").encode()).hexdigest()


class _Pending:
    __slots__ = ("answer", "done", "failure", "method", "principal", "session")

    def __init__(self, method: str, session: str, principal: str) -> None:
        self.method, self.session, self.principal = method, session, principal
        self.done = anyio.Event()
        self.answer: dict[str, Any] | None = None
        self.failure: str | None = None


class PushRegistry:
    """This replica's waiting client requests, by gateway-issued id; one per gateway app."""

    def __init__(self, bounds: PushBounds = PushBounds(), *,
                 answer_counted: Callable[[str], None] | None = None,
                 request_counted: Callable[[str, str], None] | None = None) -> None:
        self.bounds = bounds
        self._pending: dict[str, _Pending] = {}
        self._finished: OrderedDict[str, str] = OrderedDict()
        self._answer_counted = answer_counted
        self.request_counted = request_counted  # (kind, outcome) of each client request

    def call(self, *, session_id: str | None, principal_key: str, declared: frozenset[str]) -> CallPush:
        """The push channel of one call, bound to the caller's sealed session and principal."""
        return CallPush(self, session_hash(session_id), principal_key, declared)

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def answer(self, value: Mapping[str, Any], *, session_id: str | None, principal_key: str, size: int) -> str:
        """Route one POSTed JSON-RPC response (see the module docstring); returns its outcome."""
        outcome = self._route(value, session_hash(session_id), principal_key, size)
        if self._answer_counted is not None:
            self._answer_counted(outcome)
        return outcome

    def _route(self, value: Mapping[str, Any], session: str, principal: str, size: int) -> str:
        rid = value.get("id")
        if not isinstance(rid, str):
            return "unknown"
        pending = self._pending.get(rid)
        if pending is None:
            return self._finished.get(rid, "unknown")
        if not secrets.compare_digest(pending.principal, principal):
            return "foreign_principal"
        if not secrets.compare_digest(pending.session, session):
            return "foreign_session"
        # from here on the answer is the caller's own: it settles the request whatever it says
        if size > self.bounds.max_answer_bytes:
            self._settle(rid, failure="answer_too_large")
            return "too_large"
        if "error" in value:
            self._settle(rid, failure="caller_error")
            return "caller_error"
        try:
            answer = checked_answer(pending.method, value.get("result"))
        except MalformedAnswer:
            self._settle(rid, failure="answer_malformed")
            return "malformed"
        self._settle(rid, answer=answer)
        return "matched"

    def _open(self, method: str, session: str, principal: str) -> tuple[str, _Pending]:
        rid = ID_PREFIX + secrets.token_urlsafe(24)
        pending = self._pending[rid] = _Pending(method, session, principal)
        return rid, pending

    def _settle(self, rid: str, *, answer: dict[str, Any] | None = None, failure: str | None = None,
                remember: str = "duplicate") -> None:
        pending = self._pending.pop(rid, None)
        if pending is None:
            return
        pending.answer, pending.failure = answer, failure
        pending.done.set()
        self._finished[rid] = remember
        while len(self._finished) > self.bounds.remembered:
            self._finished.popitem(last=False)


class CallPush:
    """The push channel of one call (see the module docstring).

    ``deliver`` (set by the transport when the call is answered as a stream) queues one JSON-RPC
    message on the call's SSE stream without blocking; ``stream`` is the call's
    :class:`~portcullis.notifications.CallStream`, whose output-filter policy every pushed request
    passes before it is queued.
    """

    def __init__(self, registry: PushRegistry, session: str, principal: str, declared: frozenset[str]) -> None:
        self._registry = registry
        self._session, self._principal = session, principal
        self.declared = declared  # the client-request kinds the caller declared in its session
        self.deliver: Callable[[dict[str, Any]], None] | None = None
        self.stream: Any = None  # the call's CallStream: its output-filter policy is set by the content stage
        self.closed = False
        self._waiting: set[str] = set()
        self._asked = 0
        self.records: list[dict[str, Any]] = []
        self.unrecorded = 0

    @property
    def policy(self) -> Any:
        """The call's output-filter policy (None until the content stage set it: nothing is pushed)."""
        return None if self.stream is None else self.stream.policy

    async def request(self, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Ask the caller; its checked answer, or :class:`PushRefused`."""
        bounds = self._registry.bounds
        if self.closed:
            raise PushRefused("call_ended")
        if self.deliver is None:
            raise PushRefused("no_stream")
        if len(self._waiting) >= bounds.max_pending_per_call:
            raise PushRefused("too_many_pending")
        if self._asked >= bounds.max_requests_per_call:
            raise PushRefused("too_many_requests")
        if self._registry.waiting >= bounds.max_pending:
            raise PushRefused("busy")
        rid, pending = self._registry._open(method, self._session, self._principal)
        self._waiting.add(rid)
        self._asked += 1
        try:
            try:
                self.deliver({"jsonrpc": "2.0", "id": rid, "method": method, "params": dict(params)})
            except Exception:  # a full or closed queue: the caller is gone or not reading
                raise PushRefused("backpressure") from None
            with anyio.move_on_after(bounds.timeout_s):
                await pending.done.wait()
            if not pending.done.is_set():
                raise PushRefused("timeout")
            if pending.failure is not None:
                raise PushRefused(pending.failure)
            if pending.answer is None:  # settled without an answer or a failure: never expected
                raise PushRefused("answer_malformed")
            return pending.answer
        finally:
            self._waiting.discard(rid)
            self._registry._settle(rid, failure="timeout", remember="late")  # a no-op once settled

    def close(self) -> None:
        """The call ended: what still waits is refused (``call_ended``); later requests too."""
        self.closed = True
        for rid in list(self._waiting):
            self._registry._settle(rid, failure="call_ended", remember="late")

    def record(self, kind: str, outcome: str, reason: str | None, *, service: str | None) -> None:
        """One client request of this call, for the outcome record and the metric (never its content);
        ``service`` None: the call's own (a bridged input request, recorded with the next round)."""
        counted = self._registry.request_counted
        if counted is not None:
            counted(kind, outcome)
        if len(self.records) >= MAX_RECORDS:
            self.unrecorded += 1
            return
        self.records.append({"kind": kind, "service": service, "outcome": outcome, "reason": reason})

    def take_records(self) -> tuple[list[dict[str, Any]], int]:
        """The records since the last take (each outcome record holds those of its own round), and how many
        more there were than could be kept."""
        taken, unrecorded = self.records, self.unrecorded
        self.records, self.unrecorded = [], 0
        return taken, unrecorded


PUSH: ContextVar[CallPush | None] = ContextVar("portcullis_call_push", default=None)
