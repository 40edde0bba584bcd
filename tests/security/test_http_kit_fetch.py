"""The HTTP kit's fetch on a real loopback server: the allow-listed page works (only through the
explicit address exception), request headers are the kit's, and response size, time, type and
encoding limits hold; https verifies the certificate against the URL's host."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from portcullis.kits.http import HttpKit, HttpKitConfig
from portcullis.kits.http_errors import HttpKitError, HttpKitReason
from portcullis.kits.http_resolve import StaticResolver
from portcullis.kits.http_url import UrlRule
from portcullis.kits.net_addresses import AddressPolicy, Refusal
from tests.pki import Authority
from tests.security.http_kit_support import LoopbackCanary, redirect, response, serve

K = HttpKitReason
EXCEPTION = AddressPolicy.parse(allow=["127.0.0.1/32"])


@pytest.fixture(scope="module")
def loopback_canary() -> Iterator[LoopbackCanary]:
    """The canary's port is on the same host as the test server: it must see nothing."""
    listener = LoopbackCanary()
    yield listener
    assert listener.close() == []


def kit(port: int, *, scheme: str = "http", prefix: str = "/public/", resolver: StaticResolver | None = None,
        **config: object) -> HttpKit:
    rules = (UrlRule(scheme, "127.0.0.1", port=port, path_prefix=prefix),
             UrlRule(scheme, "localhost", port=port, path_prefix=prefix))
    settings: dict[str, object] = {"addresses": EXCEPTION, **config}
    return HttpKit(HttpKitConfig(rules=rules, **settings), resolver=resolver)  # type: ignore[arg-type]


async def test_allow_listed_page_is_fetched(loopback_canary: LoopbackCanary) -> None:
    """The benign control: an allowed page on 127.0.0.1 is fetched because the config names that address."""
    async with serve({"/public/page?q=1": response(b"caf\xc3\xa9", content_type=b"text/plain; charset=utf-8")}) as s:
        answer = await kit(s.port).get(f"http://127.0.0.1:{s.port}/public/page?q=1#frag")
    assert (answer.status, answer.text(), answer.content_type) == (200, "caf\u00e9", "text/plain")
    assert answer.url == f"http://127.0.0.1:{s.port}/public/page?q=1"
    head = s.requests[0].decode()
    assert head.startswith("GET /public/page?q=1 HTTP/1.1\r\n")
    assert f"\r\nHost: 127.0.0.1:{s.port}\r\n" in head and "\r\nAccept-Encoding: identity\r\n" in head


async def test_the_same_page_is_refused_without_the_address_exception() -> None:
    """Without the allow-list entry, 127.0.0.1 is loopback like any other: refused, nothing sent."""
    async with serve({"/public/page": response()}) as s:
        with pytest.raises(HttpKitError) as caught:
            await kit(s.port, addresses=AddressPolicy()).get(f"http://127.0.0.1:{s.port}/public/page")
    assert caught.value.address_reason == Refusal.LOOPBACK and s.requests == []


async def test_canary_port_on_the_allowed_host_is_refused_by_the_rules(loopback_canary: LoopbackCanary) -> None:
    """The address exception opens one address, not its ports: the canary's port is not on the rules."""
    with pytest.raises(HttpKitError) as caught:
        await kit(loopback_canary.port + 1).get(f"http://127.0.0.1:{loopback_canary.port}/public/page")
    assert caught.value.reason == K.URL_NOT_ALLOWED


@pytest.mark.parametrize("path", ["/private", "/publicity", "/public", "/public/../private",
                                  "/public/%2e%2e/private", "/public/..%2fprivate", "/public/%2E%2E%2Fprivate",
                                  "/public/x%5c..%5c..%5cprivate", "/public/%00"])
async def test_path_outside_the_prefix_is_refused(path: str) -> None:
    """Paths outside /public/, after the parser resolves dot segments, or holding encoded separators."""
    async with serve({}) as s:
        with pytest.raises(HttpKitError) as caught:
            await kit(s.port).get(f"http://127.0.0.1:{s.port}{path}")
    assert caught.value.reason == K.URL_NOT_ALLOWED and s.requests == []


HOSTILE_HEADERS = {
    "Host": "169.254.169.254", "X-Forwarded-For": "127.0.0.1", "X-Forwarded-Host": "internal", "Forwarded": "for=x",
    "X-Real-IP": "127.0.0.1", "Proxy-Authorization": "Basic eA==", "Connection": "keep-alive, Upgrade",
    "Upgrade": "h2c", "Transfer-Encoding": "chunked", "Content-Length": "5", "TE": "trailers", "Expect": "100-continue",
    "Authorization": "Bearer service-secret", "Cookie": "session=1", "Accept-Encoding": "gzip",
    "X-HTTP-Method-Override": "DELETE", "User-Agent": "spoofed", "Keep-Alive": "timeout=5",
    "Accept": "application/json", "Accept-Language": "en",
}


async def test_caller_headers_pass_only_when_on_the_allow_list() -> None:
    """Hop-by-hop, framing, Host, proxy, forwarding and credential headers are dropped; Accept passes."""
    async with serve({"/public/h": response()}) as s:
        await kit(s.port).get(f"http://127.0.0.1:{s.port}/public/h", headers=HOSTILE_HEADERS)
    lines = s.requests[0].decode().split("\r\n")[1:-2]
    assert sorted(lines) == sorted([f"Host: 127.0.0.1:{s.port}", "Connection: close", "Accept-Encoding: identity",
                                    "User-Agent: portcullis-http-kit", "accept: application/json",
                                    "accept-language: en"])


@pytest.mark.parametrize("headers", [{"Accept": "a\r\nHost: evil"}, {"Accept": "a\nX: y"}, {"Accept": "a\rb"},
                                     {"Accept": "\x00"}, {"Accept": "caf\u00e9"}, {"Acc ept": "a"},
                                     {"Accept:": "a"}, {"": "a"}, {"Accept\r\nX": "a"}, {"Accept": "a" * 9000},
                                     {"X-Dropped": "a\r\nb"}])
async def test_header_injection_refuses_the_request(headers: dict[str, str]) -> None:
    """A CR, LF, NUL, non-ASCII or malformed name refuses the request, even for a header that would be dropped."""
    async with serve({}) as s:
        with pytest.raises(HttpKitError) as caught:
            await kit(s.port).get(f"http://127.0.0.1:{s.port}/public/h", headers=headers)
    assert caught.value.reason == K.HEADER_INVALID and s.requests == []


@pytest.mark.parametrize("name", ["Host", "Connection", "Proxy-Authorization", "X-Forwarded-For", "Transfer-Encoding",
                                  "Forwarded", "Content-Length", "bad name"])
def test_allow_list_refuses_headers_that_can_never_be_set(name: str) -> None:
    """Configuring one of the never-allowed headers is a configuration error."""
    with pytest.raises(ValueError, match="allow-list"):
        HttpKitConfig(rules=(UrlRule("https", "example.com"),), caller_headers=frozenset({name}))


async def test_credentials_are_dropped_on_a_redirect_to_another_origin() -> None:
    """Authorization (allowed for the first origin) does not follow a redirect to another port."""
    async with serve({"/public/other": response(b"other")}) as other:
        async with serve({"/public/go": redirect(f"http://localhost:{other.port}/public/other")}) as first:
            rules = (UrlRule("http", "127.0.0.1", port=first.port), UrlRule("http", "localhost", port=other.port))
            config = HttpKitConfig(rules=rules, addresses=EXCEPTION,
                                   caller_headers=frozenset({"authorization", "accept"}))
            answer = await HttpKit(config, resolver=StaticResolver({"localhost": [["127.0.0.1"]]})).get(
                f"http://127.0.0.1:{first.port}/public/go", headers={"Authorization": "Bearer t", "Accept": "*/*"})
    assert answer.body == b"other"
    assert b"authorization: Bearer t" in first.requests[0]
    assert b"authorization" not in other.requests[0].lower() and b"accept: */*" in other.requests[0]


async def test_post_then_303_continues_as_get_without_body() -> None:
    """A POST answered by 303 is followed by a GET with no body and no Content-Type."""
    async with serve({"/public/form": redirect("/public/done", b"303 See Other"),
                      "/public/done": response(b"ok")}) as s:
        answer = await kit(s.port).post(f"http://127.0.0.1:{s.port}/public/form", b'{"a":1}',
                                        headers={"Content-Type": "application/json"})
    assert answer.body == b"ok"
    assert s.requests[0].startswith(b"POST /public/form ") and s.requests[0].endswith(b'{"a":1}')
    assert s.requests[1].startswith(b"GET /public/done ") and b"content-" not in s.requests[1].lower()


async def test_redirect_loop_stops_at_the_limit() -> None:
    """Redirects are followed max_redirects times, then refused."""
    async with serve({"/public/a": redirect("/public/b"), "/public/b": redirect("/public/a")}) as s:
        with pytest.raises(HttpKitError) as caught:
            await kit(s.port, max_redirects=3).get(f"http://127.0.0.1:{s.port}/public/a")
    assert caught.value.reason == K.TOO_MANY_REDIRECTS and len(s.requests) == 4


RESPONSES: list[tuple[bytes, HttpKitReason]] = [
    (response(b"x" * 2000), K.RESPONSE_TOO_LARGE),
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 99999999999\r\n\r\n", K.RESPONSE_TOO_LARGE),
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" + b"x" * 2048
     + b"\r\n0\r\n\r\n", K.RESPONSE_TOO_LARGE),
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"x" * 2000, K.RESPONSE_TOO_LARGE),  # until close
    (response(b"\x1f\x8b" + b"\0" * 20, extra=b"Content-Encoding: gzip\r\n"), K.CONTENT_ENCODING_REFUSED),
    (response(b"(\xb5/\xfd", extra=b"Content-Encoding: zstd\r\n"), K.CONTENT_ENCODING_REFUSED),
    (response(b"", extra=b"Content-Encoding: br\r\n"), K.CONTENT_ENCODING_REFUSED),
    (response(b"x", extra=b"Content-Encoding: identity, gzip\r\n"), K.CONTENT_ENCODING_REFUSED),
    (response(b"\x89PNG", content_type=b"image/png"), K.CONTENT_TYPE_REFUSED),
    (response(b"<html>", content_type=b"text/html"), K.CONTENT_TYPE_REFUSED),
    (response(b"x", content_type=None), K.CONTENT_TYPE_REFUSED),
    (response(b"x", content_type=b"text"), K.CONTENT_TYPE_REFUSED),
    (b"HTTP/1.1 200 OK\nContent-Length: 1\n\nx", K.RESPONSE_INVALID),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", K.RESPONSE_INVALID),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", K.RESPONSE_INVALID),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\nx", K.RESPONSE_INVALID),
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nshort", K.RESPONSE_INVALID),
    (b"SSH-2.0-OpenSSH_9.2\r\n", K.RESPONSE_INVALID),
    (b"", K.RESPONSE_INVALID),
]


@pytest.mark.parametrize(("raw", "reason"), RESPONSES, ids=[f"{n}-{r.value}" for n, (_, r) in enumerate(RESPONSES)])
async def test_response_outside_the_limits_is_refused(raw: bytes, reason: HttpKitReason) -> None:
    """Size (declared, chunked, close-delimited), encoding, content type and framing, each refused."""
    async with serve({"/public/r": raw}) as s:
        with pytest.raises(HttpKitError) as caught:
            await kit(s.port, max_response_bytes=1024).get(f"http://127.0.0.1:{s.port}/public/r")
    assert caught.value.reason == reason


async def test_limits_allow_what_they_name() -> None:
    """Exactly max_response_bytes, a type/* entry, and an empty 204 without a type all pass."""
    async with serve({"/public/full": response(b"x" * 1024, content_type=b"text/csv"),
                      "/public/none": b"HTTP/1.1 204 No Content\r\n\r\n"}) as s:
        k = kit(s.port, max_response_bytes=1024, content_types=frozenset({"text/*"}))
        assert len((await k.get(f"http://127.0.0.1:{s.port}/public/full")).body) == 1024
        assert (await k.get(f"http://127.0.0.1:{s.port}/public/none")).status == 204


async def test_a_server_that_never_answers_times_out() -> None:
    """The whole fetch is bounded by timeout_s."""
    async with serve({"/public/slow": None}) as s:
        with pytest.raises(HttpKitError) as caught:
            await kit(s.port, timeout_s=0.5).get(f"http://127.0.0.1:{s.port}/public/slow")
    assert caught.value.reason == K.TIMEOUT


async def test_a_closed_port_fails_to_connect() -> None:
    """Nothing listening: connect_failed, with the fixed message."""
    async with serve({}) as s:
        port = s.port
    with pytest.raises(HttpKitError) as caught:
        await kit(port).get(f"http://127.0.0.1:{port}/public/x")
    assert caught.value.reason == K.CONNECT_FAILED and str(caught.value) == "the connection could not be made"


# ---------------------------------------------------------------- https with a test CA


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    directory = tmp_path_factory.mktemp("kit-pki")
    ca = Authority.create()
    (directory / "ca.crt").write_bytes(ca.pem)
    leaf = ca.issue(cn="localhost", dns=("localhost",), ips=("127.0.0.1",), server=True).write(directory, "server")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(str(leaf.cert_file), str(leaf.key_file))
    return directory / "ca.crt", server


TLS_NAMES = StaticResolver({"localhost": [["127.0.0.1"]], "wrong.test": [["127.0.0.1"]]})


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_https_page_is_fetched_with_the_certificate_checked(host: str,
                                                                  tls_files: tuple[Path, ssl.SSLContext]) -> None:
    """https to the pinned address, with the URL's host as the server name (IP or DNS SAN)."""
    ca_file, server_tls = tls_files
    async with serve({"/public/s": response(b"secure")}, tls=server_tls) as s:
        answer = await kit(s.port, scheme="https", ca_file=str(ca_file), resolver=TLS_NAMES).get(
            f"https://{host}:{s.port}/public/s")
    assert answer.body == b"secure"


@pytest.mark.parametrize(("host", "trusted"), [("wrong.test", True), ("localhost", False)])
async def test_https_with_a_wrong_name_or_unknown_ca_is_refused(host: str, trusted: bool,
                                                                tls_files: tuple[Path, ssl.SSLContext]) -> None:
    """A certificate for another name, or from a CA the kit does not trust: tls_failed, nothing sent."""
    ca_file, server_tls = tls_files
    async with serve({"/public/s": response()}, tls=server_tls) as s:
        rules = (UrlRule("https", host, port=s.port),)
        config = HttpKitConfig(rules=rules, addresses=EXCEPTION, ca_file=str(ca_file) if trusted else None)
        with pytest.raises(HttpKitError) as caught:
            await HttpKit(config, resolver=TLS_NAMES).get(f"https://{host}:{s.port}/public/s")
    assert caught.value.reason == K.TLS_FAILED and s.requests == []


async def test_https_to_http_redirect_is_refused(tls_files: tuple[Path, ssl.SSLContext]) -> None:
    """A downgrade from https to http is refused even when the http URL would be allowed."""
    ca_file, server_tls = tls_files
    async with serve({"/public/p": response()}) as plain:
        async with serve({"/public/s": redirect(f"http://127.0.0.1:{plain.port}/public/p")}, tls=server_tls) as s:
            rules = (UrlRule("https", "127.0.0.1", port=s.port), UrlRule("http", "127.0.0.1", port=plain.port))
            config = HttpKitConfig(rules=rules, addresses=EXCEPTION, ca_file=str(ca_file))
            with pytest.raises(HttpKitError) as caught:
                await HttpKit(config).get(f"https://127.0.0.1:{s.port}/public/s")
    assert caught.value.reason == K.REDIRECT_REFUSED and plain.requests == []
