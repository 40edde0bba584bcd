"""Supervises one long-lived connection per service and routes calls to it.

Each service has a supervisor task that opens a connection, lists its tools (feeding the
catalog's pin check), then watches it: a health ping every few seconds and a fresh listing
every ``refresh_s``, so a changed definition is quarantined without a restart. A dead
connection is reopened with capped exponential backoff. While a service is down its calls fail
at once with ``UpstreamUnavailable``; other services are not affected.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio

from portcullis.config.model import GatewayConfig, HttpService
from portcullis.errors import PortcullisError, UpstreamUnavailable
from portcullis.upstream.http_relay import HttpRelayConnector, NotModern
from portcullis.upstream.interface import Connection, Connector
from portcullis.upstream.sdk_client import SdkConnector

log = logging.getLogger("portcullis.upstream")

ToolsCallback = Callable[[str, list[dict[str, Any]]], None]


class ServiceHandle:
    """One service: its current connection (if any) and the loop that keeps it alive."""

    def __init__(self, name: str, connectors: Sequence[Connector], on_tools: ToolsCallback, *,
                 health_interval_s: float = 5.0, refresh_s: float = 30.0, max_backoff_s: float = 5.0) -> None:
        self.name = name
        self._connectors = list(connectors)
        self._on_tools = on_tools
        self._health_s = health_interval_s
        self._refresh_s = refresh_s
        self._max_backoff_s = max_backoff_s
        self._conn: Connection | None = None
        self.ready = anyio.Event()  # set after the first successful listing

    @property
    def connected(self) -> bool:
        return self._conn is not None

    async def call_tool(self, name: str, arguments: Mapping[str, Any], *, timeout_s: float,
                        request_id: str, actor_token: str | None = None) -> dict[str, Any]:
        conn = self._conn
        if conn is None:
            raise UpstreamUnavailable(detail=f"service {self.name} is not connected")
        return await conn.call_tool(name, arguments, timeout_s=timeout_s, request_id=request_id,
                                    actor_token=actor_token)

    async def run(self) -> None:
        backoff = 0.1
        while True:
            connector = self._connectors[0]
            try:
                async with connector.open() as conn:
                    self._on_tools(self.name, await conn.list_tools())
                    self._conn = conn
                    self.ready.set()
                    backoff = 0.1
                    log.info("service connected", extra={"fields": {"service": self.name,
                                                                    "via": type(connector).__name__}})
                    await self._watch(conn)
            except NotModern:
                if len(self._connectors) > 1:
                    self._connectors.pop(0)
                    continue
                log.warning("service speaks no supported revision", extra={"fields": {"service": self.name}})
            except Exception as exc:  # any failure of one service must not touch the others
                log.warning("service connection failed", extra={"fields": {
                    "service": self.name, "error": type(exc).__name__,
                    "detail": exc.detail if isinstance(exc, PortcullisError) else ""}})
            finally:
                self._conn = None
            await anyio.sleep(backoff * (1 + random.random() / 4))  # noqa: S311 - jitter, not crypto
            backoff = min(backoff * 2, self._max_backoff_s)

    async def _watch(self, conn: Connection) -> None:
        since_refresh = 0.0
        while True:
            with anyio.move_on_after(self._health_s):
                await conn.wait_closed()
                log.warning("service connection closed", extra={"fields": {"service": self.name}})
                return
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
                return


class UpstreamRegistry:
    """All services by name."""

    def __init__(self, handles: Mapping[str, ServiceHandle]) -> None:
        self._handles = dict(handles)

    @classmethod
    def from_config(cls, gateway: GatewayConfig, on_tools: ToolsCallback, environ: Mapping[str, str], *,
                    child_env: Callable[[str], Mapping[str, str]] | None = None,
                    **timing: float) -> UpstreamRegistry:
        handles = {}
        for name, cfg in gateway.services.items():
            connectors: list[Connector] = []
            if isinstance(cfg, HttpService):
                connectors.append(HttpRelayConnector(name, cfg))
            extra = dict(child_env(name)) if child_env is not None else {}
            connectors.append(SdkConnector(name, cfg, environ, extra_env=extra))
            settings = {"health_interval_s": cfg.health_interval_s, "refresh_s": cfg.refresh_s, **timing}
            handles[name] = ServiceHandle(name, connectors, on_tools, **settings)
        return cls(handles)

    def get(self, name: str) -> ServiceHandle:
        handle = self._handles.get(name)
        if handle is None:
            raise UpstreamUnavailable(detail=f"no service named {name}")
        return handle

    def handles(self) -> list[ServiceHandle]:
        return list(self._handles.values())

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            for handle in self._handles.values():
                tg.start_soon(handle.run)
