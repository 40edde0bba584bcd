"""The per-issuer key cache: rotation, refresh floor, single flight, outages, discovery, hostile JWKs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from portcullis.identity import HttpsFetcher, IssuerConfig, JwksCache, JwksUnavailable

NOW = 1_800_000_000.0
ISSUER = "https://as.example"
JWKS_URL = "https://as.example/jwks.json"
DISCOVERY_URL = "https://as.example/.well-known/openid-configuration"

KEY_A = ec.generate_private_key(ec.SECP256R1())
KEY_B = ec.generate_private_key(ec.SECP256R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(private_key: Any, kid: str | None, **extra: Any) -> dict[str, Any]:
    public = private_key.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    return {**jwk, **({"kid": kid} if kid is not None else {}), **extra}


def jwks(*keys: dict[str, Any]) -> bytes:
    return json.dumps({"keys": list(keys)}).encode()


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class FakeFetcher:
    """Serves documents by URL, can be taken down, can hold fetches at a gate; records calls."""

    def __init__(self, docs: dict[str, bytes]) -> None:
        self.docs = docs
        self.calls: list[str] = []
        self.down = False
        self.gate: anyio.Event | None = None

    async def __call__(self, url: str) -> bytes:
        self.calls.append(url)
        if self.gate is not None:
            await self.gate.wait()
        if self.down or url not in self.docs:
            raise ConnectionRefusedError("endpoint down")
        return self.docs[url]


def config(**changes: Any) -> IssuerConfig:
    fields: dict[str, Any] = {"name": "main", "issuer": ISSUER, "jwks_url": JWKS_URL,
                              "audience": "https://gw.example/mcp", "algorithms": ("ES256", "RS256", "PS256")}
    return IssuerConfig(**{**fields, **changes})


def rig(*keys: dict[str, Any], **changes: Any) -> tuple[JwksCache, FakeFetcher, Clock]:
    fetcher, clock = FakeFetcher({JWKS_URL: jwks(*keys)}), Clock()
    return JwksCache(config(**changes), fetch=fetcher, clock=clock), fetcher, clock


# --------------------------------------------------------------------------- refresh behaviour


async def test_an_unknown_kid_refreshes_and_finds_a_rotated_key_while_the_old_one_still_works() -> None:
    """Rotation: the new kid appears after one refresh; the old kid keeps verifying during overlap."""
    cache, fetcher, clock = rig(public_jwk(KEY_A, "a"))
    assert (await cache.get_key("a")) is not None
    fetcher.docs[JWKS_URL] = jwks(public_jwk(KEY_A, "a"), public_jwk(KEY_B, "b"))
    clock.now += 60
    new = await cache.get_key("b")
    assert new is not None and new.key.public_numbers() == KEY_B.public_key().public_numbers()
    assert (await cache.get_key("a")) is not None
    assert len(fetcher.calls) == 2
    fetcher.docs[JWKS_URL] = jwks(public_jwk(KEY_B, "b"))  # the overlap ends
    clock.now += 60
    assert await cache.get_key("c") is None  # any miss refreshes...
    assert await cache.get_key("a") is None  # ...and the retired key is gone


async def test_two_unknown_kids_within_the_floor_cause_one_fetch() -> None:
    """Misses inside jwks_min_refresh_s share the last attempt; after the floor, one more fetch."""
    cache, fetcher, clock = rig(public_jwk(KEY_A, "a"))
    assert await cache.get_key("x") is None
    clock.now += 29
    assert await cache.get_key("y") is None
    assert len(fetcher.calls) == 1
    clock.now += 2
    assert await cache.get_key("y") is None
    assert len(fetcher.calls) == 2


async def test_known_kids_never_fetch() -> None:
    """Hits are dictionary lookups: one fetch to load, none for a thousand verifications."""
    cache, fetcher, _ = rig(public_jwk(KEY_A, "a"))
    for _ in range(1000):
        assert await cache.get_key("a") is not None
    assert len(fetcher.calls) == 1


async def test_concurrent_misses_share_a_single_fetch() -> None:
    """Ten tasks missing the same new kid at once trigger exactly one fetch and all see the key."""
    cache, fetcher, _ = rig(public_jwk(KEY_A, "a"), public_jwk(KEY_B, "b"))
    fetcher.gate = anyio.Event()
    found: list[bool] = []

    async def miss() -> None:
        found.append(await cache.get_key("b") is not None)

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(miss)
        await anyio.wait_all_tasks_blocked()
        fetcher.gate.set()
    assert found == [True] * 10
    assert len(fetcher.calls) == 1


async def test_cached_keys_survive_an_outage_until_max_age_then_fail_closed() -> None:
    """With the endpoint down, keys work until jwks_max_age_s after the last good fetch, then are dropped."""
    cache, fetcher, clock = rig(public_jwk(KEY_A, "a"), jwks_max_age_s=3600)
    await cache.refresh()
    fetcher.down = True
    clock.now += 3599
    assert await cache.get_key("a") is not None
    clock.now += 1
    assert await cache.get_key("a") is None
    assert fetcher.calls[-1] == JWKS_URL  # it tried, failed, and did not fall back to stale keys
    fetcher.down = False
    clock.now += 30
    assert await cache.get_key("a") is not None  # and recovers once the endpoint is back


async def test_an_unknown_kid_during_an_outage_is_none_and_known_kids_still_work() -> None:
    """An outage turns an unknown kid into None without disturbing cached keys."""
    cache, fetcher, clock = rig(public_jwk(KEY_A, "a"))
    await cache.refresh()
    fetcher.down = True
    clock.now += 100
    assert await cache.get_key("new") is None
    assert await cache.get_key("a") is not None
    assert len(fetcher.calls) == 2


async def test_a_failed_refresh_keeps_the_previous_keys() -> None:
    """Garbage from the endpoint is an error and does not replace good keys."""
    cache, fetcher, clock = rig(public_jwk(KEY_A, "a"))
    await cache.refresh()
    fetcher.docs[JWKS_URL] = b"<html>maintenance</html>"
    clock.now += 60
    with pytest.raises(JwksUnavailable):
        await cache.refresh()
    assert await cache.get_key("a") is not None


async def test_keep_fresh_refreshes_ahead_so_an_outage_starts_with_fresh_keys() -> None:
    """The background refresher fetches every max_age/4, so keys never reach max age while the AS is up."""
    cache, fetcher, clock = rig(public_jwk(KEY_A, "a"), jwks_max_age_s=3600)
    await cache.refresh()
    naps: list[float] = []

    class Stop(Exception):
        pass

    async def fake_sleep(seconds: float) -> None:
        if len(naps) == 3:
            raise Stop
        naps.append(seconds)
        clock.now += seconds

    with pytest.raises(Stop):
        await cache.keep_fresh(sleep=fake_sleep)
    assert naps == [900.0, 900.0, 900.0] and len(fetcher.calls) == 4
    fetcher.down = True
    clock.now += 3599  # an hour after the last background refresh, not after the first fetch
    assert await cache.get_key("a") is not None


# --------------------------------------------------------------------------- sources


async def test_discovery_with_a_mismatching_issuer_is_an_error() -> None:
    """A discovery document naming another issuer (even by a trailing slash) yields no keys."""
    fetcher = FakeFetcher({DISCOVERY_URL: json.dumps({"issuer": ISSUER + "/", "jwks_uri": JWKS_URL}).encode(),
                           JWKS_URL: jwks(public_jwk(KEY_A, "a"))})
    cache = JwksCache(config(jwks_url=None, discovery_url=DISCOVERY_URL), fetch=fetcher, clock=Clock())
    with pytest.raises(JwksUnavailable) as caught:
        await cache.refresh()
    assert "issuer" in caught.value.detail
    assert await cache.get_key("a") is None
    assert JWKS_URL not in fetcher.calls


async def test_discovery_with_the_exact_issuer_loads_the_advertised_key_set() -> None:
    """Discovery → jwks_uri → keys, when the discovered issuer matches exactly."""
    fetcher = FakeFetcher({DISCOVERY_URL: json.dumps({"issuer": ISSUER, "jwks_uri": JWKS_URL}).encode(),
                           JWKS_URL: jwks(public_jwk(KEY_A, "a"))})
    cache = JwksCache(config(jwks_url=None, discovery_url=DISCOVERY_URL), fetch=fetcher, clock=Clock())
    assert await cache.get_key("a") is not None
    assert fetcher.calls == [DISCOVERY_URL, JWKS_URL]


async def test_discovery_refuses_a_plain_http_jwks_uri() -> None:
    """A discovered jwks_uri over plain http to a non-loopback host is refused."""
    fetcher = FakeFetcher({DISCOVERY_URL: json.dumps(
        {"issuer": ISSUER, "jwks_uri": "http://as.example/jwks.json"}).encode()})
    cache = JwksCache(config(jwks_url=None, discovery_url=DISCOVERY_URL), fetch=fetcher, clock=Clock())
    with pytest.raises(JwksUnavailable):
        await cache.refresh()


async def test_a_jwks_file_is_read_at_start_and_on_refresh(tmp_path: Path) -> None:
    """A file source is re-read on refresh, so a rotated file takes effect."""
    path = tmp_path / "jwks.json"
    path.write_bytes(jwks(public_jwk(KEY_A, "a")))
    clock = Clock()
    cache = JwksCache(config(jwks_url=None, jwks_file=str(path)), clock=clock)
    assert await cache.get_key("a") is not None
    path.write_bytes(jwks(public_jwk(KEY_B, "b")))
    clock.now += 60
    assert await cache.get_key("b") is not None
    assert await cache.get_key("a") is None


async def test_a_fetcher_error_is_translated_at_the_boundary() -> None:
    """Whatever a fetcher raises, callers only see JwksUnavailable."""
    cache, fetcher, _ = rig(public_jwk(KEY_A, "a"))
    fetcher.down = True
    with pytest.raises(JwksUnavailable) as caught:
        await cache.refresh()
    assert caught.value.detail == "key set fetch failed: ConnectionRefusedError"


# --------------------------------------------------------------------------- hostile or unusable JWKs


async def test_symmetric_and_private_jwks_are_ignored() -> None:
    """oct keys and JWKs carrying private members are never used, even under a looked-up kid."""
    private = {**public_jwk(KEY_B, "priv"), "d": "AAAA"}
    rsa_private = RSAAlgorithm.to_jwk(RSA_KEY, as_dict=True) | {"kid": "rsa-priv"}
    oct_key = {"kty": "oct", "k": "c2VjcmV0", "kid": "oct", "alg": "HS256"}
    cache, _, _ = rig(oct_key, private, rsa_private, public_jwk(KEY_A, "a"))
    assert await cache.get_key("a") is not None
    for kid in ("oct", "priv", "rsa-priv"):
        assert await cache.get_key(kid) is None


async def test_unusable_jwks_are_ignored() -> None:
    """Encryption keys, non-verify key_ops, weak RSA, unsupported curves and hostile kids are skipped."""
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    cache, _, _ = rig(
        public_jwk(KEY_B, "enc", use="enc"),
        public_jwk(KEY_B, "ops", key_ops=["encrypt"]),
        public_jwk(weak, "weak"),
        public_jwk(ec.generate_private_key(ec.SECP521R1()), "p521"),
        public_jwk(KEY_B, "x" * 200),
        public_jwk(KEY_B, "alg-mismatch", alg="RS256"),
        {"kty": "EC", "crv": "P-256", "x": "bad", "y": "bad", "kid": "broken"},
        "not-an-object",
        public_jwk(KEY_A, "a"),
    )
    assert await cache.get_key("a") is not None
    for kid in ("enc", "ops", "weak", "p521", "x" * 200, "alg-mismatch", "broken"):
        assert await cache.get_key(kid) is None


async def test_each_key_remembers_its_algorithm_family() -> None:
    """EC P-256 verifies ES256 only; RSA verifies RS256/PS256, or only its JWK's own alg; Ed448 is EdDSA."""
    cache, _, _ = rig(public_jwk(KEY_A, "ec"), public_jwk(RSA_KEY, "rsa"), public_jwk(RSA_KEY, "pss", alg="PS256"),
                      public_jwk(ed448.Ed448PrivateKey.generate(), "ed448"))
    families = {kid: (await cache.get_key(kid)).algorithms for kid in ("ec", "rsa", "pss", "ed448")}  # type: ignore[union-attr]
    assert families == {"ec": {"ES256"}, "rsa": {"RS256", "PS256"}, "pss": {"PS256"}, "ed448": {"EdDSA"}}


async def test_a_kid_published_twice_is_dropped_as_ambiguous() -> None:
    """Two keys under one kid: neither is used."""
    cache, _, _ = rig(public_jwk(KEY_A, "dup"), public_jwk(KEY_B, "dup"), public_jwk(KEY_A, "a"))
    assert await cache.get_key("a") is not None
    assert await cache.get_key("dup") is None


async def test_a_key_set_with_no_usable_key_is_an_error() -> None:
    """Only oct or private keys: the refresh fails rather than installing an empty set."""
    cache, _, _ = rig({"kty": "oct", "k": "c2VjcmV0", "kid": "oct"})
    with pytest.raises(JwksUnavailable):
        await cache.refresh()


# --------------------------------------------------------------------------- the default fetcher


@pytest.mark.parametrize("url", [
    "http://as.example/jwks.json", "ftp://as.example/jwks.json", "file:///etc/passwd",
    "https://user:pw@as.example/jwks.json", "https:///jwks.json",
])
async def test_the_https_fetcher_refuses_insecure_urls(url: str) -> None:
    """Plain http off loopback, other schemes, and credentials in the URL are refused before any I/O."""
    calls: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        calls.append(str(request.url))
        return httpx2.Response(200, content=jwks(public_jwk(KEY_A, "a")))

    with pytest.raises(JwksUnavailable):
        await HttpsFetcher(transport=httpx2.MockTransport(handler))(url)
    assert calls == []


@pytest.mark.parametrize("url", ["http://127.0.0.1:9000/jwks.json", "http://localhost/jwks.json",
                                 "http://[::1]/jwks.json", "https://as.example/jwks.json"])
async def test_the_https_fetcher_allows_https_and_loopback_http(url: str) -> None:
    """https anywhere and http to loopback are fetched."""
    body = jwks(public_jwk(KEY_A, "a"))
    fetch = HttpsFetcher(transport=httpx2.MockTransport(lambda request: httpx2.Response(200, content=body)))
    assert await fetch(url) == body


async def test_the_https_fetcher_does_not_follow_redirects() -> None:
    """A redirect is a failed fetch, never a second request."""
    calls: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        calls.append(str(request.url))
        return httpx2.Response(302, headers={"location": "http://169.254.169.254/latest/meta-data/"})

    with pytest.raises(JwksUnavailable) as caught:
        await HttpsFetcher(transport=httpx2.MockTransport(handler))(JWKS_URL)
    assert "302" in caught.value.detail and calls == [JWKS_URL]


async def test_the_https_fetcher_caps_the_body_size() -> None:
    """A key set over 256 KiB is refused."""
    fetch = HttpsFetcher(transport=httpx2.MockTransport(
        lambda request: httpx2.Response(200, content=b" " * (256 * 1024 + 1))))
    with pytest.raises(JwksUnavailable) as caught:
        await fetch(JWKS_URL)
    assert "size cap" in caught.value.detail
