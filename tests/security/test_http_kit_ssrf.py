"""The HTTP kit against SSRF: every address encoding of a PayloadsAllTheThings-style list, names that
resolve inward, DNS rebinding and redirects — refused before any connection, which a real loopback
canary listener proves by counting zero connections over the whole module."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portcullis.kits.http import HttpKit, HttpKitConfig
from portcullis.kits.http_errors import HttpKitError, HttpKitReason
from portcullis.kits.http_resolve import StaticResolver, SystemResolver
from portcullis.kits.http_url import UrlRule
from portcullis.kits.net_addresses import AddressPolicy, Refusal
from tests.security.http_kit_support import LoopbackCanary, canary, ipv4_spelling, redirect, response, serve

K = HttpKitReason
R = Refusal


@pytest.fixture(scope="module")
def loopback_canary() -> Iterator[LoopbackCanary]:
    """One canary for the module; it must have seen no connection at all when the module ends."""
    listener = LoopbackCanary()
    yield listener
    seen = listener.close()
    assert seen == [], f"the SSRF rows reached the loopback canary: {seen}"


# names a hostile DNS answers with inward addresses (nip.io, localtest.me, rebinding services)
HOSTILE_DNS = StaticResolver({
    "localhost": [["127.0.0.1", "::1"]],
    "localtest.me": [["127.0.0.1"]],
    "127.0.0.1.nip.io": [["127.0.0.1"]],
    "customer1.app.localhost.my.company.127.0.0.1.nip.io": [["127.0.0.1"]],
    "spoofed.burpcollaborator.test": [["127.0.0.1"]],
    "metadata.google.internal": [["169.254.169.254"]],
    "metadata.test": [["fd00:ec2::254"]],
    "mixed.test": [["93.184.215.14", "127.0.0.1"]],
    "mixed6.test": [["2606:4700:4700::1111", "::1"]],
    "mapped.test": [["::ffff:127.0.0.1"]],
    "nat64.test": [["64:ff9b::7f00:1"]],
    "private.test": [["10.0.0.5"]],
    "cgnat.test": [["100.64.0.1"]],
    "ula.test": [["fd12::1"]],
    "scoped.test": [["fe80::1%1"]],
    "zero.test": [["0.0.0.0"]],
    "empty.test": [[]],
})

# (URL with {p} for the canary's port, reason, address reason)
SSRF: list[tuple[str, HttpKitReason, Refusal | None]] = [
    # loopback, every literal encoding the WHATWG parser accepts
    ("http://127.0.0.1:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://127.1:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://127.0.1:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://127.000.000.001:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://2130706433:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://017700000001:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://0177.0.0.1:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://0177.1:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://0x7f.1:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://0x7f000001:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://0x7f.0x0.0x0.0x1:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://0X7F.0.0.1:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://127.0.0.1.:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://127.1.2.3:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://127.127.127.127:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("HTTP://127.0.0.1:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://%32%31%33%30%37%30%36%34%33%33:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),  # encoded 2130706433
    ("http://127.0.0.1:{p}/%0D%0AHELO%20x", K.ADDRESS_REFUSED, R.LOOPBACK),  # smuggling in the path
    ("http://127.0.0.1:{p}/\r\nHost: x", K.ADDRESS_REFUSED, R.LOOPBACK),  # CR LF removed by the parser
    ("http://%31%32%37.0.0.1:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://\uff11\uff12\uff17.\uff10.\uff10.\uff11:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),  # fullwidth digits
    ("http://\u2460\u2461\u2466.\u24ea.\u24ea.\u2460:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),  # circled digits
    ("http://127\u30020\u30020\u30021:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),  # ideographic full stops
    ("http://[::1]:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://[0:0:0:0:0:0:0:1]:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://[0000::1]:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://[::ffff:127.0.0.1]:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://[::ffff:7f00:1]:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://[0:0:0:0:0:ffff:127.0.0.1]:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://[64:ff9b::127.0.0.1]:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://[::127.0.0.1]:{p}/", K.ADDRESS_REFUSED, R.RESERVED),
    ("http://[2002:7f00:1::1]:{p}/", K.ADDRESS_REFUSED, R.IPV4_TRANSITION),
    ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]:{p}/", K.ADDRESS_REFUSED, R.IPV4_TRANSITION),
    # unspecified
    ("http://0:{p}/", K.ADDRESS_REFUSED, R.UNSPECIFIED),
    ("http://0.0.0.0:{p}/", K.ADDRESS_REFUSED, R.UNSPECIFIED),
    ("http://0x0:{p}/", K.ADDRESS_REFUSED, R.UNSPECIFIED),
    ("http://[::]:{p}/", K.ADDRESS_REFUSED, R.UNSPECIFIED),
    ("http://[::ffff:0.0.0.0]:{p}/", K.ADDRESS_REFUSED, R.UNSPECIFIED),
    # cloud metadata
    ("http://169.254.169.254:{p}/latest/meta-data/", K.ADDRESS_REFUSED, R.METADATA),
    ("http://2852039166:{p}/", K.ADDRESS_REFUSED, R.METADATA),
    ("http://0xa9fea9fe:{p}/", K.ADDRESS_REFUSED, R.METADATA),
    ("http://0xA9.0xFE.0xA9.0xFE:{p}/", K.ADDRESS_REFUSED, R.METADATA),
    ("http://0251.0376.0251.0376:{p}/", K.ADDRESS_REFUSED, R.METADATA),
    ("http://169.254.43518:{p}/", K.ADDRESS_REFUSED, R.METADATA),
    ("http://169.16689662:{p}/", K.ADDRESS_REFUSED, R.METADATA),
    ("http://[::ffff:169.254.169.254]:{p}/", K.ADDRESS_REFUSED, R.METADATA),
    ("http://[::ffff:a9fe:a9fe]:{p}/", K.ADDRESS_REFUSED, R.METADATA),
    ("http://[64:ff9b::a9fe:a9fe]:{p}/", K.ADDRESS_REFUSED, R.METADATA),
    ("http://[fd00:ec2::254]:{p}/", K.ADDRESS_REFUSED, R.METADATA),
    ("http://100.100.100.200:{p}/", K.ADDRESS_REFUSED, R.METADATA),
    ("http://169.254.170.2:{p}/v2/credentials", K.ADDRESS_REFUSED, R.METADATA),
    ("http://168.63.129.16:{p}/", K.ADDRESS_REFUSED, R.METADATA),
    ("http://metadata.google.internal:{p}/computeMetadata/v1/", K.ADDRESS_REFUSED, R.METADATA),
    ("http://metadata.test:{p}/", K.ADDRESS_REFUSED, R.METADATA),
    # private, link-local, CGNAT, ULA
    ("http://10.0.0.1:{p}/", K.ADDRESS_REFUSED, R.PRIVATE),
    ("http://167772161:{p}/", K.ADDRESS_REFUSED, R.PRIVATE),
    ("http://172.16.0.1:{p}/", K.ADDRESS_REFUSED, R.PRIVATE),
    ("http://192.168.0.1:{p}/", K.ADDRESS_REFUSED, R.PRIVATE),
    ("http://3232235521:{p}/", K.ADDRESS_REFUSED, R.PRIVATE),
    ("http://0xc0.0xa8.0x0.0x1:{p}/", K.ADDRESS_REFUSED, R.PRIVATE),
    ("http://0300.0250.0.1:{p}/", K.ADDRESS_REFUSED, R.PRIVATE),
    ("http://[::ffff:192.168.0.1]:{p}/", K.ADDRESS_REFUSED, R.PRIVATE),
    ("http://169.254.1.1:{p}/", K.ADDRESS_REFUSED, R.LINK_LOCAL),
    ("http://[fe80::1]:{p}/", K.ADDRESS_REFUSED, R.LINK_LOCAL),
    ("http://100.64.0.1:{p}/", K.ADDRESS_REFUSED, R.SHARED_ADDRESS),
    ("http://[fc00::1]:{p}/", K.ADDRESS_REFUSED, R.UNIQUE_LOCAL),
    ("http://[fd00::1]:{p}/", K.ADDRESS_REFUSED, R.UNIQUE_LOCAL),
    ("http://224.0.0.1:{p}/", K.ADDRESS_REFUSED, R.MULTICAST),
    ("http://255.255.255.255:{p}/", K.ADDRESS_REFUSED, R.MULTICAST),
    ("http://[ff02::1]:{p}/", K.ADDRESS_REFUSED, R.MULTICAST),
    ("http://198.18.0.1:{p}/", K.ADDRESS_REFUSED, R.RESERVED),
    ("http://240.0.0.1:{p}/", K.ADDRESS_REFUSED, R.RESERVED),
    # names that resolve inward
    ("http://localhost:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://LOCALHOST:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://localhost.:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://\u24db\u24de\u24d2\u24d0\u24db\u24d7\u24de\u24e2\u24e3:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),  # circled
    ("http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),  # fullwidth
    ("http://localtest.me:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://127.0.0.1.nip.io:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://customer1.app.localhost.my.company.127.0.0.1.nip.io:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://spoofed.burpcollaborator.test:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://mixed.test:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),  # one public, one inward: refused whole
    ("http://mixed6.test:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://mapped.test:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://nat64.test:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://private.test:{p}/", K.ADDRESS_REFUSED, R.PRIVATE),
    ("http://cgnat.test:{p}/", K.ADDRESS_REFUSED, R.SHARED_ADDRESS),
    ("http://ula.test:{p}/", K.ADDRESS_REFUSED, R.UNIQUE_LOCAL),
    ("http://scoped.test:{p}/", K.ADDRESS_REFUSED, R.LINK_LOCAL),
    ("http://zero.test:{p}/", K.ADDRESS_REFUSED, R.UNSPECIFIED),
    ("http://empty.test:{p}/", K.DNS_FAILED, None),
    ("http://unknown.test:{p}/", K.DNS_FAILED, None),
    # parser confusion: the WHATWG reading decides, and credentials are refused outright
    ("http://evil.test\\@127.0.0.1:{p}/", K.URL_NOT_ALLOWED, None),  # host evil.test, port 80
    ("http://evil.test:{p}\\@127.0.0.1/", K.DNS_FAILED, None),  # host is evil.test
    ("http://127.0.0.1:{p}\\@evil.test/", K.ADDRESS_REFUSED, R.LOOPBACK),  # host is 127.0.0.1
    ("http://evil.test@127.0.0.1:{p}/", K.URL_INVALID, None),
    ("http://user:pass@localhost:{p}/", K.URL_INVALID, None),
    ("http://1.1.1.1 &@127.0.0.1:{p}# @3.3.3.3/", K.URL_INVALID, None),
    ("http:/\\/127.0.0.1:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http:127.0.0.1:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://127.0.0.1\t:{p}/", K.ADDRESS_REFUSED, R.LOOPBACK),  # tab removed by the parser
    ("http://127.0.0.1%2509:{p}/", K.URL_INVALID, None),
    ("http://127.0.0.1%00.evil.test:{p}/", K.URL_INVALID, None),
    ("http://[::1%25lo]:{p}/", K.URL_INVALID, None),
    ("http://4294967296:{p}/", K.URL_INVALID, None),
    ("http://127.0.0.1:{p}:80/", K.URL_INVALID, None),
    ("http://[::1]:{p}:80/", K.URL_INVALID, None),
    ("http://localhost:+{p}/", K.URL_INVALID, None),
    ("http://localhost:{p}aaa/", K.URL_INVALID, None),
    ("http://loc alhost:{p}/", K.URL_INVALID, None),
    ("http://localhost..:{p}/", K.URL_INVALID, None),
    ("http://.localhost:{p}/", K.URL_INVALID, None),
    ("http://256.0.0.1:{p}/", K.URL_INVALID, None),
    ("http://08.1:{p}/", K.URL_INVALID, None),
    # schemes other than http(s)
    ("gopher://127.0.0.1:{p}/_GET%20/", K.URL_INVALID, None),
    ("dict://127.0.0.1:{p}/info", K.URL_INVALID, None),
    ("ftp://127.0.0.1:{p}/", K.URL_INVALID, None),
    ("file:///etc/passwd", K.URL_INVALID, None),
    ("ws://127.0.0.1:{p}/", K.URL_INVALID, None),
    ("jar:http://127.0.0.1:{p}/!/", K.URL_INVALID, None),
    ("javascript:alert(1)", K.URL_INVALID, None),
    ("//127.0.0.1:{p}/", K.URL_INVALID, None),
    ("", K.URL_INVALID, None),
    ("http://", K.URL_INVALID, None),
    # the URL rules: another port on the same host is not allowed
    ("http://127.0.0.1:{q}/", K.URL_NOT_ALLOWED, None),
    ("http://example.test:{q}/", K.URL_NOT_ALLOWED, None),
]


@pytest.mark.parametrize(("url", "reason", "address_reason"), SSRF, ids=[row[0] for row in SSRF])
async def test_ssrf_url_is_refused_before_any_connection(url: str, reason: HttpKitReason,
                                                         address_reason: Refusal | None,
                                                         loopback_canary: LoopbackCanary) -> None:
    """Each hostile URL is refused with its reason, under rules that allow any host on the canary's port."""
    port = loopback_canary.port
    kit = HttpKit(HttpKitConfig(rules=(UrlRule("http", "*", port=port), UrlRule("https", "*", port=port))),
                  resolver=HOSTILE_DNS)
    with pytest.raises(HttpKitError) as caught:
        await kit.get(url.format(p=port, q=port + 1))
    assert (caught.value.reason, caught.value.address_reason) == (reason, address_reason)
    assert "127" not in str(caught.value) and "evil" not in str(caught.value)  # a fixed message


async def test_system_resolver_refuses_localhost(loopback_canary: LoopbackCanary) -> None:
    """The real resolver (/etc/hosts) answers localhost with loopback, which is refused."""
    port = loopback_canary.port
    kit = HttpKit(HttpKitConfig(rules=(UrlRule("http", "localhost", port=port),)), resolver=SystemResolver())
    with pytest.raises(HttpKitError) as caught:
        await kit.get(f"http://localhost:{port}/")
    assert caught.value.address_reason == R.LOOPBACK


async def test_system_resolver_failure_fails_closed() -> None:
    """A name the system cannot resolve (RFC 6761 .invalid) ends the fetch; a resolver slower than the
    fetch's time limit ends it too."""
    kit = HttpKit(HttpKitConfig(rules=(UrlRule("http", "*.invalid"),), timeout_s=5), resolver=SystemResolver())
    with pytest.raises(HttpKitError) as caught:
        await kit.get("http://portcullis-kit-test.invalid/")
    assert caught.value.reason in (K.DNS_FAILED, K.TIMEOUT)


async def test_canary_counts_a_real_connection() -> None:
    """The canary is not blind: a plain connection to it, over IPv4 and IPv6, is counted."""
    with canary() as probe:
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.connect((host, probe.port))
    assert len(probe.close()) == 2


# ---------------------------------------------------------------- rebinding and redirects, on a real server


def _loopback_kit(port: int, resolver: StaticResolver | None = None, **config: object) -> HttpKit:
    """Rules for the test server's port only, and the allow-list exception for 127.0.0.1 alone."""
    rules = (UrlRule("http", "*", port=port, path_prefix="/public/"),)
    return HttpKit(HttpKitConfig(rules=rules, addresses=AddressPolicy.parse(allow=["127.0.0.1/32"]),
                                 **config),  # type: ignore[arg-type]
                   resolver=resolver or StaticResolver({}))


async def test_rebinding_answer_is_never_asked_for_again() -> None:
    """A rebinding DNS answers 127.0.0.1 (allowed by exception) then ::1: the fetch looks up once and
    connects to the checked address; the next fetch gets ::1 and is refused, and ::1 sees nothing."""
    rebind = StaticResolver({"rebind.test": [["127.0.0.1"], ["::1"]]})
    async with serve({"/public/page": response(b"benign")}) as server:
        with canary(server.port, ipv4=False) as inner:
            kit = _loopback_kit(server.port, rebind)
            answer = await kit.get(f"http://rebind.test:{server.port}/public/page")
            assert (answer.status, answer.body) == (200, b"benign")
            assert rebind.lookups == ["rebind.test"]
            with pytest.raises(HttpKitError) as caught:
                await kit.get(f"http://rebind.test:{server.port}/public/page")
            assert caught.value.address_reason == R.LOOPBACK
        assert inner.close() == []
    assert len(server.requests) == 1


async def test_mixed_answer_is_refused_whole() -> None:
    """An answer with one allowed and one refused address is refused; nothing is sent to either."""
    mixed = StaticResolver({"mixed.test": [["127.0.0.1", "::1"]]})
    async with serve({"/public/page": response()}) as server:
        with pytest.raises(HttpKitError) as caught:
            await _loopback_kit(server.port, mixed).get(f"http://mixed.test:{server.port}/public/page")
    assert (caught.value.reason, caught.value.address_reason) == (K.ADDRESS_REFUSED, R.LOOPBACK)
    assert server.requests == []


REDIRECTS: list[tuple[str, HttpKitReason, Refusal | None]] = [
    ("http://[::1]:{p}/public/x", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://0x7f000002:{p}/public/x", K.ADDRESS_REFUSED, R.LOOPBACK),
    ("http://169.254.169.254:{p}/public/latest", K.ADDRESS_REFUSED, R.METADATA),
    ("http://[::ffff:a9fe:a9fe]:{p}/public/", K.ADDRESS_REFUSED, R.METADATA),
    ("http://rebind.test:{p}/public/x", K.ADDRESS_REFUSED, R.LOOPBACK),  # resolved again, checked again
    ("http://127.0.0.1:{c}/public/x", K.URL_NOT_ALLOWED, None),  # the canary's port: not on the rules
    ("http://127.0.0.1:{p}/private/x", K.URL_NOT_ALLOWED, None),  # outside the path prefix
    ("gopher://127.0.0.1:{p}/_x", K.REDIRECT_REFUSED, None),
    ("http://user@127.0.0.1:{p}/public/x", K.REDIRECT_REFUSED, None),
    ("http://[::1", K.REDIRECT_REFUSED, None),
]


@pytest.mark.parametrize(("location", "reason", "address_reason"), REDIRECTS, ids=[row[0] for row in REDIRECTS])
async def test_redirect_is_validated_like_the_first_url(location: str, reason: HttpKitReason,
                                                        address_reason: Refusal | None,
                                                        loopback_canary: LoopbackCanary) -> None:
    """A redirect from the allowed page passes the same rules: URL, DNS, every address."""
    rebind = StaticResolver({"rebind.test": [["::1"]]})
    async with serve({}) as server:
        server.routes["/public/go"] = redirect(location.format(p=server.port, c=loopback_canary.port))
        with pytest.raises(HttpKitError) as caught:
            await _loopback_kit(server.port, rebind).get(f"http://127.0.0.1:{server.port}/public/go")
    assert (caught.value.reason, caught.value.address_reason) == (reason, address_reason)
    assert len(server.requests) == 1


async def test_refusal_log_carries_the_reason_and_not_the_url(caplog: pytest.LogCaptureFixture,
                                                              loopback_canary: LoopbackCanary) -> None:
    """The operator log says why, never the requested URL or host (which the requester controls)."""
    port = loopback_canary.port
    kit = HttpKit(HttpKitConfig(rules=(UrlRule("http", "*", port=port),)), resolver=HOSTILE_DNS)
    caplog.set_level("DEBUG", logger="portcullis.kits.http")
    for url in (f"http://localtest.me:{port}/\u202eevil", f"http://x\u202e.test:{port}/", "gopher://\u0000/"):
        with pytest.raises(HttpKitError):
            await kit.get(url)
    assert "localtest" not in caplog.text and "\u202e" not in caplog.text and "gopher" not in caplog.text
    assert "address_refused (loopback)" in caplog.text and "url_invalid" in caplog.text


_INWARD = [ipaddress.ip_network(n) for n in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                             "169.254.0.0/16", "100.64.0.0/10", "0.0.0.0/8", "198.18.0.0/15")]
_INWARD_INTS = st.sampled_from(_INWARD).flatmap(
    lambda net: st.integers(int(net.network_address), int(net.broadcast_address)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=_INWARD_INTS.flatmap(ipv4_spelling))
def test_any_spelling_of_an_inward_address_is_refused(case: tuple[int, str], loopback_canary: LoopbackCanary) -> None:
    """Generated spellings (mixed radixes, short forms, mapped IPv6) of inward IPv4 addresses, via the kit."""
    _, text = case
    port = loopback_canary.port
    kit = HttpKit(HttpKitConfig(rules=(UrlRule("http", "*", port=port),)), resolver=HOSTILE_DNS)
    with pytest.raises(HttpKitError) as caught:
        asyncio.run(kit.get(f"http://{text}:{port}/"))
    assert caught.value.reason == K.ADDRESS_REFUSED
