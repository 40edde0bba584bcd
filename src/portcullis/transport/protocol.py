"""MCP method handling for both protocol eras on one endpoint.

Era selection follows the SDK and the 2026-07-28 revision: a request whose
``MCP-Protocol-Version`` header is absent or names a handshake-era revision is legacy (2025-era:
``initialize``, sealed ``Mcp-Session-Id``); any other value is modern (stateless, per-request
``_meta`` envelope, ``Mcp-Method``/``Mcp-Name`` headers that must agree with the body). The
body decides policy; the headers are only a consistency check.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from portcullis import __version__
from portcullis.catalog import Catalog
from portcullis.errors import (
    HeaderMismatch,
    InvalidParams,
    InvalidRequest,
    MethodNotFound,
    UnsupportedVersion,
    UpstreamFailed,
)
from portcullis.identity.principal import Principal
from portcullis.pipeline.client_input import RetryInput, is_input_required
from portcullis.pipeline.completion import completion_context
from portcullis.pipeline.context import CallContext, EncodedResult, Handler, ReadContext
from portcullis.pipeline.reads import not_found, refused_like_unknown, unknown_prompt
from portcullis.request_state import is_sealed_state
from portcullis.subscriptions import SubscriptionHub, session_key
from portcullis.transport.jsonrpc import Message

MODERN_VERSIONS = ("2026-07-28",)
HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_HANDSHAKE = "2025-11-25"
_META_VERSION = "io.modelcontextprotocol/protocolVersion"
_META_CAPS = "io.modelcontextprotocol/clientCapabilities"
_NAMED_METHODS = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
SERVER_INFO = {"name": "portcullis", "version": __version__}
_SERVER_META = {"io.modelcontextprotocol/serverInfo": SERVER_INFO}
_MODERN_TAIL = b"," + orjson.dumps({"resultType": "complete", "_meta": _SERVER_META})[1:]  # spliced before "}"
_RESPONSE_HEAD = b'{"jsonrpc":"2.0","id":'
# logging: progress and log notifications of a call are relayed to its caller, logging/setLevel is per caller;
# list changes of the gateway's exposed view and resource subscriptions (portcullis.subscriptions); completions of
# prompts and templates (docs/mcp-surface.md)
CAPABILITIES = {"tools": {"listChanged": True}, "logging": {}, "resources": {"subscribe": True, "listChanged": True},
                "prompts": {"listChanged": True}, "completions": {}}
INSTRUCTIONS = ("Portcullis gateway: tools and prompts are namespaced by service, e.g. 'billing.get_invoice'; "
                "resource URIs carry their service as a prefix, e.g. 'billing+invoice://terms'.")
_SURFACE_LISTS = {"resources/list": ("resource", "resources"),
                  "resources/templates/list": ("template", "resourceTemplates"),
                  "prompts/list": ("prompt", "prompts")}


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request plus what the transport learned about it."""

    message: Message
    protocol_version: str
    modern: bool
    headers: Mapping[str, str]  # lower-cased names
    principal: Principal
    # a 2025-era request: the client capabilities its session declared at initialize (2026-07-28: in _meta)
    session_capabilities: Mapping[str, Any] | None = None
    source: str | None = None  # the connection's peer address (the TCP peer: proxy headers are never read)

    @property
    def client_capabilities(self) -> Mapping[str, Any] | None:
        """The client capabilities the caller declared for this request (None: none)."""
        if not self.modern:
            return self.session_capabilities
        meta = self.message.params.get("_meta")
        caps = meta.get(_META_CAPS) if isinstance(meta, dict) else None
        return caps if isinstance(caps, dict) else None


def is_modern(version_header: str | None) -> bool:
    return version_header is not None and version_header not in HANDSHAKE_VERSIONS


def decode_header(value: str) -> str:
    """Strip optional whitespace (RFC 9110 §5.5) and undo the ``=?base64?…?=`` sentinel."""
    value = value.strip(" \t")
    if value.startswith("=?base64?") and value.endswith("?=") and len(value) >= 11:
        try:
            return base64.b64decode(value[9:-2], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise HeaderMismatch("Invalid base64 sentinel in request header") from None
    return value


def check_modern(req: Request) -> None:
    """Validate a 2026-07-28 request's version, metadata headers and ``_meta`` envelope."""
    version = req.protocol_version
    if version not in MODERN_VERSIONS:
        raise UnsupportedVersion(data={"supported": list(MODERN_VERSIONS), "requested": version[:64]})
    msg = req.message
    if msg.kind == "response":
        raise InvalidRequest("Invalid Request: clients must not send responses")
    if req.headers.get("mcp-method") != msg.method:
        raise HeaderMismatch("Mcp-Method header does not match the request body's method")
    field = _NAMED_METHODS.get(msg.method)
    if field is not None:
        header = req.headers.get("mcp-name")
        if header is None or decode_header(header) != msg.params.get(field):
            raise HeaderMismatch(f"Mcp-Name header does not match the request body's '{field}' parameter")
    if msg.kind == "request":
        meta = msg.params.get("_meta")
        missing = [k for k in (_META_VERSION, _META_CAPS) if not isinstance(meta, dict) or k not in meta]
        if missing:
            raise InvalidParams("params._meta is missing the required envelope key(s): " + ", ".join(missing))
        if meta[_META_VERSION] != version:  # type: ignore[index]
            raise HeaderMismatch("MCP-Protocol-Version header does not match params._meta")


def check_param_headers(headers: Mapping[str, str], arguments: Mapping[str, Any],
                        param_headers: tuple[tuple[str, str], ...]) -> None:
    """Each argument the schema mirrors into an ``Mcp-Param-*`` header must be there and agree."""
    for arg, header in param_headers:
        if arg not in arguments:
            continue
        value = arguments[arg]
        expected = ("true" if value else "false") if isinstance(value, bool) else str(value)
        sent = headers.get(header)
        if sent is None or decode_header(sent) != expected:
            raise HeaderMismatch(f"{header} header does not match the request body's '{arg}' argument"[:200])


def negotiate(requested: Any) -> str:
    return requested if requested in HANDSHAKE_VERSIONS else LATEST_HANDSHAKE


class Dispatcher:
    """Answers one JSON-RPC request; ``tools/call`` goes through the pipeline."""

    def __init__(self, catalog: Catalog, pipeline: Handler,
                 visible: Callable[[Principal], Collection[str]] | None = None,
                 surface: SurfaceAccess | None = None, subscriptions: SubscriptionHub | None = None) -> None:
        self._catalog = catalog
        self._subscriptions = subscriptions  # resources/subscribe and unsubscribe (2025-era sessions)
        self._pipeline = pipeline
        self._surface = surface  # resources and prompts; None: none are offered (empty lists)
        # the tools a caller may see: only those its policy could ever admit (default: none)
        self._visible = visible or (lambda _principal: frozenset())

    def listing(self, principal: Principal) -> list[Mapping[str, Any]]:
        """``tools/list`` for ``principal``: the served tools its policies could ever admit."""
        visible = self._visible(principal)
        return [tool for tool in self._catalog.listing() if tool["name"] in visible]

    async def dispatch(self, req: Request) -> dict[str, Any]:
        """The result for ``req``. A 2025-era caller cannot take an ``input_required`` result: it is refused
        (:class:`UnbridgedInputRequired`, -31004, carrying the result) unless the transport bridges it,
        using :meth:`dispatch_result`."""
        result = await self.dispatch_result(req)
        if not req.modern and is_input_required(result):
            raise UnbridgedInputRequired(result)
        return result

    async def dispatch_result(self, req: Request) -> dict[str, Any]:
        """:meth:`dispatch`, with a 2025-era caller's ``input_required`` result returned as a value (its
        input requests screened for that caller, its requestState the gateway's envelope)."""
        method = req.message.method
        if method == "tools/call":
            result = await self._call(req)
        elif method == "tools/list":
            result = {"tools": self.listing(req.principal)}
            if req.modern:
                result.update(ttlMs=0, cacheScope="private")
        elif method in _SURFACE_LISTS:
            kind, field = _SURFACE_LISTS[method]
            items = [] if self._surface is None else await self._surface.listing(kind, req.principal)
            result = {field: items}
            if req.modern:
                result.update(ttlMs=0, cacheScope="private")
        elif method in ("resources/read", "prompts/get"):
            result = await self._read(req)
            if req.modern and method == "resources/read" and not is_input_required(result):
                result.update(ttlMs=0, cacheScope="private")
        elif method == "completion/complete":
            result = await self._complete(req)
        elif method in ("resources/subscribe", "resources/unsubscribe") and not req.modern \
                and self._subscriptions is not None:  # removed in 2026-07-28 (subscriptions/listen instead)
            session = session_key(req.headers.get("mcp-session-id", ""))
            uri = req.message.params.get("uri")
            if method == "resources/subscribe":
                await self._subscriptions.subscribe(session, req.principal, uri)
            else:
                await self._subscriptions.unsubscribe(session, req.principal, uri)
            result = {}
        elif method == "ping" and not req.modern:  # removed in 2026-07-28
            result = {}
        elif method == "server/discover" and req.modern:
            result = {"supportedVersions": list(MODERN_VERSIONS), "capabilities": CAPABILITIES,
                      "instructions": INSTRUCTIONS, "ttlMs": 0, "cacheScope": "private"}
        else:
            raise MethodNotFound(data=method[:128])
        if req.modern:  # tools/call may answer input_required (approvals): its resultType stands
            if "resultType" in result:
                add_fields(result, {"_meta": _SERVER_META})
            elif isinstance(result, EncodedResult) and "_meta" not in result and len(result.encoded) > 2:
                result["resultType"], result["_meta"] = "complete", _SERVER_META  # the common case, spliced
                result.encoded = result.encoded[:-1] + _MODERN_TAIL
            else:
                add_fields(result, {"resultType": "complete", "_meta": _SERVER_META})
        return result

    async def _call(self, req: Request) -> dict[str, Any]:
        params = req.message.params
        name, arguments = params.get("name"), params.get("arguments", {})
        if not isinstance(name, str) or len(name) > 256:
            raise InvalidParams("Invalid params: 'name' must be a string")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise InvalidParams("Invalid params: 'arguments' must be an object")
        if req.modern:
            route = self._catalog.lookup(name)
            # only for a tool the caller may see: a mismatch error must not reveal a hidden tool
            if route is not None and route.param_headers and name in self._visible(req.principal):
                check_param_headers(req.headers, arguments, route.param_headers)
        approval_id, justification = _approval_meta(params.get("_meta"))
        retry = retry_input(params)
        input_state = None
        if req.modern and _elicits_urls(params.get("_meta")):
            state, responses = params.get("requestState"), params.get("inputResponses")
            if retry is not None:  # the gateway's MRTR envelope: never an approval's state
                state, responses = None, {}
            input_state = {"request_state": state if isinstance(state, str) else None,
                           "responses": responses if isinstance(responses, dict) else {}}
        ctx = CallContext(request_id=uuid.uuid4().hex, jsonrpc_id=req.message.id,
                          protocol_version=req.protocol_version, tool_name=name, arguments=arguments,
                          started_ns=time.perf_counter_ns(), principal=req.principal, headers=req.headers,
                          approval_id=approval_id, justification=justification, input_state=input_state,
                          approval_poll=_approval_poll(params.get("_meta")),
                          client_capabilities=req.client_capabilities, retry_input=retry, source=req.source)
        return await self._pipeline(ctx)


    async def _read(self, req: Request) -> dict[str, Any]:
        params, method = req.message.params, req.message.method
        field = "uri" if method == "resources/read" else "name"
        target, arguments = params.get(field), params.get("arguments")
        arguments = {} if arguments is None else arguments
        if not isinstance(target, str) or not target or len(target) > 2048:
            raise InvalidParams(f"Invalid params: '{field}' must be a string")
        if method == "prompts/get" and not (isinstance(arguments, dict)
                                            and all(isinstance(v, str) for v in arguments.values())):
            raise InvalidParams("Invalid params: 'arguments' must map names to strings")
        ctx = ReadContext(request_id=uuid.uuid4().hex, method=method, protocol_version=req.protocol_version,
                          principal=req.principal, target=target,
                          arguments=arguments if method == "prompts/get" else {}, started_ns=time.perf_counter_ns(),
                          client_capabilities=req.client_capabilities, retry_input=retry_input(params))
        if self._surface is None:
            raise not_found(target) if method == "resources/read" else unknown_prompt()
        return await self._surface.read(ctx)


    async def _complete(self, req: Request) -> dict[str, Any]:
        ctx = completion_context(req.message.params, protocol_version=req.protocol_version, principal=req.principal)
        if self._surface is None:
            raise refused_like_unknown(ctx)
        return await self._surface.complete(ctx)


class SurfaceAccess(Protocol):
    """What the dispatcher needs for resources and prompts (built by the gateway)."""

    async def listing(self, kind: str, principal: Principal) -> list[Mapping[str, Any]]:
        ...

    async def read(self, ctx: ReadContext) -> dict[str, Any]:
        ...

    async def complete(self, ctx: ReadContext) -> dict[str, Any]:
        ...


def add_fields(result: dict[str, Any], fields: Mapping[str, Any]) -> None:
    """Set ``fields`` in ``result``; an :class:`EncodedResult`'s bytes are kept in step by splicing
    the new members in before its closing brace (no second encoding of the result)."""
    if not isinstance(result, EncodedResult):
        result.update(fields)
        return
    replaced = any(key in result for key in fields)
    result.update(fields)
    if replaced:  # a key the result already had (never in a rebuilt CallToolResult): encode afresh
        result.encoded = orjson.dumps(result)
        return
    encoded, members = result.encoded, orjson.dumps(dict(fields))
    result.encoded = encoded[:-1] + (b"," if len(encoded) > 2 else b"") + members[1:]


def encode_response(request_id: Any, result: Mapping[str, Any]) -> bytes:
    """The JSON-RPC success response. An :class:`EncodedResult` is answered with its own bytes, the
    ones the outcome record measured; ``request_id`` was checked encodable when it was parsed."""
    if isinstance(result, EncodedResult):
        return b"".join((_RESPONSE_HEAD, orjson.dumps(request_id), b',"result":', result.encoded, b"}"))
    return orjson.dumps({"jsonrpc": "2.0", "id": request_id, "result": result})


def initialize_result(version: str) -> dict[str, Any]:
    return {"protocolVersion": version, "capabilities": CAPABILITIES, "serverInfo": SERVER_INFO,
            "instructions": INSTRUCTIONS}


APPROVAL_ID_META = "io.portcullis/approval-id"
JUSTIFICATION_META = "io.portcullis/justification"
APPROVAL_POLL_META = "io.portcullis/approval-poll"
_APPROVAL_ID = re.compile(r"apr_[0-9a-f]{32}")


def _approval_meta(meta: Any) -> tuple[str | None, str]:
    """The approval id and justification a ``tools/call`` carries in ``params._meta``.

    A malformed approval id is an invalid-params error (never silently ignored: the caller meant
    to resume); the justification is cut to 1,000 characters and shown to approvers escaped.
    """
    if not isinstance(meta, dict):
        return None, ""
    approval_id = meta.get(APPROVAL_ID_META)
    if approval_id is not None and (not isinstance(approval_id, str) or not _APPROVAL_ID.fullmatch(approval_id)):
        raise InvalidParams(f"Invalid params: _meta['{APPROVAL_ID_META}'] is not an approval id")
    justification = meta.get(JUSTIFICATION_META, "")
    if not isinstance(justification, str):
        raise InvalidParams(f"Invalid params: _meta['{JUSTIFICATION_META}'] must be a string")
    return approval_id, justification[:1000]


def _approval_poll(meta: Any) -> bool:
    """``_meta["io.portcullis/approval-poll"]: true``: report the approval's status, run nothing."""
    value = meta.get(APPROVAL_POLL_META, False) if isinstance(meta, dict) else False
    if not isinstance(value, bool):
        raise InvalidParams(f"Invalid params: _meta['{APPROVAL_POLL_META}'] must be a boolean")
    return value


def retry_input(params: Mapping[str, Any]) -> RetryInput | None:
    """An MRTR retry's gateway-sealed ``requestState`` and its ``inputResponses`` (None: not such a retry;
    an approval's state, or none, is left to the approvals stage)."""
    state = params.get("requestState")
    if not is_sealed_state(state):
        return None
    return RetryInput(state, params.get("inputResponses"))


class UnbridgedInputRequired(UpstreamFailed):
    """A 2025-era caller's call answered ``input_required``, which its protocol cannot carry: refused like
    any upstream answer the gateway cannot pass (-31004); ``result`` holds the screened value."""

    def __init__(self, result: Mapping[str, Any]) -> None:
        super().__init__(detail="input_required result for a 2025-era caller (not bridged)")
        self.result = result


def _elicits_urls(meta: Any) -> bool:
    """Whether a 2026-07-28 request declares URL-mode elicitation in its client capabilities."""
    caps = meta.get("io.modelcontextprotocol/clientCapabilities") if isinstance(meta, dict) else None
    elicitation = caps.get("elicitation") if isinstance(caps, dict) else None
    return isinstance(elicitation, dict) and isinstance(elicitation.get("url"), dict)
