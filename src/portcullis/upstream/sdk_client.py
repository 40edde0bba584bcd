"""Upstream connections through the official SDK client: stdio children and legacy HTTP.

stdio children get exactly the environment the configuration lists, nothing inherited (the SDK
would merge a default set, HOME, PATH, USER, …): confined children (the default) get it through
bwrap's options descriptor, unconfined ones (``sandbox.unsafe_no_sandbox``) as their process
environment; never on a command line, which every local user can read. The command is
resolved to an absolute path by the gateway first; each spawn is decided, recorded and prepared by
:mod:`.stdio_spawn`.

A child learns the gateway's public keys at spawn. While the key signing its tokens is one the
child was not given (the gateway rotated since), each call also carries the endorsed key sets it
needs (:meth:`~portcullis.identity.minting.TokenMinter.key_sets_for`) until a call succeeds with
them, so a child restarted late never refuses a call.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, cast

import anyio
import httpx2
from mcp import Client, MCPError, types
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ListenNotSupportedError, SubscriptionLost
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from portcullis.config.model import HttpService, StdioService
from portcullis.config.secrets import is_reference, resolve_secret
from portcullis.errors import (
    RESULT_TOO_DEEP,
    ConfigError,
    Problem,
    ResultTooLarge,
    UpstreamFailed,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from portcullis.identity.minting import ACTOR_TOKEN_META_KEY, GATEWAY_KEYS_META_KEY, EndorsedKeys, TokenMinter
from portcullis.notifications import CURRENT, MESSAGE, PROGRESS, CallStream
from portcullis.transport.jsonrpc import depth_exceeds
from portcullis.transport.push import PUSH, CallPush
from portcullis.upstream.build_identity import BuildIdentity, LaunchDigest, build_identity, digest_launch, url_origin
from portcullis.upstream.client_relay import ClientRelay
from portcullis.upstream.confined_spawn import StdioSandbox
from portcullis.upstream.interface import server_version
from portcullis.upstream.sdk_http_guard import GuardedTransport
from portcullis.upstream.stderr_relay import StderrRelay
from portcullis.upstream.stdio_bounded import bounded_stdio_client
from portcullis.upstream.stdio_spawn import RecordSpawn, check_confinement, prepare_spawn

log = logging.getLogger("portcullis.upstream")

_CONNECTION_CLOSED = -32000
LOG_LEVEL_META = "io.modelcontextprotocol/logLevel"


def stdio_argv(cfg: StdioService) -> list[str]:
    """The child's argv, the program resolved to an absolute path; ConfigError if it is not found."""
    if cfg.module is not None:
        return [sys.executable, "-m", cfg.module, *cfg.args]
    command = cfg.command or ""
    resolved = command if os.path.isabs(command) else shutil.which(command)
    if resolved is None:
        raise ConfigError([Problem(path=Path("gateway.yaml"), line=None,
                                   message=f"stdio command not found: {command}")])
    return [resolved, *cfg.args]


def stdio_launch(cfg: StdioService, environ: Mapping[str, str],
                 extra_env: Mapping[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The child's argv (:func:`stdio_argv`) and its whole environment: ``env_passthrough``, ``env`` (its
    ``secret://`` references resolved now, the current value of each) and the gateway's trust, nothing else."""
    argv = stdio_argv(cfg)
    child_env = {name: environ[name] for name in cfg.env_passthrough if name in environ}
    child_env.update({name: resolve_secret(value, origin=Path("gateway.yaml")) if is_reference(value) else value
                      for name, value in cfg.env.items()})
    child_env.update(extra_env or {})  # the gateway's public keys and the service's audience
    return argv, child_env


def secret_env_keys(cfg: StdioService) -> frozenset[str]:
    """The child's variables set from ``secret://`` references: redacted from its stderr whatever their name."""
    return frozenset(name for name, value in cfg.env.items() if is_reference(value))


class _InFlight:
    """The calls in flight on one connection, for attributing log messages (which name no request).

    A ``notifications/message`` goes to the one call in flight when there is exactly one; with none
    or several it cannot be attributed safely and is dropped (counted on each streaming call in
    flight as ``unattributed``, or in :data:`orphans` when there is none): never to a guess.
    """

    def __init__(self) -> None:
        self.calls: list[CallStream | None] = []
        self.pushes: list[CallPush | None] = []  # the same calls' push channels, for client requests

    def log(self, params: Any) -> None:
        if len(self.calls) == 1 and self.calls[0] is not None:
            self.calls[0].offer(MESSAGE, params)
            return
        streams = [stream for stream in self.calls if stream is not None]
        for stream in streams:
            stream.drop("unattributed")
        if not streams:
            orphans[0] += 1


orphans = [0]  # log messages that arrived with no streaming call to attribute them to (dropped)


class _SdkConnection:
    def __init__(self, client: Client, *, token_in_meta: bool, max_result_depth: int | None = None,
                 closed: anyio.Event | None = None, gateway_keys: TokenMinter | None = None,
                 child_kids: frozenset[str] = frozenset(), in_flight: _InFlight | None = None,
                 listens: Any = None, launch: LaunchDigest | None = None, origin: str | None = None) -> None:
        self._client = client
        self._listens = listens  # a task group for 2026-07-28 resource subscription streams
        self._listen_scopes: dict[str, anyio.CancelScope] = {}
        self._in_flight = in_flight or _InFlight()
        self.server_version = server_version(client.server_info)
        self.build_identity: BuildIdentity | None = build_identity(
            "http" if origin is not None else "stdio", client.server_info, client.protocol_version,
            launch=launch, origin=origin)
        self._token_in_meta = token_in_meta  # stdio has no headers: the token rides in _meta
        self._max_depth = max_result_depth
        self._closed = closed or anyio.Event()  # set by the transport too when the child's stream ends
        self._gateway_keys = gateway_keys
        # the keys this child trusts as far as we know: those it was spawned with, then those of
        # the last key set it accepted
        self._child_kids = child_kids

    async def list_tools(self) -> list[dict[str, Any]]:
        return await self._pages(self._client.session.list_tools, "tools")

    async def list_resources(self) -> list[dict[str, Any]]:
        return await self._pages(self._client.session.list_resources, "resources")

    async def list_resource_templates(self) -> list[dict[str, Any]]:
        return await self._pages(self._client.session.list_resource_templates, "resource_templates")

    async def list_prompts(self) -> list[dict[str, Any]]:
        return await self._pages(self._client.session.list_prompts, "prompts")

    async def read_resource(self, uri: str, *, timeout_s: float, actor_token: str | None = None,
                            input_responses: Mapping[str, Any] | None = None, request_state: str | None = None,
                            client_capabilities: Mapping[str, Any] | None = None) -> dict[str, Any]:
        meta, offered = self._token_meta(actor_token)
        result = await self._guard(self._client.session.read_resource(
            uri, meta=cast(Any, meta), **_mrtr(input_responses, request_state)), timeout_s=timeout_s)
        self._accepted(offered)
        return self._bounded(result)

    async def get_prompt(self, name: str, arguments: Mapping[str, str], *, timeout_s: float,
                         actor_token: str | None = None, input_responses: Mapping[str, Any] | None = None,
                         request_state: str | None = None,
                         client_capabilities: Mapping[str, Any] | None = None) -> dict[str, Any]:
        meta, offered = self._token_meta(actor_token)
        result = await self._guard(self._client.session.get_prompt(
            name, dict(arguments), meta=cast(Any, meta), **_mrtr(input_responses, request_state)), timeout_s=timeout_s)
        self._accepted(offered)
        return self._bounded(result)

    async def complete(self, ref: Mapping[str, str], argument: Mapping[str, str],
                       context_arguments: Mapping[str, str] | None, *, timeout_s: float,
                       actor_token: str | None = None) -> dict[str, Any]:
        meta, offered = self._token_meta(actor_token)
        reference: Any = (types.PromptReference(type="ref/prompt", name=ref.get("name", ""))
                          if ref.get("type") == "ref/prompt" else
                          types.ResourceTemplateReference(type="ref/resource", uri=ref.get("uri", "")))
        request = types.CompleteRequest(params=types.CompleteRequestParams(
            ref=reference, argument=types.CompletionArgument(**argument),
            context=None if not context_arguments else types.CompletionContext(arguments=dict(context_arguments)),
            _meta=cast(Any, meta)))
        result = await self._guard(self._client.session.send_request(request, types.CompleteResult),
                                   timeout_s=timeout_s)
        self._accepted(offered)
        return self._depth_checked(result.model_dump(by_alias=True, exclude_none=True, mode="json"))

    def _token_meta(self, actor_token: str | None) -> tuple[dict[str, Any] | None, EndorsedKeys | None]:
        """The ``_meta`` that carries the actor token over stdio, with the key sets a child spawned before
        a rotation needs (HTTP services get the token as a header: nothing here)."""
        if not actor_token or not self._token_in_meta:
            return None, None
        meta: dict[str, Any] = {ACTOR_TOKEN_META_KEY: actor_token}
        if self._gateway_keys is not None:
            chain = self._gateway_keys.key_sets_for(self._child_kids)
            if chain is not None:  # signed by a key published after the spawn
                meta[GATEWAY_KEYS_META_KEY] = [link.document for link in chain]
                return meta, chain[-1]
        return meta, None

    def _accepted(self, offered: EndorsedKeys | None) -> None:
        if offered is not None:  # the child verified the token, so it holds these keys now
            self._child_kids = offered.kids

    async def _pages(self, method: Any, field: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(100):  # bounded pagination
            page = await self._guard(method(
                params=None if cursor is None else types.PaginatedRequestParams(cursor=cursor)), timeout_s=30)
            items.extend(t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in getattr(page, field))
            cursor = page.next_cursor
            if not cursor:
                break
        return items

    def _bounded(self, result: Any) -> dict[str, Any]:
        if not isinstance(result, types.ReadResourceResult | types.GetPromptResult | types.InputRequiredResult):
            raise UpstreamFailed(detail=f"unsupported result {type(result).__name__[:40]}")
        return self._depth_checked(result.model_dump(by_alias=True, exclude_none=True, mode="json"))

    def _depth_checked(self, dumped: dict[str, Any]) -> dict[str, Any]:
        if self._max_depth is not None and depth_exceeds(dumped, self._max_depth):
            raise ResultTooLarge(RESULT_TOO_DEEP, detail=f"result nested deeper than {self._max_depth}")
        return dumped

    async def call_tool(self, name: str, arguments: Mapping[str, Any], *, timeout_s: float,
                        request_id: str, actor_token: str | None = None,
                        trace_headers: Mapping[str, str] | None = None,
                        input_responses: Mapping[str, Any] | None = None, request_state: str | None = None,
                        client_capabilities: Mapping[str, Any] | None = None) -> dict[str, Any]:
        # client_capabilities: the SDK session declares its own (pitfall P2); the pipeline refuses every input
        # request the caller did not declare, whatever the service was told
        meta, offered = self._token_meta(actor_token)
        if trace_headers:  # W3C trace context in params._meta (the MCP convention over stdio)
            meta = {**(meta or {}), **trace_headers}
        stream = CURRENT.get()  # a caller reading this call's notifications as a stream, if any
        on_progress: Any = None
        if stream is not None:
            if stream.progress_token is not None:
                async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                    stream.offer(PROGRESS, {"progress": progress, "total": total, "message": message})
            if stream.wants_logs:  # a 2026-07-28 service sends log messages only when a request opts in
                meta = {**(meta or {}), LOG_LEVEL_META: stream.log_level}
        push = PUSH.get()  # a 2025-era caller that client requests of this call may be relayed to
        self._in_flight.calls.append(stream)
        self._in_flight.pushes.append(push)
        try:
            result = await self._guard(self._client.session.call_tool(
                name, dict(arguments), progress_callback=on_progress, meta=cast(Any, meta),
                **_mrtr(input_responses, request_state)), timeout_s=timeout_s)
        finally:
            self._in_flight.calls.remove(stream)
            self._in_flight.pushes.remove(push)
        self._accepted(offered)
        return self._depth_checked(result.model_dump(by_alias=True, exclude_none=True, mode="json"))

    async def subscribe_resource(self, uri: str) -> None:
        """Updates of ``uri`` from now on (they reach the connector's message handler): ``resources/subscribe``
        on a 2025-era session, a ``subscriptions/listen`` stream for it on a 2026-07-28 one."""
        if self._client.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            await self._guard(self._client.session.subscribe_resource(uri), timeout_s=30)
            return
        if self._listens is None:
            raise UpstreamFailed(detail="no listen stream available")
        scope = anyio.CancelScope()
        self._listen_scopes[uri] = scope
        self._listens.start_soon(self._listen_one, uri, scope)

    async def unsubscribe_resource(self, uri: str) -> None:
        if self._client.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            await self._guard(self._client.session.unsubscribe_resource(uri), timeout_s=30)
            return
        scope = self._listen_scopes.pop(uri, None)
        if scope is not None:
            scope.cancel()

    async def _listen_one(self, uri: str, scope: anyio.CancelScope) -> None:
        with scope:
            try:
                async with self._client.listen(resource_subscriptions=[uri]) as subscription:
                    async for _ in subscription:  # each event also reaches the message handler
                        pass
            except (MCPError, SubscriptionLost, ListenNotSupportedError, TimeoutError,
                    anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
                log.info("resource subscription stream ended", extra={"fields": {"reason": type(exc).__name__}})

    async def ping(self, *, timeout_s: float) -> list[dict[str, Any]] | None:
        # `ping` is gone from 2026-07-28 and `server/discover` does not exist before it; a first
        # page of tools/list is valid in every era, cheap at health-check intervals, and when it is
        # the whole listing the pin check gets it for free.
        page = await self._guard(self._client.session.list_tools(), timeout_s=timeout_s)
        if page.next_cursor:
            return None
        return [t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in page.tools]

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
        except ValidationError:  # e.g. inputResponses the SDK's models do not take: not sent at all
            raise UpstreamFailed(detail="request or answer not valid for the SDK's models") from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream, OSError) as exc:
            self._closed.set()
            raise UpstreamUnavailable(detail=f"connection lost: {type(exc).__name__}") from None


def _mrtr(input_responses: Mapping[str, Any] | None, request_state: str | None) -> dict[str, Any]:
    """The SDK session's MRTR keywords: an ``input_required`` answer is returned (the pipeline screens it),
    and a retry carries the responses and the service's own state. Nothing changes on a 2025-era leg."""
    return {"allow_input_required": True, "request_state": request_state,
            "input_responses": None if input_responses is None else cast(Any, dict(input_responses))}


def _log_relay(in_flight: _InFlight) -> Any:
    """The SDK client's logging callback: a service's log message goes to the call it belongs to, if any."""

    async def relay(params: types.LoggingMessageNotificationParams) -> None:
        in_flight.log(params.model_dump(by_alias=True, exclude_none=True, mode="json"))

    return relay


class SdkConnector:
    """Connects through ``mcp.Client``; used for stdio services and legacy-era HTTP services."""

    def __init__(self, name: str, cfg: StdioService | HttpService, environ: Mapping[str, str], *,
                 extra_env: Callable[[], Mapping[str, str]] | None = None,
                 gateway_keys: TokenMinter | None = None,
                 on_tools_changed: Callable[[], None] | None = None,
                 stderr_withhold_key: bytes | None = None,
                 on_event: Callable[[str, Any], None] | None = None,
                 sandbox: StdioSandbox | None = None, on_spawn: RecordSpawn | None = None) -> None:
        self.name = name
        self._on_event = on_event  # resource/prompt list changes and resource updates (portcullis.upstream_events)
        self._cfg = cfg
        # set when the service serves data that may not reach logs: its stderr lines are logged value-free
        self._stderr_withhold_key = stderr_withhold_key
        self._environ = dict(environ)
        self._extra_env = extra_env  # called at every spawn: the gateway's current public keys
        self._gateway_keys = gateway_keys  # the endorsed key set, for children spawned before a rotation
        self._on_tools_changed = on_tools_changed
        self._on_spawn = on_spawn  # the spawn audit record, durable before each child starts
        self._sandbox = sandbox
        if isinstance(cfg, StdioService):
            stdio_argv(cfg)  # resolve the command now: a missing one is a config error (secrets: at each spawn)
            self._sandbox = check_confinement(name, cfg, sandbox or StdioSandbox.from_environ(self._environ))

    @asynccontextmanager
    async def open(self) -> AsyncIterator[_SdkConnection]:
        if isinstance(self._cfg, StdioService):
            extra = self._extra_env() if self._extra_env is not None else None
            argv, child_env = stdio_launch(self._cfg, self._environ, extra)
            # read in the same synchronous step as the environment: exactly the keys the child gets
            spawn_kids = self._gateway_keys.endorsed_keys().kids if self._gateway_keys is not None else frozenset()
            sandbox = self._sandbox or check_confinement(self.name, self._cfg, StdioSandbox())  # set in __init__
            # what this spawn runs, hashed once, off the event loop (the service_identity record)
            launch = await anyio.to_thread.run_sync(digest_launch, argv, self._cfg.cwd and os.path.realpath(
                self._cfg.cwd), self._cfg.module)
            spawn = await prepare_spawn(self.name, self._cfg, argv, child_env, sandbox, self._on_spawn)
            try:
                closed = anyio.Event()
                transport = bounded_stdio_client(spawn.params, max_line_bytes=self._cfg.max_result_bytes,
                                                 max_depth=self._cfg.max_result_depth, closed=closed,
                                                 pass_fds=spawn.pass_fds,
                                                 stderr=StderrRelay(self.name, env=child_env,
                                                                    secret_keys=secret_env_keys(self._cfg),
                                                                    max_line_bytes=self._cfg.stderr.max_line_bytes,
                                                                    lines_per_s=self._cfg.stderr.lines_per_s,
                                                                    burst=self._cfg.stderr.burst,
                                                                    withhold_key=self._stderr_withhold_key))
                in_flight = _InFlight()
                async with Client(transport, cache=None, message_handler=self._on_message,
                                  logging_callback=_log_relay(in_flight), mode=self._mode(),
                                  **self._relay(in_flight)) as client, self._listening(client), \
                        anyio.create_task_group() as listens:
                    # the transport checks depth
                    yield _SdkConnection(client, token_in_meta=True, closed=closed, gateway_keys=self._gateway_keys,
                                         child_kids=spawn_kids, in_flight=in_flight, listens=listens,
                                         launch=launch)
                    listens.cancel_scope.cancel()
            finally:
                spawn.cleanup()
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
            in_flight = _InFlight()
            async with Client(streams, cache=None, message_handler=self._on_message,
                              logging_callback=_log_relay(in_flight), mode=self._mode(),
                              **self._relay(in_flight)) as client, self._listening(client), \
                    anyio.create_task_group() as listens:
                # legacy HTTP: third-party servers; the SDK parses the result, so its depth is checked here
                yield _SdkConnection(client, token_in_meta=False, max_result_depth=cfg.max_result_depth,
                                     in_flight=in_flight, listens=listens, origin=url_origin(cfg.url))
                listens.cancel_scope.cancel()

    def _mode(self) -> Literal["auto", "legacy"]:
        """``protocol: legacy``: always the 2025-era handshake, a session the service can push requests on."""
        return "legacy" if self._cfg.protocol == "legacy" else "auto"

    def _relay(self, in_flight: _InFlight) -> dict[str, Any]:
        """The client-request callbacks (sampling, elicitation, roots) when the service may ask any."""
        return ClientRelay(self.name, self._cfg.client_requests, lambda: in_flight.pushes).callbacks()

    async def _on_message(self, message: Any) -> None:
        """Every server notification, on either era: a tool-list change is reported before any await."""
        if isinstance(message, types.ToolListChangedNotification) and self._on_tools_changed is not None:
            self._on_tools_changed()
        elif self._on_event is not None and isinstance(message, types.ResourceListChangedNotification
                                                       | types.PromptListChangedNotification
                                                       | types.ResourceUpdatedNotification):
            params = getattr(message, "params", None)
            self._on_event(message.method, {"uri": str(params.uri)} if params is not None
                           and hasattr(params, "uri") else {})

    @asynccontextmanager
    async def _listening(self, client: Client) -> AsyncIterator[None]:
        """On a 2026-07-28 connection, keep a ``subscriptions/listen`` stream for tool-list changes open
        (its events reach :meth:`_on_message` like a 2025-era push); older servers push unasked."""
        if (self._on_tools_changed is None and self._on_event is None) \
                or client.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            yield
            return
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._listen, client)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()

    async def _listen(self, client: Client) -> None:
        try:
            async with client.listen(tools_list_changed=True, resources_list_changed=self._on_event is not None,
                                     prompts_list_changed=self._on_event is not None) as subscription:
                if not subscription.honored.tools_list_changed:
                    log.info("service does not announce tool-list changes; checked at every health check",
                             extra={"fields": {"service": self.name}})
                    await anyio.sleep_forever()
                async for _ in subscription:  # each event also reaches _on_message
                    pass
        except (MCPError, SubscriptionLost, ListenNotSupportedError, TimeoutError,
                anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
            log.info("no tool-list change stream from service; checked at every health check",
                     extra={"fields": {"service": self.name, "reason": type(exc).__name__}})
            if isinstance(exc, SubscriptionLost) and self._on_tools_changed is not None:
                self._on_tools_changed()  # changes may have been missed while it was down
