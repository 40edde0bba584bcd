"""Caller subscriptions: list-changed notifications and resource updates, bounded and re-checked.

Two ways in, one hub:

- **2025-era sessions**: ``resources/subscribe`` / ``resources/unsubscribe`` name a caller-facing
  (prefixed) URI; notifications go out on the session's GET stream (one per session, opened only
  by the session's own principal). Every session with an open GET stream also gets the three
  ``notifications/*/list_changed``.
- **2026-07-28**: ``subscriptions/listen`` opens a stream whose filter (``toolsListChanged``,
  ``promptsListChanged``, ``resourcesListChanged``, ``resourceSubscriptions``) is acknowledged with
  the honored subset; each frame carries ``_meta["io.modelcontextprotocol/subscriptionId"]``.

What a caller may subscribe to: a URI that a manifest admits, whose entry's pin verdict is serving,
and that the caller's policy may read (``resolve``: the read pipeline's route, gate and native
policy on ``{"uri": …}``). Anything else gets the one "Resource not found" answer of
:func:`portcullis.pipeline.reads.not_found`, so a subscribe cannot probe what exists.

Upstream: one subscription per (service, upstream URI), made when its first subscriber comes and
dropped when its last goes (:class:`UpstreamSubscriptions`). An upstream
``notifications/resources/updated`` is fanned out to the subscribers of that URI as a notification
rebuilt from nothing but the caller-facing URI (no upstream ``_meta``, ``title`` or other member),
after re-checking that each subscriber may still read it (a policy change, an expired time window,
a quarantine since the subscribe). An update nobody subscribed to is dropped and counted. The
re-checks are asynchronous (the resolver awaits ``decide_async``: Rego never runs on the event loop)
and run off the connector's callback, in :meth:`SubscriptionHub.run`
(:mod:`portcullis.subscription_updates`): updates reach one subscriber in the order they came; a
check that fails, overruns ``check_s`` or is cancelled tells nobody (counted ``check_failed``).

Bounds: subscriptions per session or stream, per caller and in total; open streams per caller and in
total; a token bucket per subscriber; a bounded queue per subscriber (a full one drops and counts,
never blocks the connector; updates still being re-checked hold their place in it); a stream's
lifetime. ``counted(outcome)`` feeds the metric of relayed and dropped notifications;
``audit(event, fields)`` is told of each subscribe and unsubscribe (never of each update).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from portcullis.errors import InvalidParams, SubscriptionLimit
from portcullis.identity.principal import Principal
from portcullis.subscription_updates import Delivery, UpdateQueue
from portcullis.text import escape_invisible

log = logging.getLogger("portcullis.subscriptions")

LIST_CHANGED = {"tools": "notifications/tools/list_changed", "resources": "notifications/resources/list_changed",
                "prompts": "notifications/prompts/list_changed"}
UPDATED = "notifications/resources/updated"
ACKNOWLEDGED = "notifications/subscriptions/acknowledged"
SUBSCRIPTION_ID_META = "io.modelcontextprotocol/subscriptionId"
_FILTER_KEYS = {"toolsListChanged": "tools", "promptsListChanged": "prompts", "resourcesListChanged": "resources"}
#: outcomes of one notification offered to one subscriber (the metric's closed label set)
OUTCOMES = frozenset({"relayed", "no_stream", "rate_limited", "queue_full", "no_longer_readable", "check_failed",
                      "unsubscribed"})
MAX_URI_CHARS = 2048

# exposed URI, principal -> (service, upstream URI) when the caller may read it now, else None; awaited
# (the gateway's decides with decide_async: Rego in worker processes, never on the event loop)
Resolver = Callable[[str, Principal], Awaitable[tuple[str, str] | None]]


@dataclass(frozen=True, slots=True)
class SubscriptionBounds:
    per_session: int = 32  # resource subscriptions of one 2025-era session or one listen stream
    per_caller: int = 128  # across all of a principal's sessions and streams
    total: int = 10_000
    streams_per_caller: int = 8
    total_streams: int = 1_000
    queue: int = 64  # notifications waiting for one subscriber's stream
    rate_per_s: float = 10.0  # notifications per second to one subscriber (token bucket)
    burst: int = 20
    stream_lifetime_s: float = 3600.0  # then the stream ends; the caller re-opens it
    session_idle_s: float = 86_400.0  # a 2025-era session's subscriptions, untouched and without a stream, expire
    keepalive_s: float = 15.0
    check_s: float = 10.0  # one re-check of an update (the resolver's policy decision); past it: not told


class UpstreamSubscriptions(Protocol):
    """The seam to the services: subscribe or drop one upstream URI of one service."""

    async def subscribe(self, service: str, uri: str) -> None:
        ...

    async def unsubscribe(self, service: str, uri: str) -> None:
        ...


class StreamBusy(Exception):
    """A second GET stream for a session that has one, or the stream bounds are reached."""


@dataclass(eq=False)
class Subscriber:
    """One session's or one listen stream's subscriptions and its bounded outbound queue."""

    principal: Principal
    who: str  # the principal key
    session: str | None  # the 2025-era session (hashed), None for a listen stream
    subscription_id: Any = None  # the listen request's JSON-RPC id (2026-07-28)
    lists: frozenset[str] = frozenset()  # tools | resources | prompts
    uris: dict[str, tuple[str, str]] = field(default_factory=dict)  # exposed URI -> (service, upstream URI)
    streaming: bool = False
    touched: float = 0.0  # last subscribe, unsubscribe, stream open or close (2025-era session expiry)
    dropped: int = 0
    pending: int = 0  # updates queued for their re-check (they count against ``queue``)
    _tokens: float = 0.0
    _refilled: float = -math.inf
    _sender: MemoryObjectSendStream[dict[str, Any]] | None = None
    receiver: MemoryObjectReceiveStream[dict[str, Any]] | None = None

    def _take(self, bounds: SubscriptionBounds, now: float) -> bool:
        if self._refilled == -math.inf:
            self._tokens, self._refilled = float(bounds.burst), now
        self._tokens = min(float(bounds.burst), self._tokens + (now - self._refilled) * bounds.rate_per_s)
        self._refilled = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


def _not_found(uri: str) -> Exception:
    """The read pipeline's one answer for an unknown or unreadable resource (imported here, at use: the
    metrics module imports this one, and the pipeline imports the metrics' configuration)."""
    from portcullis.pipeline.reads import not_found

    return not_found(uri)


def session_key(session_id: str) -> str:
    """A session is known by a hash of its sealed id (the id itself is never kept)."""
    return hashlib.sha256(session_id.encode()).hexdigest()[:32]


def listen_filter(params: Mapping[str, Any]) -> tuple[frozenset[str], list[str]]:
    """The list kinds and resource URIs a ``subscriptions/listen`` asks for; a malformed filter is -32602."""
    notifications = params.get("notifications")
    if not isinstance(notifications, dict):
        raise InvalidParams("Invalid params: 'notifications' must be an object")
    lists = set()
    for key, kind in _FILTER_KEYS.items():
        value = notifications.get(key)
        if value is not None and not isinstance(value, bool):
            raise InvalidParams(f"Invalid params: 'notifications.{key}' must be a boolean")
        if value:
            lists.add(kind)
    uris = notifications.get("resourceSubscriptions")
    if uris is None:
        uris = []
    if not isinstance(uris, list) or not all(isinstance(u, str) and 0 < len(u) <= MAX_URI_CHARS for u in uris):
        raise InvalidParams("Invalid params: 'notifications.resourceSubscriptions' must be a list of URIs")
    return frozenset(lists), list(dict.fromkeys(uris))


class SubscriptionHub:
    """Every caller subscription of one gateway process (see the module docstring)."""

    def __init__(self, resolve: Resolver, upstream: UpstreamSubscriptions, key_of: Callable[[Principal], str], *,
                 bounds: SubscriptionBounds = SubscriptionBounds(), counted: Callable[[str], None] | None = None,
                 audit: Callable[[str, Mapping[str, Any]], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 settle: Callable[[str], Awaitable[None]] | None = None) -> None:
        self._resolve, self._upstream, self.bounds, self._key_of = resolve, upstream, bounds, key_of
        # wait (bounded) for a pin verdict still being checked before admitting a URI, as a read does
        self._settle = settle
        self._counted, self._audit, self._clock = counted, audit, clock
        self._sessions: dict[str, Subscriber] = {}
        self._listeners: set[Subscriber] = set()
        self._by_target: dict[tuple[str, str], set[Subscriber]] = {}  # (service, upstream URI) -> subscribers
        self._lock = anyio.Lock()  # upstream subscribe/unsubscribe of one target never interleave
        self._updates = UpdateQueue(resolve, self._delivered, self._count, check_s=bounds.check_s)

    # ------------------------------------------------------------------ counts

    def _count_of(self, who: str) -> int:
        return sum(len(s.uris) for s in self._all() if s.who == who)

    def _total(self) -> int:
        return sum(len(s.uris) for s in self._all())

    def _all(self) -> list[Subscriber]:
        return [*self._sessions.values(), *self._listeners]

    def stats(self) -> dict[str, int]:
        return {"subscriptions": self._total(), "streams": sum(1 for s in self._all() if s.streaming),
                "upstream": len(self._by_target)}

    # ------------------------------------------------------------------ 2025-era sessions

    async def sweep(self) -> None:
        """Drop 2025-era sessions idle past ``session_idle_s`` with no open stream (sessions are sealed
        tokens: the gateway never sees one end, so their subscriptions would otherwise live on)."""
        cutoff = self._clock() - self.bounds.session_idle_s
        for session, sub in list(self._sessions.items()):
            if not sub.streaming and sub.touched < cutoff:
                self._sessions.pop(session, None)
                for uri in list(sub.uris):
                    await self._remove(sub, uri, audit=False)
                self._note("session_expired", sub, None)

    async def subscribe(self, session: str, principal: Principal, uri: Any) -> None:
        """``resources/subscribe`` on a session: refused like an unknown resource when not readable."""
        await self.sweep()
        who = self._key_of(principal)
        await self._settled(uri)
        target = await self._readable(uri, principal)
        sub = self._sessions.get(session)
        if sub is None:
            sub = Subscriber(principal, who, session, lists=frozenset(LIST_CHANGED))
        sub.touched = self._clock()
        if uri in sub.uris:
            return  # idempotent
        self._admit(sub, who)
        await self._add(sub, uri, target)  # an upstream failure leaves nothing behind
        self._sessions[session] = sub

    async def unsubscribe(self, session: str, principal: Principal, uri: Any) -> None:
        """``resources/unsubscribe``: of something never subscribed, the same not-found answer."""
        if not isinstance(uri, str) or not uri or len(uri) > MAX_URI_CHARS:
            raise InvalidParams("Invalid params: 'uri' must be a string")
        who = self._key_of(principal)
        sub = self._sessions.get(session)
        if sub is None or sub.who != who or uri not in sub.uris:
            raise _not_found(uri)
        await self._remove(sub, uri)
        if not sub.uris and not sub.streaming:
            self._sessions.pop(session, None)

    def open_session_stream(self, session: str, principal: Principal) -> Subscriber:
        """The session's GET stream: one per session, its own principal only (the caller checked the seal)."""
        who = self._key_of(principal)
        sub = self._sessions.get(session)
        if sub is not None and (sub.who != who or sub.streaming):
            raise StreamBusy
        self._admit_stream(who)
        if sub is None:
            sub = self._sessions[session] = Subscriber(principal, who, session, lists=frozenset(LIST_CHANGED))
        sub.touched = self._clock()
        self._start(sub)
        return sub

    # ------------------------------------------------------------------ 2026-07-28 listen

    async def listen(self, principal: Principal, subscription_id: Any, lists: frozenset[str],
                     uris: list[str]) -> tuple[Subscriber, dict[str, Any]]:
        """Open a listen stream; returns it and the honored filter. A URI the caller may not read is
        refused like an unknown resource (the whole request: the caller learns nothing per URI)."""
        await self.sweep()
        who = self._key_of(principal)
        if len(uris) > self.bounds.per_session:  # before any policy decision: a long filter costs nothing
            raise SubscriptionLimit(detail="too many resource subscriptions on one stream")
        for uri in uris:
            await self._settled(uri)
        targets = [(uri, await self._readable(uri, principal)) for uri in uris]
        self._admit_stream(who)
        if self._count_of(who) + len(targets) > self.bounds.per_caller or \
                self._total() + len(targets) > self.bounds.total:
            raise SubscriptionLimit(detail="subscription limit reached")
        sub = Subscriber(principal, who, None, subscription_id=subscription_id, lists=lists)
        self._listeners.add(sub)
        self._start(sub)
        try:
            for uri, target in targets:
                await self._add(sub, uri, target)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.close(sub)
            raise
        honored: dict[str, Any] = {key: True for key, kind in _FILTER_KEYS.items() if kind in lists}
        if uris:
            honored["resourceSubscriptions"] = list(uris)
        return sub, honored

    async def close(self, sub: Subscriber) -> None:
        """A stream ended: a listen stream's subscriptions go with it; a session keeps its own."""
        sub.streaming = False
        sub.touched = self._clock()
        if sub._sender is not None:
            sub._sender.close()
        sub._sender = None
        if sub.session is None:
            self._listeners.discard(sub)
            for uri in list(sub.uris):
                await self._remove(sub, uri, audit=False)
            self._note("listen_closed", sub, None)
        elif not sub.uris and self._sessions.get(sub.session) is sub:
            self._sessions.pop(sub.session, None)

    async def resubscribe(self, service: str) -> None:
        """``service``'s connection was replaced: its upstream subscriptions are made again on the new one."""
        for target in [t for t in list(self._by_target) if t[0] == service]:
            try:
                await self._upstream.subscribe(*target)
            except Exception as exc:  # the subscribers stay; updates resume when the service accepts again
                log.warning("upstream resubscribe failed", extra={"fields": {"service": service,
                                                                              "error": type(exc).__name__}})

    # ------------------------------------------------------------------ fan-out

    def list_changed(self, view: str) -> None:
        """The gateway's exposed view of ``view`` changed: tell every subscriber that asked."""
        method = LIST_CHANGED[view]
        for sub in self._all():
            if view in sub.lists and self._may_queue(sub):
                self._send(sub, method, {})

    def resource_updated(self, service: str, upstream_uri: Any) -> None:
        """An upstream's ``notifications/resources/updated``: only its URI is read, nothing else. Never
        waits: the subscribers' re-checks are queued for :meth:`run`."""
        if not isinstance(upstream_uri, str) or len(upstream_uri) > MAX_URI_CHARS:
            self._count("unsubscribed")
            return
        subscribers = self._by_target.get((service, upstream_uri))
        if not subscribers:
            self._count("unsubscribed")  # nobody asked for it (or a forged URI): dropped
            return
        self._updates.put([Delivery(sub, uri, target) for sub in list(subscribers)
                           for uri, target in list(sub.uris.items())
                           if target == (service, upstream_uri) and self._may_queue(sub)])

    async def run(self) -> None:
        """Re-check and deliver the queued updates, in order, forever (a background task)."""
        await self._updates.run()

    async def drained(self) -> None:
        """Wait until every update queued so far was re-checked and delivered or dropped."""
        await self._updates.drained()

    def updates_pending(self) -> int:
        """Updates queued or being re-checked."""
        return len(self._updates)

    # ------------------------------------------------------------------ internals

    async def _settled(self, uri: Any) -> None:
        if self._settle is not None and isinstance(uri, str) and 0 < len(uri) <= MAX_URI_CHARS:
            await self._settle(uri)

    async def _readable(self, uri: Any, principal: Principal) -> tuple[str, str]:
        if not isinstance(uri, str) or not uri or len(uri) > MAX_URI_CHARS:
            raise InvalidParams("Invalid params: 'uri' must be a string")
        target = await self._resolve(uri, principal)
        if target is None:
            raise _not_found(uri)
        return target

    def _admit(self, sub: Subscriber, who: str) -> None:
        if len(sub.uris) >= self.bounds.per_session:
            raise SubscriptionLimit(detail="too many resource subscriptions on one session")
        if self._count_of(who) >= self.bounds.per_caller or self._total() >= self.bounds.total:
            raise SubscriptionLimit(detail="subscription limit reached")

    def _admit_stream(self, who: str) -> None:
        streams = [s for s in self._all() if s.streaming]
        if len(streams) >= self.bounds.total_streams or \
                sum(1 for s in streams if s.who == who) >= self.bounds.streams_per_caller:
            raise StreamBusy

    def _start(self, sub: Subscriber) -> None:
        sub._sender, sub.receiver = anyio.create_memory_object_stream[dict[str, Any]](self.bounds.queue)
        sub.streaming = True

    async def _add(self, sub: Subscriber, uri: str, target: tuple[str, str]) -> None:
        async with self._lock:
            first = target not in self._by_target
            if first:
                await self._upstream.subscribe(*target)  # an upstream failure refuses this subscribe
            self._by_target.setdefault(target, set()).add(sub)
            sub.uris[uri] = target
        self._note("subscribe", sub, uri)

    async def _remove(self, sub: Subscriber, uri: str, *, audit: bool = True) -> None:
        target = sub.uris.pop(uri, None)
        if target is None:
            return
        async with self._lock:
            holders = self._by_target.get(target)
            if holders is not None and not any(t == target for t in sub.uris.values()):
                holders.discard(sub)
            if holders is not None and not holders:
                del self._by_target[target]
                try:
                    await self._upstream.unsubscribe(*target)  # the last subscriber went
                except Exception as exc:  # the caller's unsubscribe succeeded regardless
                    log.warning("upstream unsubscribe failed", extra={"fields": {
                        "service": target[0], "error": type(exc).__name__}})
        if audit:
            self._note("unsubscribe", sub, uri)

    def _may_queue(self, sub: Subscriber) -> bool:
        """An open stream, a rate token and room in the bounded queue (updates being re-checked included);
        else dropped and counted. Decided when the notification comes, so a flood costs no re-checks."""
        sender = sub._sender
        if sender is None or not sub.streaming:
            self._count("no_stream")
            return False
        if not sub._take(self.bounds, self._clock()):
            sub.dropped += 1
            self._count("rate_limited")
            return False
        if sub.pending + sender.statistics().current_buffer_used >= self.bounds.queue:
            sub.dropped += 1
            self._count("queue_full")
            return False
        return True

    def _delivered(self, delivery: Delivery) -> None:
        sub = delivery.subscriber
        if sub.uris.get(delivery.uri) != delivery.target:  # unsubscribed (or expired) while being re-checked
            self._count("unsubscribed")
            return
        self._send(sub, UPDATED, {"uri": delivery.uri})

    def _send(self, sub: Subscriber, method: str, params: dict[str, Any]) -> None:
        sender = sub._sender
        if sender is None or not sub.streaming:
            self._count("no_stream")
            return
        if sub.subscription_id is not None:
            params = {**params, "_meta": {SUBSCRIPTION_ID_META: sub.subscription_id}}
        try:
            sender.send_nowait({"jsonrpc": "2.0", "method": method, "params": params})
        except anyio.WouldBlock:
            sub.dropped += 1
            self._count("queue_full")
            return
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._count("no_stream")
            return
        self._count("relayed")

    def _count(self, outcome: str) -> None:
        if self._counted is not None:
            self._counted(outcome)

    def _note(self, event: str, sub: Subscriber, uri: str | None) -> None:
        fields = {"event": event, "principal": sub.who, "era": "2025" if sub.session is not None else "2026-07-28",
                  "uri": None if uri is None else escape_invisible(uri[:256])}
        log.info("subscription", extra={"fields": fields})
        if self._audit is not None:
            try:
                self._audit(event, fields)
            except Exception:  # never fail a subscribe for the log
                log.exception("subscription event could not be recorded")
