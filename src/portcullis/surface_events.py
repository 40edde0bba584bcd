"""Glue between the services' events, the surface pin check and callers' subscriptions.

- :func:`make_resolver`: may this caller read this caller-facing URI right now? The read pipeline's
  own decisions, in its order: route (a manifest admits it), gate (the caller's policy could ever
  admit it), the entry's in-memory pin verdict, then the policy on ``{"uri": <upstream URI>}`` (native
  and Rego, with :meth:`~portcullis.policy.engine.PolicyEngine.decide_async`: Rego in the worker
  processes, stopped at its CPU budget, never on the event loop). The answer is the (service,
  upstream URI) the subscription is keyed by, or ``None`` (refused like unknown, whichever check said
  no).
- :class:`RegistrySubscriptions`: the hub's upstream seam over the service connections.
- :func:`event_router`: a service's ``notifications/resources/list_changed`` or
  ``notifications/prompts/list_changed`` only triggers the background re-listing
  (:meth:`~portcullis.surface_watch.SurfaceWatch.changed`); a ``notifications/resources/updated`` goes to
  :meth:`~portcullis.subscriptions.SubscriptionHub.resource_updated` with its URI and nothing else
  (which only queues the subscribers' re-checks for :meth:`~portcullis.subscriptions.SubscriptionHub.run`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from portcullis.errors import UpstreamFailed
from portcullis.identity.principal import Principal
from portcullis.pipeline.read_checks import resource_extra
from portcullis.policy.active import ActivePolicy, as_active
from portcullis.policy.engine import PolicyEngine
from portcullis.subscriptions import UPDATED, Resolver, SubscriptionHub
from portcullis.surface import SurfaceCatalog
from portcullis.surface_watch import SurfaceWatch
from portcullis.upstream.registry import UpstreamRegistry

_LIST_EVENTS = frozenset({"notifications/resources/list_changed", "notifications/prompts/list_changed"})


def make_resolver(catalog: SurfaceCatalog, engine: PolicyEngine | ActivePolicy,
                  clock: Callable[[], float]) -> Resolver:
    active = as_active(engine)

    async def resolve(uri: str, principal: Principal) -> tuple[str, str] | None:
        found = catalog.resolve_uri(uri)
        if found is None:
            return None
        entry, upstream_uri = found
        engine = active.current  # read once: both checks below are one version's
        now = datetime.fromtimestamp(clock(), UTC)
        if not engine.may_call(entry.exposed, principal, now=now):
            return None
        if catalog.verdict(entry) != "serving":
            return None
        decision = await engine.decide_async(entry.exposed, principal, {"uri": upstream_uri}, now=now,
                                             method="resources/read", extra=resource_extra(entry, uri, upstream_uri))
        if decision.effect != "allow":
            return None
        return entry.service, upstream_uri

    return resolve


def make_settler(catalog: SurfaceCatalog) -> Callable[[str], Awaitable[None]]:
    """Wait (bounded) until the pin verdict of the entry admitting a URI is checked, as a read does: a
    subscribe right after the gateway connected is not refused for a re-listing still under way."""
    async def settle(uri: str) -> None:
        found = catalog.resolve_uri(uri)
        if found is not None:
            await catalog.settled_verdict(found[0])

    return settle


class RegistrySubscriptions:
    """Subscribes upstream through the service's current connection (``subscribe_resource``)."""

    def __init__(self, upstreams: UpstreamRegistry) -> None:
        self._upstreams = upstreams

    async def subscribe(self, service: str, uri: str) -> None:
        conn = self._upstreams.get(service).connection()
        method = getattr(conn, "subscribe_resource", None)
        if method is None:
            raise UpstreamFailed(detail="the service connection cannot subscribe")
        await method(uri)

    async def unsubscribe(self, service: str, uri: str) -> None:
        conn = self._upstreams.get(service).connection()
        method = getattr(conn, "unsubscribe_resource", None)
        if method is not None:
            await method(uri)


def event_router(watch: SurfaceWatch, hub: SubscriptionHub) -> Callable[[str, str, Any], None]:
    """The registry's ``on_event(service, method, params)``: synchronous, never waits, never raises."""
    def route(service: str, method: str, params: Any) -> None:
        if method in _LIST_EVENTS:
            watch.changed(service)  # re-list now; never passed through raw
        elif method == UPDATED:
            hub.resource_updated(service, params.get("uri") if isinstance(params, dict) else None)

    return route
