"""The pin check of resources, templates and prompts, off the request path.

For each service that a resource, template or prompt manifest names, one background loop re-lists
the kinds it serves and records a verdict per entry in the :class:`~portcullis.surface.SurfaceCatalog`:

- when the service's connection opens (or is replaced),
- every ``refresh_s`` of the service (the interval its tools are fully re-listed at),
- at once when the service announces ``notifications/resources/list_changed`` or
  ``notifications/prompts/list_changed`` (:meth:`SurfaceWatch.changed`, called synchronously from
  the connector): reads of that service wait (bounded) until a re-listing started after the
  announcement is checked, as tool calls do (:meth:`~portcullis.surface.SurfaceCatalog.settled_verdict`).

A read, a get or a list then only consults the in-memory verdict (O(1), no upstream request). A
kind that cannot be listed makes its entries ``unlisted`` (refused, fail closed) until the next
re-listing succeeds; a dropped connection makes every entry of the service ``unlisted``.

When the set of served entries of a kind changes (a quarantine, a release), ``on_view_changed``
is told ``"resources"`` or ``"prompts"``, so subscribed callers learn that the gateway's exposed
view changed (:mod:`portcullis.subscriptions`); an upstream's own list-change notification only
ever triggers the re-listing, never reaches a caller.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import anyio
import anyio.abc

from portcullis.errors import PortcullisError
from portcullis.surface import LIST_METHOD, SurfaceCatalog
from portcullis.upstream.registry import UpstreamRegistry

log = logging.getLogger("portcullis.catalog")
VIEW_OF_KIND = {"resource": "resources", "template": "resources", "prompt": "prompts"}


class SurfaceWatch:
    """Keeps every surface entry's pin verdict current (see the module docstring)."""

    def __init__(self, catalog: SurfaceCatalog, upstreams: UpstreamRegistry, *, refresh_s: Mapping[str, float],
                 on_view_changed: Callable[[str], None] | None = None, poll_s: float = 0.2,
                 min_relist_s: float = 0.1, clock: Callable[[], float] = time.monotonic) -> None:
        self._catalog, self._upstreams = catalog, upstreams
        self._refresh_s = dict(refresh_s)
        self.on_view_changed = on_view_changed
        self._poll_s, self._min_relist_s, self._clock = poll_s, min_relist_s, clock
        self._kinds: dict[str, set[str]] = {}
        for entry in catalog.entries:
            self._kinds.setdefault(entry.service, set()).add(entry.kind)
        self._wake: dict[str, anyio.Event] = {service: anyio.Event() for service in self._kinds}
        self.relists = 0  # re-listings made (a measure for tests and the operator)
        self.on_connected: Callable[[str], Awaitable[None]] | None = None  # a new connection (resubscribe)
        self._group: anyio.abc.TaskGroup | None = None  # the loops' (set by run: a reload may add a service)

    def adopt(self, relist: Iterable[str]) -> None:
        """The catalog now serves a reloaded version's entries (:meth:`SurfaceCatalog.adopt`): watch the kinds
        they need, and re-list ``relist`` (services with new or re-pinned entries) at once. Synchronous."""
        kinds: dict[str, set[str]] = {service: set() for service in self._kinds}  # a service without entries
        for entry in self._catalog.entries:  # keeps its loop: it re-lists nothing until one comes back
            kinds.setdefault(entry.service, set()).add(entry.kind)
        self._kinds = kinds
        for service in kinds:
            if service not in self._wake:
                self._wake[service] = anyio.Event()
                if self._group is not None:
                    self._group.start_soon(self._loop, service)
        for service in relist:
            if service in self._wake:
                self._wake[service].set()

    def connecting(self, service: str) -> None:
        """The service's tools were listed on a connection not serving yet (it is opening): hold its
        reads until the surface is re-listed on it (the registry reports before it switches over)."""
        try:
            self._upstreams.get(service).connection()
        except PortcullisError:
            self.changed(service)

    def changed(self, service: str) -> None:
        """The service announced a resource or prompt list change: hold its reads, re-list now."""
        if service not in self._kinds:
            return
        self._catalog.note_change(service)
        self._wake[service].set()

    async def refresh(self, service: str) -> None:
        """Re-list ``service``'s kinds now and record the verdicts (announcements made before it started
        are answered by it)."""
        kinds = self._kinds.get(service, set())
        as_of = self._catalog.announced(service)
        before = {kind: self._catalog.served(kind) for kind in kinds}
        lists: dict[str, list[dict[str, Any]] | None] = {}
        try:
            conn = self._upstreams.get(service).connection()
        except PortcullisError:
            conn = None
        for kind in sorted(kinds):
            if conn is None:
                lists[kind] = None
                continue
            try:
                lists[kind] = await getattr(conn, LIST_METHOD[kind])()
            except PortcullisError as exc:
                lists[kind] = None
                log.warning("service could not be listed; its resources and prompts are not served",
                            extra={"fields": {"service": service, "kind": kind, "error": type(exc).__name__}})
        self.relists += 1
        self._catalog.update_service(service, lists, as_of)
        views = {VIEW_OF_KIND[kind] for kind in kinds if self._catalog.served(kind) != before[kind]}
        for view in sorted(views):
            if self.on_view_changed is not None:
                self.on_view_changed(view)

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            self._group = tg
            for service in sorted(self._kinds):
                tg.start_soon(self._loop, service)

    async def _loop(self, service: str) -> None:
        handle = self._upstreams.get(service)
        seen: object = _UNSET  # the first pass records the state at start (not connected: unlisted)
        last = -math.inf
        while True:
            try:
                conn: object = handle.connection()
            except PortcullisError:
                conn = None
            woke = self._wake[service].is_set()
            due = self._clock() - last >= self._refresh_s.get(service, 30.0)
            if conn is not seen or (conn is not None and (woke or due)):
                if woke:
                    await anyio.sleep(max(0.0, last + self._min_relist_s - self._clock()))
                self._wake[service] = anyio.Event()  # an announcement from here on needs another re-listing
                fresh = conn is not seen and conn is not None
                last, seen = self._clock(), conn
                try:
                    await self.refresh(service)
                    if fresh and self.on_connected is not None:
                        await self.on_connected(service)
                except Exception:  # never let one service's watch end the others'
                    log.exception("surface re-listing failed")
                continue
            if woke:  # announced while no connection serves: re-listed once one does (reads wait, bounded)
                await anyio.sleep(self._poll_s)
                continue
            with anyio.move_on_after(self._poll_s):
                await self._wake[service].wait()


_UNSET = object()
