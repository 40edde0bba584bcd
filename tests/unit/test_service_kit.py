"""The service kit: hostile actor tokens, the replay cache, and calls through a kit-built service."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Generator
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import Context

from portcullis.identity.minting import (
    ACTOR_TOKEN_META_KEY,
    ACTOR_TOKEN_TYP,
    KeyRing,
    SigningKey,
    TokenMinter,
    b64url,
    gateway_issuer,
    service_audience,
)
from portcullis.identity.principal import Principal
from portcullis.service import (
    GatewayTokenVerifier,
    ReplayCache,
    ServiceApp,
    ServiceAuthError,
    create_service,
    current_call,
    current_principal,
)

ISSUER = gateway_issuer("gw")
BILLING = service_audience("billing")
ANALYTICS = service_audience("analytics")
NOW = 1_800_000_000


class Clock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def __call__(self) -> float:
        return self.now


PRINCIPAL = Principal(client_id="agent-console", auth_method="bearer", issuer="https://idp.example",
                      user_id="alice", agent_id="refund-bot", attributes={"department": "finance"})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ring(clock: Clock) -> KeyRing:
    return KeyRing.generate(clock=clock)


@pytest.fixture
def minter(ring: KeyRing, clock: Clock) -> TokenMinter:
    return TokenMinter(ring, issuer=ISSUER, ttl_s=30, clock=clock)


def verifier_for(ring: KeyRing, clock: Clock, **kwargs: Any) -> GatewayTokenVerifier:
    return GatewayTokenVerifier(ring.jwks(), audience=BILLING, issuer=ISSUER, clock=clock, **kwargs)


def mint(minter: TokenMinter, *, audience: str = BILLING, target: str = "whoami") -> str:
    return minter.mint(PRINCIPAL, audience=audience, request_id="req-1", tool=f"billing.{target}", target=target)


# --------------------------------------------------------------------------- hostile tokens


def claims(**overrides: Any) -> dict[str, Any]:
    base = {"iss": ISSUER, "aud": BILLING, "sub": "agent-console", "iat": NOW, "nbf": NOW, "exp": NOW + 30,
            "jti": b64url(b"0123456789abcdef"), "req": "req-1", "tool": "billing.whoami", "target": "whoami",
            "act": PRINCIPAL.to_claims()}
    return {k: v for k, v in (base | overrides).items() if v is not None}


def encode(obj: Any) -> str:
    return b64url(json.dumps(obj).encode())


def jws(key: SigningKey, header: dict[str, Any] | None = None, body: dict[str, Any] | None = None) -> str:
    """A token signed by ``key`` with any header and claims."""
    header = {"alg": key.alg, "kid": key.kid, "typ": ACTOR_TOKEN_TYP} if header is None else header
    signing_input = f"{encode(header)}.{encode(claims() if body is None else body)}"
    return f"{signing_input}.{b64url(key.sign(signing_input.encode()))}"


def impostor(kid: str) -> SigningKey:
    """Another Ed25519 key claiming the gateway's kid."""
    return SigningKey(kid, "EdDSA", Ed25519PrivateKey.generate(), 0)


def hs256_with_public_key(key: SigningKey) -> str:
    header = {"alg": "HS256", "kid": key.kid, "typ": ACTOR_TOKEN_TYP}
    signing_input = f"{encode(header)}.{encode(claims())}"
    secret = base64.urlsafe_b64decode(key.public["x"] + "=")
    return f"{signing_input}.{b64url(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def embedded_jwk(key: SigningKey) -> str:
    attacker = impostor(key.kid)
    header = {"alg": "EdDSA", "kid": key.kid, "typ": ACTOR_TOKEN_TYP, "jwk": dict(attacker.public)}
    return jws(attacker, header)


Forge = Callable[[SigningKey, TokenMinter], str | None]

HOSTILE: list[tuple[str, Forge, str]] = [
    ("none", lambda key, minter: None, "missing token"),
    ("empty", lambda key, minter: "", "missing token"),
    ("garbage", lambda key, minter: "not a token", "malformed token"),
    ("four segments", lambda key, minter: mint(minter) + ".x", "malformed token"),
    ("padded base64", lambda key, minter: mint(minter).replace(".", "=.", 1), "malformed token"),
    ("oversize", lambda key, minter: "a" * 20_000, "malformed token"),
    ("forged signature, same kid", lambda key, minter: jws(impostor(key.kid)), "bad signature"),
    ("tampered claims", lambda key, minter: _swap_claims(mint(minter), claims(aud=BILLING, sub="x")),
     "bad signature"),
    ("alg none", lambda key, minter: f"{encode({'alg': 'none', 'kid': key.kid, 'typ': ACTOR_TOKEN_TYP})}"
     f".{encode(claims())}.", "wrong alg"),
    ("HS256 with the public key as secret", lambda key, minter: hs256_with_public_key(key), "wrong alg"),
    ("embedded jwk", lambda key, minter: embedded_jwk(key), "forbidden header jwk"),
    ("jku header", lambda key, minter: jws(key, {"alg": "EdDSA", "kid": key.kid, "typ": ACTOR_TOKEN_TYP,
                                                  "jku": "https://evil.example/jwks"}), "forbidden header jku"),
    ("x5c header", lambda key, minter: jws(key, {"alg": "EdDSA", "kid": key.kid, "typ": ACTOR_TOKEN_TYP,
                                                  "x5c": ["MIIB"]}), "forbidden header x5c"),
    ("crit header", lambda key, minter: jws(key, {"alg": "EdDSA", "kid": key.kid, "typ": ACTOR_TOKEN_TYP,
                                                   "crit": ["exp"]}), "forbidden header crit"),
    ("duplicate header key", lambda key, minter: _duplicate_alg_header(key), "malformed token"),
    ("unknown kid", lambda key, minter: jws(impostor("someone-else")), "unknown kid"),
    ("wrong typ", lambda key, minter: jws(key, {"alg": "EdDSA", "kid": key.kid, "typ": "JWT"}), "wrong typ"),
    ("minted for another service", lambda key, minter: mint(minter, audience=ANALYTICS), "wrong aud"),
    ("audience list", lambda key, minter: jws(key, body=claims(aud=[BILLING])), "bad aud claim"),
    ("wrong iss", lambda key, minter: jws(key, body=claims(iss="portcullis://other")), "wrong iss"),
    ("expired", lambda key, minter: jws(key, body=claims(iat=NOW - 40, nbf=NOW - 40, exp=NOW - 10)), "expired"),
    ("expires now", lambda key, minter: jws(key, body=claims(iat=NOW - 30, nbf=NOW - 30, exp=NOW)), "expired"),
    ("ttl over 60 s", lambda key, minter: jws(key, body=claims(exp=NOW + 61)), "lifetime too long"),
    ("nbf in the future", lambda key, minter: jws(key, body=claims(nbf=NOW + 6)), "not yet valid"),
    ("iat in the future", lambda key, minter: jws(key, body=claims(iat=NOW + 6, nbf=NOW, exp=NOW + 36)),
     "issued in the future"),
    ("float exp", lambda key, minter: jws(key, body=claims(exp=NOW + 30.0)), "bad exp claim"),
    ("short jti", lambda key, minter: jws(key, body=claims(jti="abc")), "bad jti claim"),
    ("no act", lambda key, minter: jws(key, body=claims(act=None)), "bad act claim"),
    ("act with a numeric agent", lambda key, minter: jws(key, body=claims(act=PRINCIPAL.to_claims() | {
        "agent_id": 7})), "bad act claim"),
    ("sub not the acting client", lambda key, minter: jws(key, body=claims(sub="someone")),
     "sub does not match act"),
]


def _swap_claims(token: str, body: dict[str, Any]) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{encode(body)}.{signature}"


def _duplicate_alg_header(key: SigningKey) -> str:
    raw = f'{{"alg":"none","alg":"EdDSA","kid":"{key.kid}","typ":"{ACTOR_TOKEN_TYP}"}}'
    header = b64url(raw.encode())
    signing_input = f"{header}.{encode(claims())}"
    return f"{signing_input}.{b64url(key.sign(signing_input.encode()))}"


@pytest.mark.parametrize(("forge", "reason"), [pytest.param(f, r, id=name) for name, f, r in HOSTILE])
async def test_hostile_tokens_are_refused_with_a_reason(
    forge: Forge, reason: str, ring: KeyRing, minter: TokenMinter, clock: Clock
) -> None:
    """Each hostile token is refused; the reason is for the log and the message says only 'unauthenticated'."""
    with pytest.raises(ServiceAuthError) as refused:
        await verifier_for(ring, clock).verify(forge(ring.current, minter))
    assert refused.value.reason == reason
    assert str(refused.value) == "unauthenticated"


async def test_the_baseline_of_the_hostile_table_is_accepted(ring: KeyRing, clock: Clock) -> None:
    """The hand-built token the table mutates verifies unchanged, so each row tests only its change."""
    assert (await verifier_for(ring, clock).verify(jws(ring.current))).principal == PRINCIPAL


async def test_small_clock_skew_is_tolerated(ring: KeyRing, clock: Clock) -> None:
    """iat and nbf up to 5 s ahead of the service's clock are accepted."""
    token = jws(ring.current, body=claims(iat=NOW + 5, nbf=NOW + 5, exp=NOW + 35))
    assert (await verifier_for(ring, clock).verify(token)).principal == PRINCIPAL


async def test_a_replayed_token_is_refused(ring: KeyRing, minter: TokenMinter, clock: Clock) -> None:
    """The second use of the same token fails."""
    verifier, token = verifier_for(ring, clock), mint(minter)
    await verifier.verify(token)
    with pytest.raises(ServiceAuthError) as refused:
        await verifier.verify(token)
    assert refused.value.reason == "replayed jti"


async def test_a_token_for_another_tool_is_refused(ring: KeyRing, minter: TokenMinter, clock: Clock) -> None:
    """The target claim binds a token to the one tool the gateway authorised."""
    with pytest.raises(ServiceAuthError) as refused:
        await verifier_for(ring, clock).verify(mint(minter, target="get_invoice"), target="process_refund")
    assert refused.value.reason == "wrong target"


async def test_a_full_replay_cache_refuses_new_tokens(ring: KeyRing, minter: TokenMinter, clock: Clock) -> None:
    """With every remembered jti still live, a new valid token is refused rather than an old jti forgotten."""
    verifier = verifier_for(ring, clock, replay_cache_size=2)
    first = mint(minter)
    await verifier.verify(first)
    await verifier.verify(mint(minter))
    with pytest.raises(ServiceAuthError) as refused:
        await verifier.verify(mint(minter))
    assert refused.value.reason == "replay cache full"
    with pytest.raises(ServiceAuthError) as replayed:
        await verifier.verify(first)
    assert replayed.value.reason == "replayed jti"


async def test_expired_jtis_make_room_in_the_replay_cache(ring: KeyRing, minter: TokenMinter, clock: Clock) -> None:
    """Entries leave the cache at their token's exp, so a full cache recovers on its own."""
    verifier = verifier_for(ring, clock, replay_cache_size=1)
    await verifier.verify(mint(minter))
    clock.now += 30
    await verifier.verify(mint(minter))


def test_replay_cache_is_bounded_and_evicts_only_expired_entries() -> None:
    """Evicting takes expired entries; live ones are never dropped."""
    cache = ReplayCache(3)
    for i, exp in enumerate((10, 20, 30)):
        cache.remember(f"j{i}", exp, now=0)
    with pytest.raises(ServiceAuthError):
        cache.remember("j3", 40, now=5)
    cache.remember("j3", 40, now=15)
    assert len(cache) == 3
    with pytest.raises(ServiceAuthError):
        cache.remember("j1", 50, now=15)


async def test_a_jwks_holding_private_key_material_is_refused(ring: KeyRing, clock: Clock) -> None:
    """A key set with 'd' members means a leaked key; the verifier will not trust it."""
    leaked = {"keys": [ring.jwks()["keys"][0] | {"d": "AAAA"}]}
    with pytest.raises(ValueError):
        GatewayTokenVerifier(leaked, audience=BILLING, issuer=ISSUER, clock=clock)


async def test_an_unreachable_jwks_refuses_every_token(minter: TokenMinter, clock: Clock) -> None:
    """No keys fetched means no token verifies (fail closed)."""

    async def down() -> dict[str, Any]:
        raise OSError("connection refused")

    verifier = GatewayTokenVerifier(down, audience=BILLING, issuer=ISSUER, clock=clock)
    with pytest.raises(ServiceAuthError) as refused:
        await verifier.verify(mint(minter))
    assert refused.value.reason == "jwks unavailable"


async def test_unknown_kids_refetch_the_jwks_at_most_once_a_second(ring: KeyRing, clock: Clock) -> None:
    """A flood of made-up kids cannot turn into a flood of JWKS fetches."""
    fetches = 0

    async def fetch() -> dict[str, Any]:
        nonlocal fetches
        fetches += 1
        return ring.jwks()

    verifier = GatewayTokenVerifier(fetch, audience=BILLING, issuer=ISSUER, clock=clock)
    for _ in range(5):
        with pytest.raises(ServiceAuthError):
            await verifier.verify(jws(impostor("made-up")))
    assert fetches == 1
    clock.now += 1
    with pytest.raises(ServiceAuthError):
        await verifier.verify(jws(impostor("made-up")))
    assert fetches == 2


# --------------------------------------------------------------------------- a kit-built service


class Counter:
    def __init__(self) -> None:
        self.calls = 0


@pytest.fixture
def counter() -> Counter:
    return Counter()


@pytest.fixture
def service(ring: KeyRing, clock: Clock, counter: Counter) -> ServiceApp:
    app = create_service("billing", audience=BILLING, verifier=verifier_for(ring, clock))

    @app.tool()
    def whoami() -> str:
        """The agent the gateway says is calling."""
        counter.calls += 1
        return current_principal().agent_id or "unknown"

    @app.tool()
    async def call_facts(ctx: Context) -> dict[str, Any]:
        """What the tool can see of the call: the request id, and whether any token reached it."""
        counter.calls += 1
        meta = ctx.request_context.meta or {}
        return {"req": current_call().claims["req"], "token_visible": ACTOR_TOKEN_META_KEY in meta}

    return app


async def test_a_call_with_a_valid_token_in_meta_reaches_the_tool(
    service: ServiceApp, minter: TokenMinter, counter: Counter
) -> None:
    """Over an in-memory (stdio-like) connection the token rides in _meta; the tool sees the principal."""
    async with Client(service) as client:
        result = await client.session.call_tool("whoami", {}, meta={ACTOR_TOKEN_META_KEY: mint(minter)})
    assert result.structured_content == {"result": "refund-bot"}
    assert counter.calls == 1


async def test_the_tool_never_sees_the_token(service: ServiceApp, minter: TokenMinter) -> None:
    """The kit strips the token from _meta before the tool runs, so it cannot be passed on."""
    async with Client(service) as client:
        result = await client.session.call_tool(
            "call_facts", {}, meta={ACTOR_TOKEN_META_KEY: mint(minter, target="call_facts")}
        )
    assert result.structured_content == {"req": "req-1", "token_visible": False}


@pytest.mark.parametrize("token", [
    pytest.param(lambda minter: None, id="no token"),
    pytest.param(lambda minter: mint(minter, audience=ANALYTICS), id="minted for analytics"),
    pytest.param(lambda minter: mint(minter, target="call_facts"), id="minted for another tool"),
    pytest.param(lambda minter: 12345, id="not a string"),
])
async def test_calls_without_a_valid_token_are_refused_before_the_tool_runs(
    token: Callable[[TokenMinter], Any], service: ServiceApp, minter: TokenMinter, counter: Counter
) -> None:
    """A call that bypassed the gateway gets a bare 'unauthenticated' error and no tool code runs."""
    value = token(minter)
    meta = {} if value is None else {ACTOR_TOKEN_META_KEY: value}
    async with Client(service) as client:
        with pytest.raises(MCPError) as refused:
            await client.session.call_tool("whoami", {}, meta=meta)
    assert (refused.value.error.code, refused.value.error.message, refused.value.error.data) == (
        -31401, "unauthenticated", None)
    assert counter.calls == 0


async def test_a_replayed_token_is_refused_end_to_end(
    service: ServiceApp, minter: TokenMinter, counter: Counter
) -> None:
    """The same token sent twice runs the tool once."""
    token = mint(minter)
    async with Client(service) as client:
        await client.session.call_tool("whoami", {}, meta={ACTOR_TOKEN_META_KEY: token})
        with pytest.raises(MCPError) as refused:
            await client.session.call_tool("whoami", {}, meta={ACTOR_TOKEN_META_KEY: token})
    assert refused.value.error.message == "unauthenticated"
    assert counter.calls == 1


async def test_listing_tools_needs_no_token(service: ServiceApp) -> None:
    """tools/list stays open: the gateway lists for pinning and health outside any client call."""
    async with Client(service) as client:
        assert {tool.name for tool in (await client.list_tools()).tools} == {"whoami", "call_facts"}


def test_current_principal_outside_a_call_refuses() -> None:
    """Tool code run outside a verified call has no principal to read."""
    with pytest.raises(ServiceAuthError):
        current_principal()


def test_a_service_wired_to_another_services_verifier_does_not_start(ring: KeyRing, clock: Clock) -> None:
    """The audience given to the kit must be the verifier's."""
    with pytest.raises(ValueError):
        create_service("analytics", audience=ANALYTICS, verifier=verifier_for(ring, clock))


def test_the_sdk_auth_settings_cannot_replace_the_kit(ring: KeyRing, clock: Clock) -> None:
    """Passing MCPServer's own token verifier would put a second, weaker check on the same header."""
    with pytest.raises(ValueError):
        create_service("billing", audience=BILLING, verifier=verifier_for(ring, clock), token_verifier=object())


class _MintPerRequest(httpx2.Auth):
    """Sets a fresh bearer token on each HTTP request, as the gateway's forwarder does per call."""

    def __init__(self, minter: TokenMinter | None) -> None:
        self.minter = minter

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        if self.minter is not None:
            request.headers["Authorization"] = f"Bearer {mint(self.minter)}"
        yield request


async def _call_over_http(service: ServiceApp, auth: httpx2.Auth, meta: dict[str, Any] | None = None) -> Any:
    """The call's result, or the MCPError it raised (caught inside, so it is not wrapped in a task group's)."""
    asgi = service.streamable_http_app(json_response=True)
    async with service.session_manager.run():
        transport = httpx2.ASGITransport(asgi)
        async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000", auth=auth) as http:
            async with Client(streamable_http_client("http://127.0.0.1:8000/mcp", http_client=http)) as client:
                try:
                    return await client.session.call_tool("whoami", {}, meta=meta)
                except MCPError as error:
                    return error


async def test_over_http_the_token_rides_in_the_authorization_header(
    service: ServiceApp, minter: TokenMinter, counter: Counter
) -> None:
    """The same guard reads a Bearer header when the call arrives over Streamable HTTP."""
    result = await _call_over_http(service, _MintPerRequest(minter))
    assert result.structured_content == {"result": "refund-bot"}
    assert counter.calls == 1


@pytest.mark.parametrize("use_meta", [False, True], ids=["no header", "token in _meta instead of the header"])
async def test_over_http_a_call_without_a_bearer_header_is_refused(
    use_meta: bool, service: ServiceApp, minter: TokenMinter, counter: Counter
) -> None:
    """Over HTTP only the Authorization header counts; a _meta token there is refused, not accepted."""
    meta = {ACTOR_TOKEN_META_KEY: mint(minter)} if use_meta else None
    refused = await _call_over_http(service, _MintPerRequest(None), meta)
    assert isinstance(refused, MCPError)
    assert (refused.error.code, refused.error.message) == (-31401, "unauthenticated")
    assert counter.calls == 0
