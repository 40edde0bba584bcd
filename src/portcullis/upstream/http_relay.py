"""A raw JSON-RPC relay to 2026-07-28 (stateless) HTTP services.

The SDK client costs about 0.45 ms per call on this hardware over a plain pooled HTTP POST, which
is half the gateway's whole budget, so for services that speak the stateless revision the
gateway relays JSON-RPC itself over a small keep-alive pool (:mod:`.http11`). It sends the request
metadata headers the revision requires (``MCP-Protocol-Version``, ``Mcp-Method``, ``Mcp-Name``,
``Mcp-Param-*`` for arguments whose schema asks), the gateway's own fixed client capabilities,
and accepts either a JSON or an SSE answer. The caller's token and headers are never forwarded.

Every answer is checked before its connection may be pooled (:func:`read_answer`): exactly one
JSON-RPC response carrying the request's id (random per request, compared with its JSON type), a
body no larger than the service's ``max_result_bytes`` (enforced while reading, by the pool) and a
result no deeper than its ``max_result_depth``. A failed check fails that call only (-31004, or
-31005 for the limits) and closes the connection.

Tool-list changes: the revision has no unasked push, so the connection keeps one
``subscriptions/listen`` stream (``toolsListChanged``) open beside the pool and reports each
``notifications/tools/list_changed`` on it, or inside any answer's SSE stream, to
``on_tools_changed``. A service that refuses the stream is checked at every health check instead
(the health check is a first page of ``tools/list``); a stream that drops after it was accepted
counts as a possible change, then is reopened.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import orjson

from portcullis.config.model import HttpService
from portcullis.errors import RESULT_TOO_DEEP, ResultTooLarge, UpstreamFailed, UpstreamTimeout, UpstreamUnavailable
from portcullis.notifications import CURRENT, PROGRESS, CallStream
from portcullis.transport.jsonrpc import depth_exceeds
from portcullis.upstream.build_identity import BuildIdentity, build_identity, url_origin
from portcullis.upstream.http11 import Http11Pool, HttpError, ProtocolError, Response, ResponseTooLarge
from portcullis.upstream.interface import server_version
from portcullis.upstream.sse_answer import TOOLS_CHANGED, SseAnswer, check_id, is_response, media_type, parse

MODERN = "2026-07-28"
_MAX_EVENT_CHARS = 65_536  # one SSE event on the listen stream
log = logging.getLogger("portcullis.upstream")
_CLIENT_INFO = {"name": "portcullis-gateway", "version": "0.1.0"}
_META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {},
         "io.modelcontextprotocol/clientInfo": _CLIENT_INFO}


class NotModern(Exception):
    """The service does not speak 2026-07-28; fall back to the SDK client."""


class _BrokenHttp(UpstreamFailed):
    """The upstream's bytes were not a well-formed HTTP/1.1 response: a broken service, not an old one."""


def header_value(value: str) -> str:
    """ASCII values as they are; anything else in the ``=?base64?…?=`` sentinel form."""
    if value.isascii() and value.isprintable() and value == value.strip():
        return value
    return "=?base64?" + base64.b64encode(value.encode()).decode() + "?="


def _param_headers(schema: Mapping[str, Any]) -> dict[str, str]:
    """Argument name → header name, for top-level properties annotated with ``x-mcp-header``."""
    props = schema.get("properties")
    if not isinstance(props, Mapping):
        return {}
    return {arg: spec["x-mcp-header"] for arg, spec in props.items()
            if isinstance(spec, Mapping) and isinstance(spec.get("x-mcp-header"), str)}


class _RelayConnection:
    def __init__(self, pool: Http11Pool, *, max_result_depth: int = 64,
                 on_tools_changed: Callable[[], None] | None = None,
                 listen: Callable[[str, anyio.CancelScope], Any] | None = None) -> None:
        self.server_version: str | None = None
        self.build_identity: BuildIdentity | None = None
        self._listen = listen  # starts one resourceSubscriptions stream (the connector's task group)
        self._listen_scopes: dict[str, anyio.CancelScope] = {}
        self._pool = pool
        self._max_depth = max_result_depth
        self._on_tools_changed = on_tools_changed
        self._param_headers: dict[str, dict[str, str]] = {}
        self._closed = anyio.Event()

    async def rpc(self, method: str, params: dict[str, Any], *, timeout_s: float,
                  name: str | None = None, extra_headers: Mapping[str, str] | None = None,
                  stream: CallStream | None = None, client_capabilities: Mapping[str, Any] | None = None) -> Any:
        # random, not a counter: an answer written for any other request (a duplicate, a stale or a
        # pipelined one, a server numbering answers itself) cannot carry this id by coincidence
        request_id = random.getrandbits(52) + 1  # uniqueness, not secrecy; within JavaScript's safe integers
        meta: dict[str, Any] = _META
        answer: SseAnswer | None = None
        if stream is not None:  # this call's notifications, from its own SSE answer, go to its caller as they come
            answer, meta = SseAnswer(request_id, _offer_to(stream, request_id)), dict(_META)
            if stream.progress_token is not None:
                meta["progressToken"] = request_id  # ours: the caller's token is put back by the stream
            if stream.wants_logs:
                meta["io.modelcontextprotocol/logLevel"] = stream.log_level
        if client_capabilities:  # what the caller declared and the service may use (client_input stage)
            meta = {**meta, "io.modelcontextprotocol/clientCapabilities": dict(client_capabilities)}
        params = {**params, "_meta": meta}
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                   "MCP-Protocol-Version": MODERN, "Mcp-Method": method}
        if name is not None:
            headers["Mcp-Name"] = header_value(name)
        if extra_headers:
            headers.update(extra_headers)
        body = orjson.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        max_depth, on_changed = self._max_depth, self._on_tools_changed

        def read(response: Response) -> dict[str, Any]:  # runs before the connection may be pooled
            return read_answer(response, request_id, max_depth=max_depth, on_tools_changed=on_changed, sse=answer)

        try:
            async with asyncio.timeout(timeout_s):
                message = await self._pool.exchange(body, headers, read, None if answer is None else answer.watch)
        except TimeoutError:
            raise UpstreamTimeout(detail=f"no answer within {timeout_s}s") from None
        except ResponseTooLarge as exc:
            raise ResultTooLarge(detail=f"transport: {exc}") from None
        except ProtocolError as exc:
            raise _BrokenHttp(detail=f"transport: {exc}") from None
        except HttpError as exc:
            raise UpstreamUnavailable(detail=f"transport: {exc}") from None
        if "error" in message:
            error = message["error"] if isinstance(message["error"], dict) else {}
            raise UpstreamFailed(detail=f"upstream JSON-RPC error {error.get('code')}")
        return message.get("result")

    async def _pages(self, method: str, field: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        for _ in range(100):
            result = await self.rpc(method, {} if cursor is None else {"cursor": cursor}, timeout_s=30)
            if not isinstance(result, dict) or not isinstance(result.get(field), list):
                raise UpstreamFailed(detail=f"malformed {method} result")
            items.extend(t for t in result[field] if isinstance(t, dict))
            cursor = result.get("nextCursor")
            if not cursor:
                break
        return items

    async def list_resources(self) -> list[dict[str, Any]]:
        return await self._pages("resources/list", "resources")

    async def list_resource_templates(self) -> list[dict[str, Any]]:
        return await self._pages("resources/templates/list", "resourceTemplates")

    async def list_prompts(self) -> list[dict[str, Any]]:
        return await self._pages("prompts/list", "prompts")

    async def read_resource(self, uri: str, *, timeout_s: float, actor_token: str | None = None,
                            input_responses: Mapping[str, Any] | None = None, request_state: str | None = None,
                            client_capabilities: Mapping[str, Any] | None = None) -> dict[str, Any]:
        params = _retry({"uri": uri}, input_responses, request_state)
        return _complete(await self.rpc("resources/read", params, timeout_s=timeout_s, name=uri,
                                        extra_headers=_bearer(actor_token), client_capabilities=client_capabilities),
                         "resources/read")

    async def get_prompt(self, name: str, arguments: Mapping[str, str], *, timeout_s: float,
                         actor_token: str | None = None, input_responses: Mapping[str, Any] | None = None,
                         request_state: str | None = None,
                         client_capabilities: Mapping[str, Any] | None = None) -> dict[str, Any]:
        params = _retry({"name": name, "arguments": dict(arguments)}, input_responses, request_state)
        return _complete(await self.rpc("prompts/get", params, timeout_s=timeout_s, name=name,
                                        extra_headers=_bearer(actor_token), client_capabilities=client_capabilities),
                         "prompts/get")

    async def complete(self, ref: Mapping[str, str], argument: Mapping[str, str],
                       context_arguments: Mapping[str, str] | None, *, timeout_s: float,
                       actor_token: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"ref": dict(ref), "argument": dict(argument)}
        if context_arguments:
            params["context"] = {"arguments": dict(context_arguments)}
        return _complete(await self.rpc("completion/complete", params, timeout_s=timeout_s,
                                        extra_headers=_bearer(actor_token)), "completion/complete")

    async def list_tools(self) -> list[dict[str, Any]]:
        tools = await self._pages("tools/list", "tools")
        self._param_headers = {t["name"]: _param_headers(t.get("inputSchema") or {})
                               for t in tools if isinstance(t.get("name"), str)}
        return tools

    async def call_tool(self, name: str, arguments: Mapping[str, Any], *, timeout_s: float,
                        request_id: str, actor_token: str | None = None,
                        trace_headers: Mapping[str, str] | None = None,
                        input_responses: Mapping[str, Any] | None = None, request_state: str | None = None,
                        client_capabilities: Mapping[str, Any] | None = None) -> dict[str, Any]:
        extra = {f"Mcp-Param-{header}": header_value(_scalar(arguments[arg]))
                 for arg, header in self._param_headers.get(name, {}).items() if arg in arguments}
        extra.update(_bearer(actor_token))
        if trace_headers:
            extra.update(trace_headers)  # W3C trace context: the upstream's spans join the call's trace
        params = _retry({"name": name, "arguments": dict(arguments)}, input_responses, request_state)
        result = await self.rpc("tools/call", params, timeout_s=timeout_s, name=name, extra_headers=extra,
                                stream=CURRENT.get(), client_capabilities=client_capabilities)
        return _complete(result, "tools/call")

    async def ping(self, *, timeout_s: float) -> list[dict[str, Any]] | None:
        # 2026-07-28 has no `ping`; a first page of tools/list proves the service answers and, when
        # it is the whole listing, lets the pin check see a change nobody announced
        result = await self.rpc("tools/list", {}, timeout_s=timeout_s)
        if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
            raise UpstreamFailed(detail="malformed tools/list result")
        if result.get("nextCursor"):
            return None
        return [t for t in result["tools"] if isinstance(t, dict)]

    async def subscribe_resource(self, uri: str) -> None:
        """Updates of ``uri``: a ``subscriptions/listen`` stream with ``resourceSubscriptions: [uri]``."""
        if self._listen is None:
            raise UpstreamFailed(detail="no listen stream available")
        if uri not in self._listen_scopes:
            scope = self._listen_scopes[uri] = anyio.CancelScope()
            self._listen(uri, scope)

    async def unsubscribe_resource(self, uri: str) -> None:
        scope = self._listen_scopes.pop(uri, None)
        if scope is not None:
            scope.cancel()

    async def wait_closed(self) -> None:
        await self._closed.wait()  # stateless: only a failed health ping ends a relay connection


def _bearer(actor_token: str | None) -> dict[str, str]:
    """The ``Authorization`` header of a token minted for this service (never the caller's)."""
    return {"Authorization": f"Bearer {actor_token}"} if actor_token else {}


def _retry(params: dict[str, Any], input_responses: Mapping[str, Any] | None,
           request_state: str | None) -> dict[str, Any]:
    """``params`` of an MRTR retry: with the responses and the service's own state (the gateway opened its
    envelope: the caller never saw it)."""
    if input_responses is not None:
        params["inputResponses"] = dict(input_responses)
    if request_state is not None:
        params["requestState"] = request_state
    return params


def _complete(result: Any, method: str) -> dict[str, Any]:
    """A ``complete`` or ``input_required`` result object (bounded by the pool and :func:`read_answer`; the
    pipeline screens an ``input_required`` one), or UpstreamFailed."""
    if not isinstance(result, dict):
        raise UpstreamFailed(detail=f"malformed {method} result")
    if result.get("resultType", "complete") not in ("complete", "input_required"):
        raise UpstreamFailed(detail=f"unsupported resultType {str(result.get('resultType'))[:32]}")
    return result


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _offer_to(stream: CallStream, request_id: int) -> Callable[[bool, dict[str, Any]], None]:
    """Hand each of a call's notifications, as it is read, to its caller's stream: progress only for
    the token this request sent, log messages as they are (the stream is this request's alone);
    those sent after the response are dropped (``after_end``)."""

    def offer(after: bool, note: dict[str, Any]) -> None:
        method, params = note.get("method"), note.get("params")
        if after:
            stream.drop("after_end")
        elif method == PROGRESS and (not isinstance(params, dict) or params.get("progressToken") != request_id
                                     or type(params.get("progressToken")) is not int):
            stream.drop("unattributed")
        else:
            stream.offer(str(method), params)

    return offer


def offer_notes(stream: CallStream, notes: list[tuple[bool, dict[str, Any]]], request_id: int) -> None:
    """:func:`_offer_to` over notifications collected in stream order (``(after, message)`` pairs)."""
    offer = _offer_to(stream, request_id)
    for after, note in notes:
        offer(after, note)


def read_answer(response: Response, request_id: int, *, max_depth: int,
                on_tools_changed: Callable[[], None] | None = None,
                notes: list[tuple[bool, dict[str, Any]]] | None = None,
                sse: SseAnswer | None = None) -> dict[str, Any]:
    """The JSON-RPC response to ``request_id`` in an HTTP answer (JSON or SSE), checked.

    The answer must be exactly one response object whose id is ``request_id`` — the same JSON
    type and value: ``"1"``, ``1.0`` and ``true`` are not ``1`` — with a result nested no deeper
    than ``max_depth``. Anything else raises (:class:`UpstreamFailed`, or :class:`ResultTooLarge`
    for depth), and the pool then closes the connection instead of pooling it. A
    ``notifications/tools/list_changed`` anywhere in an SSE answer is reported to
    ``on_tools_changed`` (synchronously, before the answer is returned). ``notes``: where the
    stream's ``notifications/progress`` and ``notifications/message`` before the response are
    collected in order, each with whether it came after the response (None: dropped). ``sse``: the
    answer's events were already read as they arrived (:meth:`SseAnswer.watch`); only its end is left.
    """
    content_type = media_type(response.headers)
    if content_type == "text/event-stream":
        if sse is None:
            message, changed = _read_sse(response.body, request_id, notes)
        else:
            message, changed = sse.finish()
        if changed and on_tools_changed is not None:
            on_tools_changed()
    elif content_type == "application/json":
        message = parse(response.body, "upstream sent invalid JSON")
        if not is_response(message):
            raise UpstreamFailed(detail="upstream answer is not one JSON-RPC response")
        check_id(message, request_id)
    else:
        raise (UpstreamUnavailable if response.status >= 500 else UpstreamFailed)(
            detail=f"upstream HTTP {response.status} {content_type[:40]}")
    if "result" in message and depth_exceeds(message["result"], max_depth, raw=response.body):
        raise ResultTooLarge(RESULT_TOO_DEEP, detail=f"result nested deeper than {max_depth}")
    return message


def _read_sse(body: bytes, request_id: int,
              notes: list[tuple[bool, dict[str, Any]]] | None = None) -> tuple[dict[str, Any], bool]:
    """The one response in a whole SSE answer, which must answer ``request_id``, and whether the
    stream also announced ``notifications/tools/list_changed`` (:class:`SseAnswer`'s rules)."""
    answer = SseAnswer(request_id, None if notes is None else lambda after, note: notes.append((after, note)))
    answer.feed(body)
    return answer.finish()


def _sse_events(text: str) -> list[Any]:
    """The parsed ``data:`` of each complete SSE event of ``text``."""
    messages = []
    for event in text.replace("\r\n", "\n").replace("\r", "\n").split("\n\n"):
        data = "\n".join(line[5:].removeprefix(" ") for line in event.split("\n") if line.startswith("data:"))
        if data:
            messages.append(parse(data, "upstream sent invalid JSON in SSE"))
    return messages


class HttpRelayConnector:
    """Opens a pooled relay to a 2026-07-28 HTTP service; raises :class:`NotModern` otherwise."""

    def __init__(self, name: str, cfg: HttpService, *, on_tools_changed: Callable[[], None] | None = None,
                 on_event: Callable[[str, Any], None] | None = None) -> None:
        self.name = name
        self._cfg = cfg
        self._on_tools_changed = on_tools_changed
        self._on_event = on_event  # resource/prompt list changes and resource updates

    @asynccontextmanager
    async def open(self) -> AsyncIterator[_RelayConnection]:
        verify = self._cfg.ssl_context()
        pool = Http11Pool(self._cfg.url, ssl_context=verify if isinstance(verify, ssl.SSLContext) else None,
                          connect_timeout_s=self._cfg.connect_timeout_s,
                          max_response_bytes=self._cfg.max_result_bytes)
        try:
            connection = _RelayConnection(pool, max_result_depth=self._cfg.max_result_depth,
                                          on_tools_changed=self._on_tools_changed)
            try:
                discovered = await connection.rpc("server/discover", {}, timeout_s=self._cfg.connect_timeout_s)
            except (_BrokenHttp, ResultTooLarge):
                raise  # retried with backoff, never a reason to fall back to the SDK client
            except UpstreamFailed as exc:
                raise NotModern(exc.detail) from None
            versions = discovered.get("supportedVersions") if isinstance(discovered, dict) else None
            if not isinstance(versions, list) or MODERN not in versions:
                raise NotModern("server/discover does not list 2026-07-28")
            connection.server_version = server_version(discovered.get("serverInfo"))
            connection.build_identity = build_identity("http", discovered.get("serverInfo"), MODERN,
                                                       origin=url_origin(self._cfg.url))
            if self._on_tools_changed is None and self._on_event is None:
                yield connection
                return
            async with anyio.create_task_group() as tg:
                name, cfg, on_event = self.name, self._cfg, self._on_event

                def listen(uri: str, scope: anyio.CancelScope) -> None:
                    async def run() -> None:
                        with scope:
                            await listen_for_changes(name, cfg, lambda: None, on_event,
                                                     notifications={"resourceSubscriptions": [uri]})
                    tg.start_soon(run)

                connection._listen = listen
                tg.start_soon(listen_for_changes, self.name, self._cfg, self._on_tools_changed or (lambda: None),
                              self._on_event)
                try:
                    yield connection
                finally:
                    tg.cancel_scope.cancel()
        finally:
            await pool.aclose()


async def listen_for_changes(name: str, cfg: HttpService, changed: Callable[[], None],
                             on_event: Callable[[str, Any], None] | None = None, *,
                             notifications: dict[str, Any] | None = None) -> None:
    """Keep a ``subscriptions/listen`` stream open and report each tool-list change (see the module
    docstring), and each resource/prompt list change or resource update to ``on_event``. Events are
    read with a bounded buffer: a hostile stream cannot grow memory. ``notifications``: the filter
    (default: the three list changes, or only tools when there is no ``on_event``)."""
    if notifications is None:
        notifications = {"toolsListChanged": True}
        if on_event is not None:
            notifications.update(resourcesListChanged=True, promptsListChanged=True)
    backoff = 1.0
    while True:
        try:
            accepted = await _listen_once(cfg, changed, on_event, notifications)
        except (httpx2.HTTPError, OSError, UpstreamFailed) as exc:
            accepted = None
            log.info("change stream failed", extra={"fields": {"service": name, "error": type(exc).__name__}})
        if accepted is False:
            log.info("service offers no change stream; checked at every health check",
                     extra={"fields": {"service": name}})
            return
        if accepted:  # it was open: changes may have been missed while it was down
            changed()
            backoff = 1.0
        await anyio.sleep(backoff)
        backoff = min(backoff * 2, 30.0)


_EVENTS = frozenset({"notifications/resources/list_changed", "notifications/prompts/list_changed",
                     "notifications/resources/updated"})


async def _listen_once(cfg: HttpService, changed: Callable[[], None], on_event: Callable[[str, Any], None] | None,
                       notifications: dict[str, Any]) -> bool | None:
    """One stream: False if the service refuses it, True if it was accepted and then ended."""
    body = {"jsonrpc": "2.0", "id": "portcullis-listen", "method": "subscriptions/listen",
            "params": {"notifications": notifications, "_meta": _META}}
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream, application/json",
               "MCP-Protocol-Version": MODERN, "Mcp-Method": "subscriptions/listen"}
    timeout = httpx2.Timeout(cfg.connect_timeout_s, read=None)
    async with httpx2.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False,
                                  verify=cfg.ssl_context()) as http, \
            http.stream("POST", cfg.url, content=orjson.dumps(body), headers=headers) as response:
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if response.status_code != 200 or content_type != "text/event-stream":
            return False
        acknowledged = False
        buffer = ""
        async for chunk in response.aiter_text():
            buffer += chunk.replace("\r\n", "\n")
            if len(buffer) > _MAX_EVENT_CHARS:
                raise UpstreamFailed(detail="listen stream event too large")
            *events, buffer = buffer.split("\n\n")
            for message in _sse_events("\n\n".join(events)):
                if type(message) is not dict:
                    continue
                method = message.get("method")
                if method == TOOLS_CHANGED:
                    changed()
                elif method in _EVENTS and on_event is not None:
                    params = message.get("params")
                    on_event(str(method), params if isinstance(params, dict) else {})
                elif method == "notifications/subscriptions/acknowledged":
                    acknowledged = True
                elif "error" in message and not acknowledged:
                    return False
        return acknowledged
