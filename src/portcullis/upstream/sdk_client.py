"""Upstream connections through the official SDK client: stdio children and legacy HTTP.

stdio children get exactly the environment the configuration lists, nothing inherited: the SDK
always merges a default set (HOME, PATH, USER, …) into the child's environment, so the child is
started through ``env -i`` with only the allowed variables. The command is resolved to an
absolute path by the gateway first.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from portcullis.config.model import HttpService, StdioService
from portcullis.errors import (
    RESULT_TOO_DEEP,
    ConfigError,
    Problem,
    ResultTooLarge,
    UpstreamFailed,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from portcullis.identity.minting import ACTOR_TOKEN_META_KEY
from portcullis.transport.jsonrpc import depth_exceeds
from portcullis.upstream.interface import server_version
from portcullis.upstream.sdk_http_guard import GuardedTransport
from portcullis.upstream.stdio_bounded import bounded_stdio_client

log = logging.getLogger("portcullis.upstream")

_ENV = "/usr/bin/env"
_CONNECTION_CLOSED = -32000


def stdio_parameters(cfg: StdioService, environ: Mapping[str, str],
                     extra_env: Mapping[str, str] | None = None) -> StdioServerParameters:
    """Spawn parameters with a clean environment: ``env_passthrough``, ``env`` and the gateway's trust."""
    if cfg.module is not None:
        argv = [sys.executable, "-m", cfg.module, *cfg.args]
    else:
        command = cfg.command or ""
        resolved = command if os.path.isabs(command) else shutil.which(command)
        if resolved is None:
            raise ConfigError([Problem(path=Path("gateway.yaml"), line=None,
                                       message=f"stdio command not found: {command}")])
        argv = [resolved, *cfg.args]
    child_env = {name: environ[name] for name in cfg.env_passthrough if name in environ}
    child_env.update(cfg.env)
    child_env.update(extra_env or {})  # the gateway's public keys and the service's audience
    assignments = [f"{k}={v}" for k, v in sorted(child_env.items())]
    return StdioServerParameters(command=_ENV, args=["-i", *assignments, *argv], cwd=cfg.cwd)


class _SdkConnection:
    def __init__(self, client: Client, *, token_in_meta: bool, max_result_depth: int | None = None,
                 closed: anyio.Event | None = None) -> None:
        self._client = client
        self.server_version = server_version(client.server_info)
        self._token_in_meta = token_in_meta  # stdio has no headers: the token rides in _meta
        self._max_depth = max_result_depth
        self._closed = closed or anyio.Event()  # set by the transport too when the child's stream ends

    async def list_tools(self) -> list[dict[str, Any]]:
        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(100):  # bounded pagination
            page = await self._guard(self._client.session.list_tools(
                params=None if cursor is None else {"cursor": cursor}), timeout_s=30)
            tools.extend(t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        return tools

    async def call_tool(self, name: str, arguments: Mapping[str, Any], *, timeout_s: float,
                        request_id: str, actor_token: str | None = None,
                        trace_headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        meta: dict[str, Any] | None = None
        if actor_token and self._token_in_meta:
            meta = {ACTOR_TOKEN_META_KEY: actor_token}
        if trace_headers:  # W3C trace context in params._meta (the MCP convention over stdio)
            meta = {**(meta or {}), **trace_headers}
        result = await self._guard(self._client.session.call_tool(name, dict(arguments), meta=meta),
                                   timeout_s=timeout_s)
        dumped: dict[str, Any] = result.model_dump(by_alias=True, exclude_none=True, mode="json")
        if self._max_depth is not None and depth_exceeds(dumped, self._max_depth):
            raise ResultTooLarge(RESULT_TOO_DEEP, detail=f"result nested deeper than {self._max_depth}")
        return dumped

    async def ping(self, *, timeout_s: float) -> None:
        # `ping` is gone from 2026-07-28 and `server/discover` does not exist before it; a first
        # page of tools/list is valid in every era and cheap at health-check intervals.
        await self._guard(self._client.session.list_tools(), timeout_s=timeout_s)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def _guard(self, awaitable: Any, *, timeout_s: float) -> Any:
        if self._closed.is_set():
            awaitable.close()
            raise UpstreamUnavailable(detail="connection closed")
        try:
            with anyio.fail_after(timeout_s):
                return await awaitable
        except TimeoutError:
            raise UpstreamTimeout(detail=f"no answer within {timeout_s}s") from None
        except MCPError as exc:
            if exc.code == _CONNECTION_CLOSED:
                self._closed.set()
                raise UpstreamUnavailable(detail="connection closed mid-call") from None
            if exc.code == ResultTooLarge.code:  # the gateway's own transports say so (see stdio_bounded)
                raise ResultTooLarge(RESULT_TOO_DEEP if exc.error.message == RESULT_TOO_DEEP else None,
                                     detail="result over the service's limits") from None
            raise UpstreamFailed(detail=f"upstream JSON-RPC error {exc.code}") from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream, OSError) as exc:
            self._closed.set()
            raise UpstreamUnavailable(detail=f"connection lost: {type(exc).__name__}") from None


class SdkConnector:
    """Connects through ``mcp.Client``; used for stdio services and legacy-era HTTP services."""

    def __init__(self, name: str, cfg: StdioService | HttpService, environ: Mapping[str, str], *,
                 extra_env: Callable[[], Mapping[str, str]] | None = None) -> None:
        self.name = name
        self._cfg = cfg
        self._environ = dict(environ)
        self._extra_env = extra_env  # called at every spawn: the gateway's current public keys
        if isinstance(cfg, StdioService):
            stdio_parameters(cfg, self._environ)  # resolve the command now: a missing one is a config error

    @asynccontextmanager
    async def open(self) -> AsyncIterator[_SdkConnection]:
        if isinstance(self._cfg, StdioService):
            extra = self._extra_env() if self._extra_env is not None else None
            params = stdio_parameters(self._cfg, self._environ, extra)
            closed = anyio.Event()
            transport = bounded_stdio_client(params, max_line_bytes=self._cfg.max_result_bytes,
                                             max_depth=self._cfg.max_result_depth, closed=closed)
            async with Client(transport, cache=None) as client:
                yield _SdkConnection(client, token_in_meta=True, closed=closed)  # the transport checks depth
            return
        if not isinstance(self._cfg, HttpService):
            raise TypeError("unsupported service configuration")
        cfg = self._cfg
        guarded = GuardedTransport(httpx2.AsyncHTTPTransport(verify=cfg.ssl_context(), trust_env=False),
                                   max_body_bytes=cfg.max_result_bytes)
        async with httpx2.AsyncClient(transport=guarded, timeout=httpx2.Timeout(30.0, read=None),
                                      follow_redirects=False, trust_env=False,
                                      headers={"Accept-Encoding": "identity"}) as http:
            streams = streamable_http_client(cfg.url, http_client=http, max_sse_event_size=cfg.max_result_bytes)
            async with Client(streams, cache=None) as client:
                # legacy HTTP: third-party servers; the SDK parses the result, so its depth is checked here
                yield _SdkConnection(client, token_in_meta=False, max_result_depth=cfg.max_result_depth)
