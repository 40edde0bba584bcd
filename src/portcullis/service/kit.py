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

Beside it, over any transport, may ride the gateway's endorsed key set
(``params._meta["io.portcullis/gateway-keys"]``, :mod:`portcullis.identity.minting`): a child
that started before the signing key was published adopts it when a key it already trusts
signed it, so no call fails because a child was restarted late.

Both ``_meta`` entries are removed from every message before anything else sees them, so tool
code reading ``ctx.request_context.meta`` never sees a token or key set. (Over HTTP ``ctx.headers`` still shows the
Authorization header; the token is single-use and bound to this service, so it is worthless to
pass on.)

**Which methods need a token.** Every request except the discovery and lifecycle methods in
:data:`OPEN_METHODS` (``initialize``, ``ping``, ``server/discover``, the ``*/list`` methods and
``subscriptions/listen``) and notifications. ``tools/list`` and ``subscriptions/listen`` stay
open in this step: the gateway lists tools for pinning and health checks, and listens for
tool-list changes, outside any client call; the definitions it may see are the manifests it
already holds, and neither runs tool code. ``tools/call`` tokens are bound to the tool
(``target`` claim = the ``name`` in the call); ``resources/read`` and ``prompts/get`` to the URI or
prompt name; anything else to the method name.

**What a refused caller sees**: JSON-RPC error ``-31401`` with the message ``unauthenticated``
and no data. The reason goes to the ``portcullis.service`` log.

**Policy, again, at the service.** Given ``policies=`` (:class:`ServicePolicies`, the manifest
policies of this service), :class:`PolicyGuard` decides every ``tools/call`` once more with the
principal from the verified token, the tool name and the call's arguments, so a call that
bypassed the gateway is still denied. Anything but ``allow`` is refused with ``-31403``
``forbidden`` and no data; the reasons and rule ids go to the log. The middleware order, outermost
first, is built in :meth:`ServiceApp.__init__`:

1. :class:`ActorTokenGuard` — outermost, so no user code runs for an unauthenticated call, and
   the principal is known to everything inside;
2. the service's own ``middleware=``, in the order given;
3. :class:`PolicyGuard` — innermost, so the arguments it decides on are the very params object
   the SDK validates and hands to the tool: no middleware can change them between check and tool.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, cast

from mcp.server import MCPServer
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types import RequestParamsMeta

from portcullis.identity.minting import ACTOR_TOKEN_META_KEY, GATEWAY_KEYS_META_KEY
from portcullis.identity.principal import Principal
from portcullis.policy.decision import Decision
from portcullis.service.policy_guard import FORBIDDEN_CODE, FORBIDDEN_MESSAGE, ServicePolicies
from portcullis.service.verify import GatewayTokenVerifier, ServiceAuthError, VerifiedCall

logger = logging.getLogger("portcullis.service")

OPEN_METHODS = frozenset({
    "initialize", "ping", "server/discover",
    "tools/list", "resources/list", "resources/templates/list", "prompts/list",
    "subscriptions/listen",  # the gateway watches for tool-list changes outside any client call
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


_KIT_META = (ACTOR_TOKEN_META_KEY, GATEWAY_KEYS_META_KEY)


def key_set_of(ctx: ServerRequestContext[Any, Any]) -> object:
    """The gateway's endorsed key set the call carries in ``_meta``, or None. Any transport: the key
    set is trusted for its signature, never for the channel it came by."""
    meta = ctx.params.get("_meta") if ctx.params else None
    return meta.get(GATEWAY_KEYS_META_KEY) if isinstance(meta, Mapping) else None


def _without_meta(ctx: ServerRequestContext[Any, Any], keys: tuple[str, ...]) -> ServerRequestContext[Any, Any]:
    params = ctx.params or {}
    meta = params.get("_meta")
    stripped = {k: v for k, v in meta.items() if k not in keys} if isinstance(meta, Mapping) else meta
    new_meta = {k: v for k, v in ctx.meta.items() if k not in keys} if ctx.meta else None
    return replace(ctx, params={**params, "_meta": stripped}, meta=cast("RequestParamsMeta | None", new_meta))


def take_token(ctx: ServerRequestContext[Any, Any]) -> tuple[ServerRequestContext[Any, Any], str | None, str | None]:
    """``(ctx without the kit's _meta entries, token or None, problem or None)`` for either transport."""
    params = ctx.params
    meta = params.get("_meta") if params else None
    meta_token: Any = None
    if isinstance(meta, Mapping) and any(key in meta for key in _KIT_META):
        meta_token = meta.get(ACTOR_TOKEN_META_KEY)
        ctx = _without_meta(ctx, _KIT_META)
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
    if method == "completion/complete":  # the gateway mints it for the prompt or template completed
        ref = params.get("ref") if params else None
        if not isinstance(ref, dict):
            return None
        named = ref.get("name") if ref.get("type") == "ref/prompt" else ref.get("uri")
        return named if isinstance(named, str) else None
    return method


class ActorTokenGuard:
    """SDK middleware: verify the actor token before any handler runs; refuse with "unauthenticated"."""

    def __init__(self, verifier: GatewayTokenVerifier) -> None:
        self.verifier = verifier

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        key_set = key_set_of(ctx)
        ctx, token, problem = take_token(ctx)
        if ctx.request_id is None or ctx.method in OPEN_METHODS:
            return await call_next(ctx)
        try:
            if problem is not None:
                raise ServiceAuthError(problem)
            target = _target(ctx.method, ctx.params)
            if target is None:
                raise ServiceAuthError("no call target")
            verified = await self.verifier.verify(token, target=target, key_set=key_set)
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


class PolicyGuard:
    """SDK middleware: decide each ``tools/call`` with the service's policies; refuse with "forbidden".

    Runs inside :class:`ActorTokenGuard`, so the call's principal is the verified token's. The
    decision uses ``params["arguments"]`` of the very context passed on (absent means ``{}``, as
    the SDK hands the tool), never anything the caller says about itself in the arguments.
    """

    def __init__(self, policies: ServicePolicies, *, clock: Callable[[], float] = time.time) -> None:
        self.policies = policies
        self._clock = clock

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.request_id is None or ctx.method != "tools/call":
            return await call_next(ctx)
        call = _current.get()
        params = ctx.params or {}
        name, arguments = params.get("name"), params.get("arguments")
        arguments = {} if arguments is None else arguments
        if call is None or not isinstance(name, str) or not isinstance(arguments, Mapping):
            # unreachable behind ActorTokenGuard and the SDK's params check; refuse all the same
            raise self._refuse(ctx, call, str(name), "malformed or unverified call", None)
        now = datetime.fromtimestamp(self._clock(), UTC)
        decision = self.policies.check(name, call.principal, arguments, now, approval=call.claims.get("apv"))
        if not decision.allowed:
            raise self._refuse(ctx, call, name, "policy refused the call", decision)
        if decision.shadow is not None:
            logger.info("policy shadow decision", extra={"fields": self._fields(ctx, call, name, decision.shadow)})
        return await call_next(ctx)

    def _refuse(self, ctx: ServerRequestContext[Any, Any], call: VerifiedCall | None, tool: str, why: str,
                decision: Decision | None) -> MCPError:
        """Log ``why`` with the decision for the operator; the caller gets a bare "forbidden"."""
        logger.warning(why, extra={"fields": self._fields(ctx, call, tool, decision)})
        return MCPError(code=FORBIDDEN_CODE, message=FORBIDDEN_MESSAGE)

    def _fields(self, ctx: ServerRequestContext[Any, Any], call: VerifiedCall | None, tool: str,
                decision: Decision | None) -> dict[str, Any]:
        fields: dict[str, Any] = {"service": self.policies.service, "tool": tool, "rpc_id": str(ctx.request_id)}
        if call is not None:
            fields |= {"req": call.claims.get("req"), "exposed_tool": call.claims.get("tool"),
                       **call.principal.log_fields()}
        if decision is not None:
            fields |= {"effect": decision.effect, "reasons": list(decision.reasons),
                       "rule_ids": list(decision.rule_ids), "policy_version": decision.policy_version}
        return fields


class ServiceApp(MCPServer[Any]):
    """An ``MCPServer`` guarded by the kit's middleware (order in the module docstring). Make one
    with :func:`create_service`; add tools with ``@app.tool()`` as usual."""

    def __init__(self, name: str, *, verifier: GatewayTokenVerifier, policies: ServicePolicies | None = None,
                 clock: Callable[[], float] = time.time, **mcpserver_kwargs: Any) -> None:
        for key in _KIT_OWNS:
            if mcpserver_kwargs.get(key) is not None:
                raise ValueError(f"{key!r} is not allowed: the service kit authenticates every call itself")
        if policies is not None and policies.service != name:
            raise ValueError(f"the policies are service {policies.service!r}'s, not {name!r}'s")
        self.guard = ActorTokenGuard(verifier)
        self.policy_guard = None if policies is None else PolicyGuard(policies, clock=clock)
        user_middleware = list(mcpserver_kwargs.pop("middleware", None) or ())
        innermost = [] if self.policy_guard is None else [self.policy_guard]
        super().__init__(name, middleware=[self.guard, *user_middleware, *innermost], **mcpserver_kwargs)

    @property
    def verifier(self) -> GatewayTokenVerifier:
        return self.guard.verifier

    @property
    def policies(self) -> ServicePolicies | None:
        """The policies every ``tools/call`` is decided with, or None if the service checks none."""
        return None if self.policy_guard is None else self.policy_guard.policies


def create_service(name: str, *, audience: str, verifier: GatewayTokenVerifier,
                   policies: ServicePolicies | None = None, clock: Callable[[], float] = time.time,
                   **mcpserver_kwargs: Any) -> ServiceApp:
    """A tool service that refuses every call without a valid gateway token for ``audience``.

    ``audience`` must be the verifier's audience (normally ``portcullis-service:<name>``); it is
    repeated here so that a service wired to another service's verifier fails at start-up.
    With ``policies`` (this service's, else ValueError), every ``tools/call`` is also decided
    against its manifest policy with the token's principal; ``clock`` (seconds since the epoch)
    is the time those decisions are made at. Other keywords go to ``MCPServer`` except its own
    auth settings, which the kit replaces.
    """
    if verifier.audience != audience:
        raise ValueError(f"the verifier checks audience {verifier.audience!r}, not {audience!r}")
    return ServiceApp(name, verifier=verifier, policies=policies, clock=clock, **mcpserver_kwargs)
