"""Supervises one long-lived connection per service and routes calls to it.

Each service has a supervisor task that opens a connection, lists its tools (feeding the
catalog's pin check), then watches it: a health ping every few seconds and a fresh listing
every ``refresh_s``, so a changed definition is quarantined without a restart. A dead
connection is reopened with capped exponential backoff. While a service is down its calls fail
at once with ``UpstreamUnavailable``; other services are not affected.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from portcullis.config.model import GatewayConfig, HttpService
from portcullis.errors import PortcullisError, UpstreamUnavailable
from portcullis.identity.minting import TokenMinter
from portcullis.upstream.http_relay import HttpRelayConnector, NotModern
from portcullis.upstream.interface import Connection, Connector
from portcullis.upstream.sdk_client import SdkConnector

log = logging.getLogger("portcullis.upstream")

ToolsCallback = Callable[[str, list[dict[str, Any]]], None]


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
                 health_interval_s: float = 5.0, refresh_s: float = 30.0, max_backoff_s: float = 5.0,
                 retire_grace_s: float = 10.0) -> None:
        self.name = name
        self._connectors = list(connectors)
        self._on_tools = on_tools
        self._health_s = health_interval_s
        self._refresh_s = refresh_s
        self._max_backoff_s = max_backoff_s
        self._retire_grace_s = retire_grace_s
        self._conn: Connection | None = None
        self._recycle = anyio.Event()
        self.ready = anyio.Event()  # set after the first successful listing

    def recycle(self) -> None:
        """Reopen the connection (a stdio child is restarted with the current environment)."""
        self._recycle.set()

    @property
    def server_version(self) -> str | None:
        """The build identity the service reported on its current connection, if any."""
        conn = self._conn
        return None if conn is None else getattr(conn, "server_version", None)

    @property
    def connected(self) -> bool:
        return self._conn is not None

    async def call_tool(self, name: str, arguments: Mapping[str, Any], *, timeout_s: float,
                        request_id: str, actor_token: str | None = None,
                        trace_headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        conn = self._conn
        if conn is None:
            raise UpstreamUnavailable(detail=f"service {self.name} is not connected")
        return await conn.call_tool(name, arguments, timeout_s=timeout_s, request_id=request_id,
                                    actor_token=actor_token, trace_headers=trace_headers)

    async def run(self) -> None:
        """Keep one connection open; on a planned restart open the new one before closing the old."""
        backoff = 0.1
        async with anyio.create_task_group() as tg:
            previous: _Held | None = None  # still serving while its replacement starts (recycle)
            while True:
                connector = self._connectors[0]
                held = _Held()
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
                    self._on_tools(self.name, held.tools)
                    self._conn = held.conn
                    self.ready.set()
                    backoff = 0.1
                    log.info("service connected", extra={"fields": {"service": self.name,
                                                                    "via": type(connector).__name__}})
                    if previous is not None:
                        tg.start_soon(self._retire, previous)
                        previous = None
                if await self._watch(held.conn):  # a planned restart: keep serving until the new one is up
                    self._recycle = anyio.Event()
                    previous = held
                    continue
                self._conn = None
                held.stop.set()
                await anyio.sleep(backoff * (1 + random.random() / 4))  # noqa: S311 - jitter, not crypto
                backoff = min(backoff * 2, self._max_backoff_s)

    async def _hold(self, connector: Connector, held: _Held) -> None:
        """Own one connection in its own task, so old and new can overlap and close in any order."""
        try:
            async with connector.open() as conn:
                held.tools = await conn.list_tools()
                held.conn = conn
                held.opened.set()
                await held.stop.wait()
        except Exception as exc:  # any failure of one service must not touch the others
            held.error = exc
        finally:
            held.opened.set()

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
        recycled = False
        while True:
            with anyio.move_on_after(self._health_s):
                async with anyio.create_task_group() as tg:
                    async def closed() -> None:
                        await conn.wait_closed()
                        log.warning("service connection closed", extra={"fields": {"service": self.name}})
                        tg.cancel_scope.cancel()

                    async def recycle() -> None:
                        nonlocal recycled
                        await self._recycle.wait()
                        recycled = True
                        log.info("service restarted to refresh the gateway's keys",
                                 extra={"fields": {"service": self.name}})
                        tg.cancel_scope.cancel()

                    tg.start_soon(closed)
                    tg.start_soon(recycle)
                return recycled
            since_refresh += self._health_s
            try:
                if since_refresh >= self._refresh_s:
                    since_refresh = 0.0
                    self._on_tools(self.name, await conn.list_tools())
                else:
                    await conn.ping(timeout_s=self._health_s)
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
                    child_env: Callable[[str], Mapping[str, str]] | None = None,
                    gateway_keys: TokenMinter | None = None,
                    **timing: float) -> UpstreamRegistry:
        handles = {}
        for name, cfg in gateway.services.items():
            connectors: list[Connector] = []
            if isinstance(cfg, HttpService):
                connectors.append(HttpRelayConnector(name, cfg))
            extra = functools.partial(child_env, name) if child_env is not None else None
            connectors.append(SdkConnector(name, cfg, environ, extra_env=extra, gateway_keys=gateway_keys))
            settings = {"health_interval_s": cfg.health_interval_s, "refresh_s": cfg.refresh_s, **timing}
            handles[name] = ServiceHandle(name, connectors, on_tools, **settings)
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
