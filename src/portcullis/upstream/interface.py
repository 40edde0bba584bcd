"""The upstream seam: how the gateway talks to one MCP tool service.

Implementations: :class:`~portcullis.upstream.sdk_client.SdkConnector` (stdio children and
legacy-era HTTP services, through the official SDK client) and
:class:`~portcullis.upstream.http_relay.HttpRelayConnector` (2026-07-28 HTTP services, a raw
JSON-RPC relay over a pooled HTTP client). :class:`~portcullis.upstream.testing.FakeConnector`
is the test double.

Nothing above this package sees an SDK, HTTP-library or OS exception: connectors translate them
into :class:`~portcullis.errors.UpstreamUnavailable`, :class:`~portcullis.errors.UpstreamTimeout`
and :class:`~portcullis.errors.UpstreamFailed` (with :class:`~portcullis.errors.ResultTooLarge`
for an answer over the service's ``max_result_bytes`` / ``max_result_depth``). Every connector
matches each answer to its request by exact JSON-RPC id; the SDK client's transports for stdio
(:mod:`.stdio_bounded`) and legacy HTTP (:mod:`.sdk_http_guard`) are the gateway's own for that.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from portcullis.upstream.build_identity import BuildIdentity


class Connection(Protocol):
    """One live, long-lived connection to a service (a session, a child process, a pool).

    ``server_version`` is the build identity the service reported when the connection opened
    (``serverInfo`` name and version, at most 128 characters), or ``None``. ``build_identity`` is
    what the ``service_identity`` audit record says about the connection (:mod:`.build_identity`),
    or ``None`` (a test double's: nothing is recorded).
    """

    server_version: str | None
    build_identity: BuildIdentity | None

    async def list_tools(self) -> list[dict[str, Any]]:
        """Every tool the service offers, in wire format (camelCase keys), all pages."""
        ...

    async def call_tool(self, name: str, arguments: Mapping[str, Any], *, timeout_s: float,
                        request_id: str, actor_token: str | None = None,
                        trace_headers: Mapping[str, str] | None = None,
                        input_responses: Mapping[str, Any] | None = None, request_state: str | None = None,
                        client_capabilities: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Call one tool with the gateway-minted ``actor_token``; returns a wire ``CallToolResult``, or a
        2026-07-28 ``input_required`` result (``resultType``, ``inputRequests``, ``requestState``) as the
        service sent it (the pipeline screens it; never an error).

        ``trace_headers`` (``traceparent``, ``tracestate``) go to the service as HTTP headers, or in
        the request's ``params._meta`` over stdio. ``input_responses`` and ``request_state`` (the
        service's own) retry an ``input_required`` call; ``client_capabilities`` is what a 2026-07-28
        request declares (connectors that cannot declare per request ignore it: the pipeline refuses
        any input request the caller did not declare)."""
        ...

    async def list_resources(self) -> list[dict[str, Any]]:
        """Every resource the service lists (``resources/list``, all pages), wire format."""
        ...

    async def list_resource_templates(self) -> list[dict[str, Any]]:
        """Every resource template (``resources/templates/list``, all pages), wire format."""
        ...

    async def read_resource(self, uri: str, *, timeout_s: float, actor_token: str | None = None,
                            input_responses: Mapping[str, Any] | None = None, request_state: str | None = None,
                            client_capabilities: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``resources/read`` of ``uri`` with the gateway-minted ``actor_token``; a wire ``ReadResourceResult``
        (bounded like a tool result) or an ``input_required`` result (the MRTR keywords as for call_tool)."""
        ...

    async def list_prompts(self) -> list[dict[str, Any]]:
        """Every prompt (``prompts/list``, all pages), wire format."""
        ...

    async def get_prompt(self, name: str, arguments: Mapping[str, str], *, timeout_s: float,
                         actor_token: str | None = None, input_responses: Mapping[str, Any] | None = None,
                         request_state: str | None = None,
                         client_capabilities: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``prompts/get`` with the gateway-minted ``actor_token``; a wire ``GetPromptResult`` (bounded) or an
        ``input_required`` result (the MRTR keywords as for call_tool)."""
        ...

    async def complete(self, ref: Mapping[str, str], argument: Mapping[str, str],
                       context_arguments: Mapping[str, str] | None, *, timeout_s: float,
                       actor_token: str | None = None) -> dict[str, Any]:
        """``completion/complete`` for ``ref`` (``{"type": "ref/prompt", "name"}`` or ``{"type": "ref/resource",
        "uri"}``, upstream names) with the gateway-minted ``actor_token``; a wire ``CompleteResult`` (bounded)."""
        ...

    async def ping(self, *, timeout_s: float) -> list[dict[str, Any]] | None:
        """Raise if the connection is no longer usable. A health check that is a ``tools/list`` (valid in
        every era) returns the tools when that one page was the whole listing, else ``None``."""
        ...

    async def wait_closed(self) -> None:
        """Return when the connection has died (a crashed child, a closed stream)."""
        ...


class Connector(Protocol):
    """Opens connections to one service. ``open`` is an async context manager.

    A connector given ``on_tools_changed`` calls it, synchronously and before anything else, for
    every ``notifications/tools/list_changed`` the service sends on any of its connections."""

    name: str

    def open(self) -> Any:  # AbstractAsyncContextManager[Connection]
        ...


def server_version(info: object) -> str | None:
    """``"<name> <version>"`` from a ``serverInfo`` mapping or SDK ``Implementation`` (printable, ≤ 128 chars)."""
    if info is None:
        return None
    if isinstance(info, Mapping):
        values = (info.get("name"), info.get("version"))
    else:
        values = (getattr(info, "name", None), getattr(info, "version", None))
    parts = [str(value) for value in values if isinstance(value, str) and value]
    text = "".join(c for c in " ".join(parts) if c.isprintable())[:128]
    return text or None
