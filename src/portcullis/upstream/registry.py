"""Supervises one long-lived connection per service and routes calls to it.

Each service has a supervisor task that opens a connection, lists its tools (feeding the
catalog's pin check), then watches it. A dead connection is reopened with capped exponential
backoff. While a service is down its calls fail at once with ``UpstreamUnavailable``; other
services are not affected.

**Keeping the pin check current** (a changed definition is quarantined without a restart):

1. *Told*: a service that says its tools changed (``notifications/tools/list_changed``, pushed by
   a 2025-era server or through a 2026-07-28 ``subscriptions/listen`` stream) calls
   :meth:`ServiceHandle.tools_changed` synchronously from the connection. That counts a change
   at once (``on_change``), so no call of the service is forwarded until a listing *started
   after it* has been checked (the catalog holds them, :meth:`portcullis.catalog.Catalog.settle`),
   and wakes the watcher to re-list now.
2. *Not told*: every health check is a first page of ``tools/list`` (valid in every era), checked
   like any listing when it is complete; a full listing every ``refresh_s``; and a re-list right
   after a call the upstream refused or answered as an error (:meth:`ServiceHandle.refresh_soon`,
   at most once a second).
3. *Bounded*: re-lists of one service start at least ``min_relist_s`` apart however many
   notifications arrive; notifications during a re-list are folded into one more re-list.

Each listing is reported with the change count it was started at (``as_of``), so the catalog
knows which notifications it answers.

**The service's identity** (:mod:`.build_identity`): each new connection's ``service_identity``
record is written, durable, before the connection serves a call (a failed write is a failed
connection, retried with backoff); an unchanged identity at most once a minute.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from portcullis.config.model import GatewayConfig, HttpService, StdioService
from portcullis.errors import PortcullisError, UpstreamUnavailable
from portcullis.identity.minting import TokenMinter
from portcullis.upstream.build_identity import IdentityLog
from portcullis.upstream.confined_spawn import StdioSandbox
from portcullis.upstream.http_relay import HttpRelayConnector, NotModern
from portcullis.upstream.interface import Connection, Connector
from portcullis.upstream.sdk_client import SdkConnector

log = logging.getLogger("portcullis.upstream")

# (service, tools, as_of change count); may be a coroutine function (the gateway's scans definitions
# off the event loop first), awaited before the service counts as listed
ToolsCallback = Callable[[str, list[dict[str, Any]], int], Awaitable[None] | None]
ChangeCallback = Callable[[str, int], None]  # (service, change count): hold its calls until re-verified
RecordIdentity = Callable[[Mapping[str, Any]], Awaitable[None]]  # the service_identity record's fields


@dataclass(eq=False)
class _Held:
    """One connection owned by a :meth:`ServiceHandle._hold` task."""

    conn: Connection | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    error: BaseException | None = None
    opened: anyio.Event = field(default_factory=anyio.Event)
    stop: anyio.Event = field(default_factory=anyio.Event)


class ServiceHandle:
    """One service: its current connection (if any) and the loop that keeps it alive."""

    def __init__(self, name: str, connectors: Sequence[Connector], on_tools: ToolsCallback, *,
                 on_change: ChangeCallback | None = None, health_interval_s: float = 5.0, refresh_s: float = 30.0,
                 max_backoff_s: float = 5.0, retire_grace_s: float = 10.0, min_relist_s: float = 0.1,
                 error_relist_s: float = 1.0, on_identity: RecordIdentity | None = None) -> None:
        self.name = name
        self._on_identity = on_identity
        self._identities = IdentityLog()
        self._connectors = list(connectors)
        self._on_tools = on_tools
        self._on_change = on_change
        self._health_s = health_interval_s
        self._refresh_s = refresh_s
        self._max_backoff_s = max_backoff_s
        self._retire_grace_s = retire_grace_s
        self._min_relist_s = min_relist_s
        self._conn: Connection | None = None
        self._recycle = anyio.Event()
        self._relist = anyio.Event()
        self.changes = 0  # tool-list changes the service announced (the catalog holds calls until verified)
        self.relists = 0  # listings made because of a change or an error (bounded by min_relist_s)
        self._last_relist = -math.inf
        self._error_relist_s = error_relist_s
        self._last_refresh_request = -math.inf
        self.ready = anyio.Event()  # set after the first successful listing

    def recycle(self) -> None:
        """Reopen the connection (a stdio child is restarted with the current environment)."""
        self._recycle.set()

    def tools_changed(self) -> None:
        """The service says its tools changed: hold its calls (synchronously) and re-list soon."""
        self.changes += 1
        if self._on_change is not None:
            self._on_change(self.name, self.changes)
        self._relist.set()

    def refresh_soon(self) -> None:
        """Re-list soon without holding calls (the upstream refused a call: its tools may have changed);
        at most once per ``error_relist_s``, so a tool that fails often costs little."""
        now = time.monotonic()
        if now - self._last_refresh_request >= self._error_relist_s:
            self._last_refresh_request = now
            self._relist.set()

    @property
    def server_version(self) -> str | None:
        """The build identity the service reported on its current connection, if any."""
        conn = self._conn
        return None if conn is None else getattr(conn, "server_version", None)

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def connection(self) -> Connection:
        """The current connection (resources and prompts are read through it), or UpstreamUnavailable."""
        conn = self._conn
        if conn is None:
            raise UpstreamUnavailable(detail=f"service {self.name} is not connected")
        return conn

    async def call_tool(self, name: str, arguments: Mapping[str, Any], *, timeout_s: float,
                        request_id: str, actor_token: str | None = None,
                        trace_headers: Mapping[str, str] | None = None,
                        **mrtr: Any) -> dict[str, Any]:
        """The connection's :meth:`~.interface.Connection.call_tool`; ``mrtr``: its MRTR keywords."""
        conn = self._conn
        if conn is None:
            raise UpstreamUnavailable(detail=f"service {self.name} is not connected")
        return await conn.call_tool(name, arguments, timeout_s=timeout_s, request_id=request_id,
                                    actor_token=actor_token, trace_headers=trace_headers, **mrtr)

    async def run(self) -> None:
        """Keep one connection open; on a planned restart open the new one before closing the old."""
        backoff = 0.1
        async with anyio.create_task_group() as tg:
            previous: _Held | None = None  # still serving while its replacement starts (recycle)
            while True:
                connector = self._connectors[0]
                held = _Held()
                as_of = self.changes  # the first listing answers the changes announced before it started
                tg.start_soon(self._hold, connector, held)
                await held.opened.wait()
                if held.conn is None:
                    if isinstance(held.error, NotModern) and len(self._connectors) > 1:
                        self._connectors.pop(0)
                        continue
                    self._log_failure(held.error)
                    if previous is None:
                        await anyio.sleep(backoff * (1 + random.random() / 4))  # noqa: S311 - jitter
                        backoff = min(backoff * 2, self._max_backoff_s)
                        continue
                    held, previous = previous, None  # the replacement failed: keep the running one
                else:
                    await self._report(held.tools, as_of)
                    self._conn = held.conn
                    self.ready.set()
                    backoff = 0.1
                    log.info("service connected", extra={"fields": {"service": self.name,
                                                                    "via": type(connector).__name__}})
                    if previous is not None:
                        tg.start_soon(self._retire, previous)
                        previous = None
                kept = held.conn
                if kept is None:  # unreachable: both branches above leave an open connection in `held`
                    continue
                if await self._watch(kept):  # a planned restart: keep serving until the new one is up
                    self._recycle = anyio.Event()
                    previous = held
                    continue
                self._conn = None
                held.stop.set()
                await anyio.sleep(backoff * (1 + random.random() / 4))  # noqa: S311 - jitter, not crypto
                backoff = min(backoff * 2, self._max_backoff_s)

    async def _report(self, tools: list[dict[str, Any]], as_of: int) -> None:
        result = self._on_tools(self.name, tools, as_of)
        if inspect.isawaitable(result):
            await result

    async def _hold(self, connector: Connector, held: _Held) -> None:
        """Own one connection in its own task, so old and new can overlap and close in any order."""
        try:
            async with connector.open() as conn:
                held.tools = await conn.list_tools()
                await self._identify(conn)
                held.conn = conn
                held.opened.set()
                await held.stop.wait()
        except Exception as exc:  # any failure of one service must not touch the others
            held.error = exc
        finally:
            held.opened.set()

    async def _identify(self, conn: Connection) -> None:
        """The connection's ``service_identity`` record, durable before it serves; bounded by :class:`IdentityLog`."""
        identity = getattr(conn, "build_identity", None)
        if identity is None or self._on_identity is None:
            return
        now = time.monotonic()
        if self._identities.due(identity, now):
            await self._on_identity(identity.fields(self.name))
            self._identities.recorded(identity, now)

    async def _retire(self, held: _Held) -> None:
        await anyio.sleep(self._retire_grace_s)  # calls already on the old connection may finish
        held.stop.set()

    def _log_failure(self, error: BaseException | None) -> None:
        if isinstance(error, NotModern):
            log.warning("service speaks no supported revision", extra={"fields": {"service": self.name}})
            return
        log.warning("service connection failed", extra={"fields": {
            "service": self.name, "error": type(error).__name__,
            "detail": error.detail if isinstance(error, PortcullisError) else ""}})

    async def _watch(self, conn: Connection) -> bool:
        """Return when the connection should be replaced: True for a planned restart, False if it failed."""
        since_refresh = 0.0
        while True:
            woke = "tick"
            with anyio.move_on_after(self._health_s):
                async with anyio.create_task_group() as tg:
                    async def until(wait: Callable[[], Any], reason: str) -> None:
                        nonlocal woke
                        await wait()
                        woke = reason
                        tg.cancel_scope.cancel()

                    tg.start_soon(until, conn.wait_closed, "closed")
                    tg.start_soon(until, self._recycle.wait, "recycle")
                    tg.start_soon(until, self._relist.wait, "relist")
            if woke == "closed":
                log.warning("service connection closed", extra={"fields": {"service": self.name}})
                return False
            if woke == "recycle":
                log.info("service restarted to refresh the gateway's keys", extra={"fields": {"service": self.name}})
                return True
            try:
                if woke == "relist":
                    await anyio.sleep(max(0.0, self._last_relist + self._min_relist_s - time.monotonic()))
                    self._relist = anyio.Event()  # a change announced from here on needs another listing
                    self._last_relist = time.monotonic()
                    self.relists += 1
                    as_of = self.changes
                    await self._report(await conn.list_tools(), as_of)
                    continue
                since_refresh += self._health_s
                as_of = self.changes
                if since_refresh >= self._refresh_s:
                    since_refresh = 0.0
                    await self._report(await conn.list_tools(), as_of)
                elif (listing := await conn.ping(timeout_s=self._health_s)) is not None:
                    await self._report(listing, as_of)  # a complete first page: checked for free
            except PortcullisError as exc:
                log.warning("service health check failed", extra={"fields": {
                    "service": self.name, "error": type(exc).__name__}})
                return False


class UpstreamRegistry:
    """All services by name."""

    def __init__(self, handles: Mapping[str, ServiceHandle]) -> None:
        self._handles = dict(handles)

    @classmethod
    def from_config(cls, gateway: GatewayConfig, on_tools: ToolsCallback, environ: Mapping[str, str], *,
                    on_change: ChangeCallback | None = None,
                    child_env: Callable[[str], Mapping[str, str]] | None = None,
                    gateway_keys: TokenMinter | None = None,
                    stderr_withhold_keys: Mapping[str, bytes] | None = None,
                    on_event: Callable[[str, str, Any], None] | None = None,
                    on_spawn: Callable[[Mapping[str, Any]], Awaitable[None]] | None = None,
                    on_identity: RecordIdentity | None = None,
                    **timing: float) -> UpstreamRegistry:
        """``stderr_withhold_keys``: service -> key, for services whose stderr lines must be logged
        without their text (:class:`~portcullis.upstream.stderr_relay.StderrRelay`); ``on_spawn``:
        records each stdio spawn and its confinement (the ``spawn`` audit record); ``on_identity``: each
        connection's ``service_identity`` record."""
        handles: dict[str, ServiceHandle] = {}
        # one per gateway (the host's layout, read once), when there is a stdio service to confine
        sandbox = (StdioSandbox.from_environ(environ)
                   if any(isinstance(cfg, StdioService) for cfg in gateway.services.values()) else None)
        for name, cfg in gateway.services.items():
            changed = functools.partial(_tools_changed, handles, name)  # the handle exists by the first call
            # resource/prompt list changes and resource updates: (service, method, params)
            event = functools.partial(on_event, name) if on_event is not None else None
            connectors: list[Connector] = []
            if isinstance(cfg, HttpService) and cfg.protocol == "auto":  # "legacy": the SDK client's session only
                connectors.append(HttpRelayConnector(name, cfg, on_tools_changed=changed, on_event=event))
            extra = functools.partial(child_env, name) if child_env is not None else None
            connectors.append(SdkConnector(name, cfg, environ, extra_env=extra, gateway_keys=gateway_keys,
                                           on_tools_changed=changed, on_event=event,
                                           stderr_withhold_key=(stderr_withhold_keys or {}).get(name),
                                           sandbox=sandbox, on_spawn=on_spawn))
            settings = {"health_interval_s": cfg.health_interval_s, "refresh_s": cfg.refresh_s, **timing}
            handles[name] = ServiceHandle(name, connectors, on_tools, on_change=on_change, on_identity=on_identity,
                                          **settings)
        return cls(handles)

    def get(self, name: str) -> ServiceHandle:
        handle = self._handles.get(name)
        if handle is None:
            raise UpstreamUnavailable(detail=f"no service named {name}")
        return handle

    def server_version(self, name: str) -> str | None:
        """The build identity service ``name`` reported (for audit records), or ``None``."""
        handle = self._handles.get(name)
        return None if handle is None else handle.server_version

    def handles(self) -> list[ServiceHandle]:
        return list(self._handles.values())

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            for handle in self._handles.values():
                tg.start_soon(handle.run)


def _tools_changed(handles: Mapping[str, ServiceHandle], name: str) -> None:
    handles[name].tools_changed()
