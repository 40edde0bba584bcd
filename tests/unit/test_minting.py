"""Gateway-minted actor tokens: the principal's claim form, minting, the key ring and its JWKS."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portcullis.identity.minting import (
    ACTOR_TOKEN_TYP,
    KeyRing,
    SigningKey,
    TokenMinter,
    b64url_decode,
    gateway_issuer,
    service_audience,
)
from portcullis.identity.principal import Principal
from portcullis.service.verify import GatewayTokenVerifier, ServiceAuthError

ISSUER = gateway_issuer("gw")
BILLING = service_audience("billing")


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def principal(**overrides: Any) -> Principal:
    fields: dict[str, Any] = {
        "client_id": "agent-console", "auth_method": "bearer", "issuer": "https://idp.example",
        "user_id": "alice", "agent_id": "refund-bot", "session_id": "s-7f3a", "source_app": "chat",
        "tenant": "acme", "roles": ("finance",), "scopes": ("tools:call",),
        "attributes": {"department": "finance", "employment_type": "employee", "region": "emea"},
    }
    return Principal(**(fields | overrides))


def mint(minter: TokenMinter, who: Principal | None = None, *, audience: str = BILLING) -> str:
    return minter.mint(who or principal(), audience=audience, request_id="req-1", tool="billing.get_invoice",
                       target="get_invoice")


def segment(token: str, index: int) -> dict[str, Any]:
    return json.loads(b64url_decode(token.split(".")[index]))


def verifier_for(jwks: Mapping[str, Any] | Any, clock: Clock, **kwargs: Any) -> GatewayTokenVerifier:
    return GatewayTokenVerifier(jwks, audience=BILLING, issuer=ISSUER, clock=clock, **kwargs)


# --------------------------------------------------------------------------- the principal


def test_principal_round_trips_through_its_claim_form() -> None:
    """from_claims(to_claims(p)) is p, through JSON as on the wire."""
    p = principal()
    assert Principal.from_claims(json.loads(json.dumps(p.to_claims()))) == p
    minimal = Principal(client_id="c", auth_method="mtls", issuer="ca")
    assert minimal.to_claims() == {"client_id": "c", "auth_method": "mtls", "issuer": "ca"}
    assert Principal.from_claims(minimal.to_claims()) == minimal


def test_principal_claims_ignore_unknown_keys() -> None:
    """A newer gateway may add claims; an older service ignores them."""
    assert Principal.from_claims(principal().to_claims() | {"clearance": "secret"}) == principal()


@pytest.mark.parametrize("change", [
    {"client_id": None},
    {"client_id": 7},
    {"agent_id": 7},
    {"auth_method": "password"},
    {"roles": "finance"},
    {"roles": [1]},
    {"attributes": [["department", "finance"]]},
    {"attributes": {"department": 1}},
    {"attributes": {"bad key": "x"}},
    {"user_id": "a" * 257},
    {"user_id": ""},
    {"user_id": "alice\nforged=1"},
    {"roles": ["r"] * 33},
    {"attributes": {f"k{i}": "v" for i in range(33)}},
    {"scopes": ["s" * 129]},
])
def test_principal_claims_with_wrong_types_or_sizes_are_rejected(change: dict[str, Any]) -> None:
    """Strict JSON types, bounded sizes and no control characters."""
    with pytest.raises(ValueError):
        Principal.from_claims(principal().to_claims() | change)


def test_principal_attributes_are_read_only_copies() -> None:
    """Changing the dict a principal was built from does not change the principal."""
    source = {"department": "finance"}
    p = principal(attributes=source)
    source["department"] = "hr"
    assert p.attributes["department"] == "finance"
    with pytest.raises(TypeError):
        p.attributes["department"] = "hr"  # type: ignore[index]


def test_principal_log_fields_carry_identifiers_but_no_attributes() -> None:
    """Log lines name who acted; attributes (possibly personal data) stay in the audit record."""
    fields = principal().log_fields()
    assert fields["principal.agent_id"] == "refund-bot"
    assert fields["principal.client_id"] == "agent-console"
    assert "finance" not in json.dumps({k: v for k, v in fields.items() if k != "principal.roles"})


# --------------------------------------------------------------------------- minting


async def test_minted_token_round_trips_through_the_verifier() -> None:
    """A freshly minted token verifies at its service and carries every call claim."""
    clock = Clock()
    ring = KeyRing.generate(clock=clock)
    minter = TokenMinter(ring, issuer=ISSUER, ttl_s=30, clock=clock)
    token = mint(minter)
    who, claims = await verifier_for(ring.jwks(), clock).verify(token, target="get_invoice")
    assert who == principal()
    now = int(clock.now)
    assert claims["iss"] == ISSUER and claims["aud"] == BILLING and claims["sub"] == "agent-console"
    assert (claims["iat"], claims["nbf"], claims["exp"]) == (now, now, now + 30)
    assert claims["req"] == "req-1" and claims["tool"] == "billing.get_invoice" and claims["target"] == "get_invoice"
    assert len(b64url_decode(claims["jti"])) == 16
    assert claims["act"] == principal().to_claims()


def test_minted_header_names_the_algorithm_the_key_and_the_actor_type() -> None:
    """Header: alg EdDSA, kid of the current key, typ portcullis-actor+jwt, nothing else."""
    ring = KeyRing.generate(clock=Clock())
    header = segment(mint(TokenMinter(ring, issuer=ISSUER, clock=Clock())), 0)
    assert header == {"alg": "EdDSA", "kid": ring.current.kid, "typ": ACTOR_TOKEN_TYP}


def test_every_token_has_a_fresh_jti() -> None:
    """Two tokens for the same call differ in jti."""
    minter = TokenMinter(KeyRing.generate(clock=Clock()), issuer=ISSUER, clock=Clock())
    assert segment(mint(minter), 1)["jti"] != segment(mint(minter), 1)["jti"]


async def test_es256_tokens_round_trip() -> None:
    """A P-256 ring signs ES256 tokens that an ES256-configured verifier accepts."""
    clock = Clock()
    ring = KeyRing.generate("ES256", clock=clock)
    token = mint(TokenMinter(ring, issuer=ISSUER, clock=clock))
    assert segment(token, 0)["alg"] == "ES256"
    who, _ = await verifier_for(ring.jwks(), clock, algorithms=("ES256",)).verify(token)
    assert who == principal()


async def test_es256_tokens_are_refused_where_only_eddsa_is_configured() -> None:
    """The accepted algorithm comes from configuration, not from the token."""
    clock = Clock()
    ring = KeyRing.generate("ES256", clock=clock)
    with pytest.raises(ServiceAuthError) as refused:
        await verifier_for(ring.jwks(), clock).verify(mint(TokenMinter(ring, issuer=ISSUER, clock=clock)))
    assert refused.value.reason == "wrong alg"


@pytest.mark.parametrize("ttl_s", [0, 61, 3600, 30.5, True])
def test_token_lifetimes_beyond_60_seconds_are_refused(ttl_s: Any) -> None:
    """A minter for longer-lived (or non-integer) tokens cannot be made."""
    with pytest.raises(ValueError):
        TokenMinter(KeyRing.generate(clock=Clock()), issuer=ISSUER, ttl_s=ttl_s)


@pytest.mark.parametrize("field", ["audience", "request_id", "tool", "target"])
def test_minting_refuses_empty_or_oversize_call_fields(field: str) -> None:
    """Every call claim is a string of 1 to 256 characters."""
    minter = TokenMinter(KeyRing.generate(clock=Clock()), issuer=ISSUER, clock=Clock())
    call = {"audience": BILLING, "request_id": "r", "tool": "t", "target": "t"}
    for bad in ("", "x" * 257):
        with pytest.raises(ValueError):
            minter.mint(principal(), **(call | {field: bad}))


# --------------------------------------------------------------------------- keys and JWKS


@pytest.mark.parametrize(("alg", "members"), [
    ("EdDSA", {"kty", "crv", "x", "kid", "use", "alg"}),
    ("ES256", {"kty", "crv", "x", "y", "kid", "use", "alg"}),
])
def test_jwks_publishes_only_public_key_members(alg: str, members: set[str]) -> None:
    """No 'd' (or any other private member) in the published key set, for current or previous keys."""
    clock = Clock()
    ring = KeyRing.generate(alg, clock=clock)
    ring.rotate()
    jwks = ring.jwks()
    assert len(jwks["keys"]) == 2
    for jwk in jwks["keys"]:
        assert set(jwk) == members
        assert jwk["use"] == "sig" and jwk["alg"] == alg
    if alg == "EdDSA":
        assert all(jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519" for jwk in jwks["keys"])
    assert "private_key" not in repr(ring.current)


async def test_token_signed_by_the_previous_key_verifies_until_the_key_ages_out() -> None:
    """After a rotation the old key stays published for overlap_s; then its tokens no longer verify."""
    clock = Clock()
    ring = KeyRing.generate(clock=clock, overlap_s=120)
    minter = TokenMinter(ring, issuer=ISSUER, clock=clock)

    async def fetch() -> dict[str, Any]:
        return ring.jwks()

    verifier = verifier_for(fetch, clock, jwks_max_age_s=30)
    old_kid = ring.current.kid
    before, spare = mint(minter), mint(minter)
    clock.now += 1
    new = ring.rotate()
    assert [k["kid"] for k in ring.jwks()["keys"]] == [new.kid, old_kid]
    await verifier.verify(before)  # previous key, within the overlap
    assert segment(mint(minter), 0)["kid"] == new.kid

    clock.now += 121  # past the overlap: the old key is no longer published
    assert [k["kid"] for k in ring.jwks()["keys"]] == [new.kid]
    with pytest.raises(ServiceAuthError) as refused:
        await verifier.verify(spare)
    assert refused.value.reason == "unknown kid"
    await verifier.verify(mint(minter))


def test_rotation_keeps_at_most_max_keys() -> None:
    """Rotating faster than the overlap drops the oldest previous key first."""
    clock = Clock()
    ring = KeyRing.generate(clock=clock, max_keys=3)
    kids = [ring.current.kid] + [ring.rotate().kid for _ in range(4)]
    assert [k["kid"] for k in ring.jwks()["keys"]] == kids[:-4:-1]


def test_overlap_shorter_than_a_token_lifetime_is_refused() -> None:
    """A key must stay published at least as long as a token it signed can live."""
    with pytest.raises(ValueError):
        KeyRing.generate(clock=Clock(), overlap_s=30)


async def test_pem_keys_get_the_same_kid_on_every_replica() -> None:
    """Two gateways loading one PEM file agree on the kid, so either's token verifies with the other's JWKS."""
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    clock = Clock()
    first, second = KeyRing.from_pem([pem], clock=clock), KeyRing.from_pem([pem], clock=clock)
    assert first.current.kid == second.current.kid
    token = mint(TokenMinter(first, issuer=ISSUER, clock=clock))
    assert (await verifier_for(second.jwks(), clock).verify(token)).principal == principal()


def test_rsa_pem_keys_are_refused() -> None:
    """Only Ed25519 and P-256 keys can sign actor tokens."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError):
        SigningKey.from_pem(pem, now=0)


def test_pre_published_keys_are_in_the_jwks_before_they_sign() -> None:
    """An upcoming key is published ahead of use and becomes current at the next rotation."""
    from portcullis.identity.minting import KeyRing

    ring = KeyRing.generate(upcoming=2)
    first_current = ring.current.kid
    next_kid = ring.upcoming[0].kid
    published = {key["kid"] for key in ring.jwks()["keys"]}
    assert {first_current, next_kid, ring.upcoming[1].kid} <= published
    assert ring.rotate().kid == next_kid
    assert len(ring.upcoming) == 2 and next_kid not in {k.kid for k in ring.upcoming}
    assert first_current in {key["kid"] for key in ring.jwks()["keys"]}  # still published during overlap
    assert all("d" not in key for key in ring.jwks()["keys"])
