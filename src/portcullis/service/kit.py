"""The service kit: an ``MCPServer`` that accepts tool calls only with a gateway-minted token.

::

    from portcullis.service import GatewayTokenVerifier, create_service, current_principal

    verifier = GatewayTokenVerifier(fetch_gateway_jwks, audience="portcullis-service:billing",
                                    issuer="portcullis://gateway")
    app = create_service("billing", audience="portcullis-service:billing", verifier=verifier)

    @app.tool()
    def whoami() -> str:
        return current_principal().agent_id or "unknown"

**Where the check runs.** :class:`ActorTokenGuard` is the first user middleware of the
server (``MCPServer(middleware=[guard, ...])``). SDK middleware wraps every inbound message
*before* params validation, tool lookup and the tool function, on every transport, so a tool
author cannot forget it and no tool body runs for a refused call.

**How the token travels.** One function, :func:`take_token`, reads it for both transports:

- over HTTP (the message arrived with a Starlette request, ``ctx.request``): exactly one
  ``Authorization: Bearer <token>`` header. A token in ``_meta`` over HTTP is refused, so a call
  never carries two credentials that could disagree;
- over stdio and in memory (no HTTP request): ``params._meta["io.portcullis/actor-token"]``.

The ``_meta`` entry is removed from every message before anything else sees it, so tool code
reading ``ctx.request_context.meta`` never sees a token. (Over HTTP ``ctx.headers`` still shows the
Authorization header; the token is single-use and bound to this service, so it is worthless to
pass on.)

**Which methods need a token.** Every request except the discovery and lifecycle methods in
:data:`OPEN_METHODS` (``initialize``, ``ping``, ``server/discover`` and the ``*/list`` methods)
and notifications. ``tools/list`` stays open in this step: the gateway lists tools for pinning
and health checks outside any client call, the definitions it may see are the manifests it
already holds, and listing runs no tool code. ``tools/call`` tokens are bound to the tool
(``target`` claim = the ``name`` in the call); ``resources/read`` and ``prompts/get`` to the URI or
prompt name; anything else to the method name.

**What a refused caller sees**: JSON-RPC error ``-31401`` with the message ``unauthenticated``
and no data. The reason goes to the ``portcullis.service`` log.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, cast

from mcp.server import MCPServer
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types import RequestParamsMeta

from portcullis.identity.minting import ACTOR_TOKEN_META_KEY
from portcullis.identity.principal import Principal
from portcullis.service.verify import GatewayTokenVerifier, ServiceAuthError, VerifiedCall

logger = logging.getLogger("portcullis.service")

OPEN_METHODS = frozenset({
    "initialize", "ping", "server/discover",
    "tools/list", "resources/list", "resources/templates/list", "prompts/list",
})
_KIT_OWNS = ("auth", "token_verifier", "auth_server_provider")

_current: contextvars.ContextVar[VerifiedCall | None] = contextvars.ContextVar("portcullis_verified_call",
                                                                                default=None)


def current_call() -> VerifiedCall:
    """The verified principal and token claims of the call being served.

    Raises ServiceAuthError outside a verified call (for example a tool function called directly
    from Python rather than through ``tools/call``).
    """
    call = _current.get()
    if call is None:
        raise ServiceAuthError("no verified call in this context")
    return call


def current_principal() -> Principal:
    """Who is acting on the call being served, as the gateway established it."""
    return current_call().principal


def take_token(ctx: ServerRequestContext[Any, Any]) -> tuple[ServerRequestContext[Any, Any], str | None, str | None]:
    """``(ctx without the _meta token, token or None, problem or None)`` for either transport."""
    params = ctx.params
    meta = params.get("_meta") if params else None
    meta_token: Any = None
    if isinstance(meta, Mapping) and ACTOR_TOKEN_META_KEY in meta:
        meta_token = meta[ACTOR_TOKEN_META_KEY]
        stripped = {k: v for k, v in meta.items() if k != ACTOR_TOKEN_META_KEY}
        new_meta = {k: v for k, v in ctx.meta.items() if k != ACTOR_TOKEN_META_KEY} if ctx.meta else None
        new_params = {**(params or {}), "_meta": stripped}
        ctx = replace(ctx, params=new_params, meta=cast("RequestParamsMeta | None", new_meta))
    headers = getattr(ctx.request, "headers", None)
    if headers is None:  # stdio, in memory
        if meta_token is not None and not isinstance(meta_token, str):
            return ctx, None, "malformed _meta token"
        return ctx, meta_token, None
    if meta_token is not None:
        return ctx, None, "_meta token over HTTP"
    values = headers.getlist("authorization")
    if not values:
        return ctx, None, None
    scheme, _, token = values[0].partition(" ")
    if len(values) > 1 or scheme.lower() != "bearer" or not token or " " in token:
        return ctx, None, "malformed Authorization header"
    return ctx, token, None


def _target(method: str, params: Mapping[str, Any] | None) -> str | None:
    if method in ("tools/call", "prompts/get"):
        name = params.get("name") if params else None
        return name if isinstance(name, str) else None
    if method == "resources/read":
        uri = params.get("uri") if params else None
        return uri if isinstance(uri, str) else None
    return method


class ActorTokenGuard:
    """SDK middleware: verify the actor token before any handler runs; refuse with "unauthenticated"."""

    def __init__(self, verifier: GatewayTokenVerifier) -> None:
        self.verifier = verifier

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        ctx, token, problem = take_token(ctx)
        if ctx.request_id is None or ctx.method in OPEN_METHODS:
            return await call_next(ctx)
        try:
            if problem is not None:
                raise ServiceAuthError(problem)
            target = _target(ctx.method, ctx.params)
            if target is None:
                raise ServiceAuthError("no call target")
            verified = await self.verifier.verify(token, target=target)
        except ServiceAuthError as exc:
            logger.warning("actor token refused", extra={"fields": {
                "reason": exc.reason, "method": ctx.method, "rpc_id": str(ctx.request_id),
                "transport": "stdio" if ctx.request is None else "http",
            }})
            raise MCPError(code=ServiceAuthError.code, message=ServiceAuthError.message) from None
        reset = _current.set(verified)
        try:
            return await call_next(ctx)
        finally:
            _current.reset(reset)


class ServiceApp(MCPServer[Any]):
    """An ``MCPServer`` whose first middleware is an :class:`ActorTokenGuard`. Make one with
    :func:`create_service`; add tools with ``@app.tool()`` as usual."""

    def __init__(self, name: str, *, verifier: GatewayTokenVerifier, **mcpserver_kwargs: Any) -> None:
        for key in _KIT_OWNS:
            if mcpserver_kwargs.get(key) is not None:
                raise ValueError(f"{key!r} is not allowed: the service kit authenticates every call itself")
        self.guard = ActorTokenGuard(verifier)
        user_middleware = list(mcpserver_kwargs.pop("middleware", None) or ())
        super().__init__(name, middleware=[self.guard, *user_middleware], **mcpserver_kwargs)

    @property
    def verifier(self) -> GatewayTokenVerifier:
        return self.guard.verifier


def create_service(name: str, *, audience: str, verifier: GatewayTokenVerifier,
                   **mcpserver_kwargs: Any) -> ServiceApp:
    """A tool service that refuses every call without a valid gateway token for ``audience``.

    ``audience`` must be the verifier's audience (normally ``portcullis-service:<name>``); it is
    repeated here so that a service wired to another service's verifier fails at start-up.
    Other keywords go to ``MCPServer`` except its own auth settings, which the kit replaces.
    """
    if verifier.audience != audience:
        raise ValueError(f"the verifier checks audience {verifier.audience!r}, not {audience!r}")
    return ServiceApp(name, verifier=verifier, **mcpserver_kwargs)
