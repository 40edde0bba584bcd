"""Key continuity: a service started before a rotation adopts the gateway's endorsed key set, and
only when a key it already trusts signed it."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from mcp import Client, MCPError
from mcp.server.mcpserver import Context

from portcullis.identity.minting import (
    ACTOR_TOKEN_META_KEY,
    GATEWAY_KEYS_META_KEY,
    KEY_SET_TYP,
    KeyRing,
    SigningKey,
    TokenMinter,
    b64url,
    gateway_issuer,
    service_audience,
)
from portcullis.identity.principal import Principal
from portcullis.service import GatewayTokenVerifier, ServiceAuthError, create_service, current_principal

ISSUER = gateway_issuer("gw")
BILLING = service_audience("billing")
NOW = 1_800_000_000
PRINCIPAL = Principal(client_id="console", auth_method="bearer", issuer="https://idp.example", agent_id="bot")


class Clock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def __call__(self) -> float:
        return self.now


def setup(upcoming: int = 1) -> tuple[Clock, KeyRing, TokenMinter, GatewayTokenVerifier]:
    """A gateway's ring and minter, and a service verifier that read the JWKS once, at its spawn."""
    clock = Clock()
    ring = KeyRing.generate(clock=clock, upcoming=upcoming)
    minter = TokenMinter(ring, issuer=ISSUER, clock=clock)
    verifier = GatewayTokenVerifier(ring.jwks(), audience=BILLING, issuer=ISSUER, clock=clock)
    return clock, ring, minter, verifier


def mint(minter: TokenMinter) -> str:
    return minter.mint(PRINCIPAL, audience=BILLING, request_id="r", tool="billing.whoami", target="whoami")


def enc(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def dec(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def signed(keys: list[SigningKey], payload: dict[str, Any], header: Callable[[SigningKey], dict[str, Any]] | None = None
           ) -> dict[str, Any]:
    """A key-set document over ``payload`` signed by ``keys`` (``header`` overrides each protected header)."""
    body = enc(payload)
    signatures = []
    for key in keys:
        protected = enc(header(key) if header else {"alg": key.alg, "kid": key.kid, "typ": KEY_SET_TYP})
        signatures.append({"protected": protected,
                           "signature": b64url(key.sign(f"{protected}.{body}".encode("ascii")))})
    return {"payload": body, "signatures": signatures}


async def test_a_service_spawned_before_three_rotations_verifies_with_the_endorsed_key_set() -> None:
    """Three rotations past the service's spawn, a token plus the endorsed key set verifies."""
    clock, ring, minter, verifier = setup()
    for _ in range(3):
        clock.now += 10
        ring.rotate()
    token = mint(minter)
    with pytest.raises(ServiceAuthError, match="unauthenticated"):
        await verifier.verify(token, target="whoami")
    verified = await verifier.verify(mint(minter), target="whoami", key_set=minter.endorsed_keys().document)
    assert verified.principal.agent_id == "bot"
    assert (await verifier.verify(mint(minter), target="whoami")).principal.agent_id == "bot"  # adopted for good


def test_the_endorsed_key_set_is_made_once_per_rotation() -> None:
    """endorsed_keys is a cached object on the call path; a rotation makes a new one naming the new key."""
    _clock, ring, minter, _ = setup()
    first = minter.endorsed_keys()
    assert minter.endorsed_keys() is first
    assert first.current_kid == ring.current.kid and first.kids == {k["kid"] for k in ring.jwks()["keys"]}
    ring.rotate()
    second = minter.endorsed_keys()
    assert second is not first and second.current_kid == ring.current.kid
    assert len(second.document["signatures"]) == len(ring.held())


# Each row turns the gateway's genuine document (for a ring rotated past the service) into a hostile one.
Doc = dict[str, Any]


def _payload(doc: Doc) -> dict[str, Any]:
    return dec(doc["payload"])


def _resigned(change: Callable[[dict[str, Any]], None], signer: str = "trusted") -> Callable[[Doc, Ctx], Any]:
    def make(doc: Doc, ctx: Ctx) -> Any:
        payload = _payload(doc)
        change(payload)
        return signed([ctx.trusted if signer == "trusted" else ctx.attacker], payload)
    return make


class Ctx:
    def __init__(self, trusted: SigningKey, attacker: SigningKey) -> None:
        self.trusted, self.attacker = trusted, attacker


def _add_attacker_key(doc: Doc, ctx: Ctx) -> Doc:
    payload = _payload(doc)
    payload["keys"].append(ctx.attacker.published())
    return {"payload": enc(payload), "signatures": doc["signatures"]}  # the old signatures over a new payload


HOSTILE: dict[str, Callable[[Doc, Ctx], Any]] = {
    "signed only by the attacker's key": lambda doc, ctx: signed([ctx.attacker], _payload(doc)),
    "attacker key named with a trusted kid": lambda doc, ctx: signed(
        [ctx.attacker], _payload(doc), lambda k: {"alg": "EdDSA", "kid": ctx.trusted.kid, "typ": KEY_SET_TYP}),
    "payload changed after signing": _add_attacker_key,
    "signatures swapped from another payload": lambda doc, ctx: {
        "payload": enc({**_payload(doc), "iat": _payload(doc)["iat"] + 1}), "signatures": doc["signatures"]},
    "wrong issuer": _resigned(lambda p: p.update(iss="portcullis://other")),
    "issuer missing": _resigned(lambda p: p.pop("iss")),
    "iat as a string": _resigned(lambda p: p.update(iat=str(p["iat"]))),
    "iat far in the future": _resigned(lambda p: p.update(iat=p["iat"] + 3600)),
    "private key material": _resigned(lambda p: p["keys"][0].update(d="AAAA")),
    "duplicate kids": _resigned(lambda p: p["keys"].append(dict(p["keys"][0]))),
    "no keys": _resigned(lambda p: p.update(keys=[])),
    "keys not a list": _resigned(lambda p: p.update(keys={"k": 1})),
    "only unusable keys": _resigned(lambda p: p.update(keys=[{"kty": "RSA", "kid": "x", "n": "AQAB", "e": "AQAB"}])),
    "too many keys": _resigned(lambda p: p.update(keys=p["keys"] * 20)),
    "wrong typ": lambda doc, ctx: signed([ctx.trusted], _payload(doc), lambda k: {
        "alg": k.alg, "kid": k.kid, "typ": "portcullis-actor+jwt"}),
    "extra header (embedded jwk)": lambda doc, ctx: signed([ctx.trusted], _payload(doc), lambda k: {
        "alg": k.alg, "kid": k.kid, "typ": KEY_SET_TYP, "jwk": dict(ctx.attacker.published())}),
    "alg none": lambda doc, ctx: signed([ctx.trusted], _payload(doc), lambda k: {
        "alg": "none", "kid": k.kid, "typ": KEY_SET_TYP}),
    "alg ES256 on an EdDSA key": lambda doc, ctx: signed([ctx.trusted], _payload(doc), lambda k: {
        "alg": "ES256", "kid": k.kid, "typ": KEY_SET_TYP}),
    "empty signature": lambda doc, ctx: {**doc, "signatures": [{**s, "signature": ""} for s in doc["signatures"]]},
    "no signatures": lambda doc, ctx: {**doc, "signatures": []},
    "too many signatures": lambda doc, ctx: {**doc, "signatures": doc["signatures"] * 10},
    "signatures not a list": lambda doc, ctx: {**doc, "signatures": doc["signatures"][0]},
    "payload not base64url": lambda doc, ctx: {**doc, "payload": doc["payload"] + "!"},
    "payload too long": lambda doc, ctx: {**doc, "payload": "A" * 20_000},
    "payload a JSON array": lambda doc, ctx: {**doc, "payload": enc([1])},
    "a string, not an object": lambda doc, ctx: json.dumps(doc),
    "a list of strings": lambda doc, ctx: [json.dumps(doc)],
    "a chain of forgeries": lambda doc, ctx: [signed([ctx.attacker], _payload(doc))] * 3,
    "null": lambda doc, ctx: None,
    "compact JWS string": lambda doc, ctx: f"{doc['signatures'][0]['protected']}.{doc['payload']}."
                                            f"{doc['signatures'][0]['signature']}",
}


@pytest.mark.parametrize("hostile", list(HOSTILE))
async def test_a_key_set_not_endorsed_by_a_trusted_key_is_never_adopted(hostile: str) -> None:
    """Forged, altered, misaddressed or malformed key sets leave the trusted keys unchanged; the token is refused."""
    clock, ring, minter, verifier = setup(upcoming=0)
    trusted = ring.current
    ring.rotate()  # the service now lacks the signing key
    attacker = SigningKey.generate(now=clock.now)
    genuine = dict(minter.endorsed_keys().document)
    document = HOSTILE[hostile](genuine, Ctx(trusted, attacker))
    assert verifier.adopt_key_set(document) is False
    with pytest.raises(ServiceAuthError) as refused:
        await verifier.verify(mint(minter), target="whoami", key_set=document)
    assert refused.value.reason == "unknown kid"


async def test_an_older_key_set_never_replaces_a_newer_one() -> None:
    """Replaying an older endorsed set (which would bring back retired keys) is refused: no rollback."""
    clock, ring, minter, verifier = setup(upcoming=0)
    clock.now += 10
    ring.rotate()
    old = minter.endorsed_keys().document
    clock.now += 10
    ring.rotate()
    assert verifier.adopt_key_set(old) is True
    newer = minter.endorsed_keys().document
    assert verifier.adopt_key_set(newer) is True
    assert verifier.adopt_key_set(old) is False


async def test_a_key_set_is_adopted_only_for_an_unknown_kid() -> None:
    """A token signed by a key the service knows never triggers adoption, even with a key set attached."""
    clock, ring, minter, verifier = setup(upcoming=0)
    attacker = SigningKey.generate(now=clock.now)
    forged = signed([ring.current], {"iss": ISSUER, "iat": NOW, "keys": [attacker.published()]})
    await verifier.verify(mint(minter), target="whoami", key_set=forged)
    assert verifier.adopt_key_set(minter.endorsed_keys().document) is True  # nothing was adopted before


async def test_a_kit_service_adopts_the_key_set_from_meta_and_the_tool_never_sees_it() -> None:
    """Through the kit over an in-memory connection: the key set in _meta is used, then stripped."""
    _clock, ring, minter, verifier = setup(upcoming=0)
    app = create_service("billing", audience=BILLING, verifier=verifier)

    @app.tool()
    async def whoami(ctx: Context) -> dict[str, Any]:
        meta = ctx.request_context.meta or {}
        return {"agent": current_principal().agent_id,
                "visible": sorted(k for k in meta if k.startswith("io.portcullis/"))}

    ring.rotate()
    async with Client(app) as client:
        with pytest.raises(MCPError):
            await client.session.call_tool("whoami", {}, meta={ACTOR_TOKEN_META_KEY: mint(minter)})
        result = await client.session.call_tool("whoami", {}, meta={
            ACTOR_TOKEN_META_KEY: mint(minter), GATEWAY_KEYS_META_KEY: minter.endorsed_keys().document})
    assert result.structured_content == {"agent": "bot", "visible": []}


async def test_a_child_behind_more_rotations_than_the_ring_holds_catches_up_along_the_chain() -> None:
    """Ten rotations (the ring holds four keys) after the spawn: the chain of endorsed sets still links
    the child's keys to the signing key, and the gateway sends only the links it needs."""
    clock, ring, minter, verifier = setup(upcoming=1)
    spawned = minter.endorsed_keys().kids
    assert minter.key_sets_for(spawned) is None
    for _ in range(10):
        clock.now += 1
        minter.rotate()
    assert not spawned & {k["kid"] for k in ring.jwks()["keys"]}  # nothing it knows is published any more
    chain = minter.key_sets_for(spawned)
    assert chain is not None and 2 <= len(chain) <= 11
    verified = await verifier.verify(mint(minter), target="whoami", key_set=[link.document for link in chain])
    assert verified.principal.agent_id == "bot"
    assert minter.key_sets_for(chain[-1].kids) is None


def attacker_token(minter: TokenMinter, attacker: SigningKey) -> str:
    """A token with genuine claims, signed by ``attacker``'s key."""
    header = enc({"alg": "EdDSA", "kid": attacker.kid, "typ": "portcullis-actor+jwt"})
    body = enc(json.loads(base64.urlsafe_b64decode(mint(minter).split(".")[1] + "==")))
    return f"{header}.{body}.{b64url(attacker.sign(f'{header}.{body}'.encode()))}"


async def test_a_forged_link_in_the_chain_is_skipped_and_its_key_never_trusted() -> None:
    """A link signed by an unknown key is refused; the genuine links around it still carry the child forward."""
    clock, _ring, minter, verifier = setup(upcoming=0)
    spawned = minter.endorsed_keys().kids
    for _ in range(8):
        clock.now += 1
        minter.rotate()
    chain = [link.document for link in minter.key_sets_for(spawned) or []]
    attacker = SigningKey.generate(now=clock.now)
    forged = signed([attacker], {**_payload(chain[1]), "keys": [attacker.published()]})
    hostile = [chain[0], forged, *chain[1:]]
    with pytest.raises(ServiceAuthError) as refused:
        await verifier.verify(attacker_token(minter, attacker), target="whoami", key_set=hostile)
    assert refused.value.reason == "unknown kid"
    assert (await verifier.verify(mint(minter), target="whoami", key_set=hostile)).principal.agent_id == "bot"


async def test_an_attacker_link_after_a_genuine_chain_is_not_adopted() -> None:
    """Appending one's own key set to the gateway's chain gains nothing: a token signed by that key is refused."""
    clock, _ring, minter, verifier = setup(upcoming=0)
    spawned = minter.endorsed_keys().kids
    minter.rotate()
    attacker = SigningKey.generate(now=clock.now)
    genuine = [link.document for link in minter.key_sets_for(spawned) or []]
    own = signed([attacker], {"iss": ISSUER, "iat": NOW + 1, "keys": [attacker.published()]})
    with pytest.raises(ServiceAuthError) as refused:
        await verifier.verify(attacker_token(minter, attacker), target="whoami", key_set=[*genuine, own])
    assert refused.value.reason == "unknown kid"


@pytest.mark.parametrize("shape", ["65 links", "nested lists"])
async def test_oversized_or_nested_chains_are_refused(shape: str) -> None:
    """A chain longer than 64 links, or lists inside the list, adopts nothing."""
    _clock, ring, minter, verifier = setup(upcoming=0)
    ring.rotate()
    document = minter.endorsed_keys().document
    key_set: Any = [document] * 65 if shape == "65 links" else [[document]]
    assert verifier.adopt_key_set(key_set) is False
