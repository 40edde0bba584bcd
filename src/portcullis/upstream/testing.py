"""Test doubles for the upstream seam, for Portcullis's tests and for users' own.

:class:`FakeConnector` serves a fixed tool list from plain Python callables, and can be told to
fail its next ``open`` or to drop the live connection, so supervisor and pipeline behaviour can
be tested without processes or sockets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

import anyio

from portcullis.errors import UpstreamFailed, UpstreamUnavailable
from portcullis.upstream.build_identity import BuildIdentity

ToolFn = Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]
#: the MRTR fields of the request a handler is answering ({"input_responses", "request_state",
#: "client_capabilities"}): a handler returns an ``input_required`` result and reads the retry here
MRTR_INPUT: ContextVar[dict[str, Any] | None] = ContextVar("fake_mrtr_input", default=None)


class FakeSurface:
    """What a fake service offers besides tools: lists (change them in place) and read/get answers."""

    def __init__(self) -> None:
        self.resources: list[dict[str, Any]] = []
        self.templates: list[dict[str, Any]] = []
        self.prompts: list[dict[str, Any]] = []
        self.contents: dict[str, dict[str, Any]] = {}  # uri -> ReadResourceResult
        self.prompt_results: dict[str, Callable[[Mapping[str, str]], dict[str, Any]]] = {}
        self.reads: list[str] = []
        # completion/complete: (ref, argument, context arguments) -> CompleteResult; every request is kept
        self.completer: Callable[[Mapping[str, str], Mapping[str, str], Mapping[str, str] | None],
                                 dict[str, Any]] | None = None
        self.completions: list[tuple[dict[str, str], dict[str, str], dict[str, str] | None]] = []
        self.subscribed: list[str] = []  # upstream URIs the gateway subscribed to (in order, without repeats)
        self.subscribe_calls: list[tuple[str, str]] = []  # ("subscribe" | "unsubscribe", uri), every call
        self.fail_subscribe = False


class FakeConnection:
    def __init__(self, tools: list[dict[str, Any]], handlers: Mapping[str, ToolFn],
                 surface: FakeSurface | None = None) -> None:
        self.tools = tools
        self.surface = surface or FakeSurface()
        self.server_version: str | None = "fake 1.0"
        self.build_identity: BuildIdentity | None = None  # set one to have the supervisor record it
        self._handlers = handlers
        self._closed = anyio.Event()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.tokens: list[str | None] = []
        self.trace_headers: list[dict[str, str]] = []
        self.inputs: list[dict[str, Any]] = []  # the MRTR fields of each call, read and get (MRTR_INPUT)

    def _input(self, input_responses: Mapping[str, Any] | None, request_state: str | None,
               client_capabilities: Mapping[str, Any] | None) -> None:
        mrtr = {"input_responses": None if input_responses is None else dict(input_responses),
                "request_state": request_state,
                "client_capabilities": None if client_capabilities is None else dict(client_capabilities)}
        self.inputs.append(mrtr)
        MRTR_INPUT.set(mrtr)

    async def list_tools(self) -> list[dict[str, Any]]:
        return [dict(t) for t in self.tools]

    async def call_tool(self, name: str, arguments: Mapping[str, Any], *, timeout_s: float,
                        request_id: str, actor_token: str | None = None,
                        trace_headers: Mapping[str, str] | None = None,
                        input_responses: Mapping[str, Any] | None = None, request_state: str | None = None,
                        client_capabilities: Mapping[str, Any] | None = None) -> dict[str, Any]:
        if self._closed.is_set():
            raise UpstreamUnavailable(detail="fake connection closed")
        self._input(input_responses, request_state, client_capabilities)
        self.calls.append((name, dict(arguments)))
        self.tokens.append(actor_token)
        self.trace_headers.append(dict(trace_headers or {}))
        return await self._handlers[name](arguments)

    async def list_resources(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.surface.resources]

    async def list_resource_templates(self) -> list[dict[str, Any]]:
        return [dict(t) for t in self.surface.templates]

    async def list_prompts(self) -> list[dict[str, Any]]:
        return [dict(p) for p in self.surface.prompts]

    async def read_resource(self, uri: str, *, timeout_s: float, actor_token: str | None = None,
                            input_responses: Mapping[str, Any] | None = None, request_state: str | None = None,
                            client_capabilities: Mapping[str, Any] | None = None) -> dict[str, Any]:
        self._input(input_responses, request_state, client_capabilities)
        self.surface.reads.append(uri)
        self.tokens.append(actor_token)
        if uri not in self.surface.contents:
            raise UpstreamFailed(detail="upstream JSON-RPC error -32602")
        return dict(self.surface.contents[uri])

    async def get_prompt(self, name: str, arguments: Mapping[str, str], *, timeout_s: float,
                         actor_token: str | None = None, input_responses: Mapping[str, Any] | None = None,
                         request_state: str | None = None,
                         client_capabilities: Mapping[str, Any] | None = None) -> dict[str, Any]:
        self._input(input_responses, request_state, client_capabilities)
        self.tokens.append(actor_token)
        if name not in self.surface.prompt_results:
            raise UpstreamFailed(detail="upstream JSON-RPC error -32602")
        return self.surface.prompt_results[name](arguments)

    async def complete(self, ref: Mapping[str, str], argument: Mapping[str, str],
                       context_arguments: Mapping[str, str] | None, *, timeout_s: float,
                       actor_token: str | None = None) -> dict[str, Any]:
        self.tokens.append(actor_token)
        self.surface.completions.append((dict(ref), dict(argument), None if context_arguments is None
                                         else dict(context_arguments)))
        if self.surface.completer is None:
            raise UpstreamFailed(detail="upstream JSON-RPC error -32601")
        return self.surface.completer(ref, argument, context_arguments)

    async def subscribe_resource(self, uri: str) -> None:
        self.surface.subscribe_calls.append(("subscribe", uri))
        if self.surface.fail_subscribe:
            raise UpstreamFailed(detail="upstream JSON-RPC error -32601")
        if uri not in self.surface.subscribed:
            self.surface.subscribed.append(uri)

    async def unsubscribe_resource(self, uri: str) -> None:
        self.surface.subscribe_calls.append(("unsubscribe", uri))
        if uri in self.surface.subscribed:
            self.surface.subscribed.remove(uri)

    async def ping(self, *, timeout_s: float) -> list[dict[str, Any]] | None:
        if self._closed.is_set():
            raise UpstreamUnavailable(detail="fake connection closed")
        return await self.list_tools()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def drop(self) -> None:
        """Simulate the service dying."""
        self._closed.set()


class FakeConnector:
    """Serves ``tools`` (the list itself: change it in place to change what is listed) through ``handlers``.

    :meth:`announce_change` plays a ``notifications/tools/list_changed`` from the service; :meth:`announce`
    any other notification (``on_event(method, params)``, as the real connectors report them)."""

    def __init__(self, name: str, tools: list[dict[str, Any]], handlers: Mapping[str, ToolFn], *,
                 on_tools_changed: Callable[[], None] | None = None,
                 on_event: Callable[[str, Any], None] | None = None) -> None:
        self.name = name
        self.on_event = on_event
        self.tools = tools
        self._handlers = handlers
        self.on_tools_changed = on_tools_changed
        self.surface = FakeSurface()  # resources, templates and prompts (fill in place)
        self.fail_next_opens = 0
        self.opens = 0
        self.current: FakeConnection | None = None
        self.identity: BuildIdentity | None = None  # each connection's build identity (None: nothing recorded)

    def announce_change(self) -> None:
        if self.on_tools_changed is not None:
            self.on_tools_changed()

    def announce(self, method: str, params: Any) -> None:
        if self.on_event is not None:
            self.on_event(method, params)

    @asynccontextmanager
    async def open(self) -> AsyncIterator[FakeConnection]:
        self.opens += 1
        if self.fail_next_opens > 0:
            self.fail_next_opens -= 1
            raise UpstreamUnavailable(detail="fake open failure")
        self.current = FakeConnection(self.tools, self._handlers, self.surface)
        self.current.build_identity = self.identity
        try:
            yield self.current
        finally:
            self.current = None
