"""The one bounded HTTP exchange with an identity provider (key set fetch, the console's code exchange):
URL allow-list before any I/O, no redirects, one deadline, a streamed size cap, the caller's error type."""

from __future__ import annotations

from urllib.parse import parse_qs

import anyio
import httpx2
import pytest

from portcullis.console.oidc import HttpsPoster, LoginFailed
from portcullis.identity.bounded_http import bounded_request, url_allowed
from portcullis.identity.jwks import HttpsFetcher, JwksUnavailable

URL = "https://op.example/token"
HOSTILE_URLS = [
    "http://op.example/token", "ftp://op.example/token", "file:///etc/passwd", "https:///token",
    "https://user:pw@op.example/token", "https://:pw@op.example/token", "https://@op.example/token",
    "https://op.example/token#frag", "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/",
    "http://localhost.evil.example/", "http://127.0.0.1.nip.io/", "javascript:alert(1)", "https://[::1/",
    "", None, 42, b"https://op.example/",
]


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_url_allowed_refuses_plain_http_off_loopback_user_info_fragments_and_non_strings(url: object) -> None:
    """Only https anywhere or http to loopback, with nothing that could smuggle credentials or a second host."""
    assert not url_allowed(url)


@pytest.mark.parametrize("url", ["https://op.example/token", "https://op.example:8443/t?x=1",
                                 "http://127.0.0.1:9000/t", "http://localhost/t", "http://[::1]/t"])
def test_url_allowed_admits_https_and_loopback_http(url: str) -> None:
    """The two safe forms pass."""
    assert url_allowed(url)


def _counting(answer: httpx2.Response) -> tuple[httpx2.MockTransport, list[httpx2.Request]]:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return answer

    return httpx2.MockTransport(handler), seen


@pytest.mark.parametrize("url", [u for u in HOSTILE_URLS if isinstance(u, str)])
async def test_both_callers_refuse_a_hostile_url_before_any_request(url: str) -> None:
    """The key set fetch and the token POST share the check: nothing is sent."""
    transport, seen = _counting(httpx2.Response(200, content=b"{}"))
    with pytest.raises(JwksUnavailable) as fetched:
        await HttpsFetcher(transport=transport)(url)
    with pytest.raises(LoginFailed) as posted:
        await HttpsPoster(transport=transport)(url, {"code": "c"})
    assert seen == []
    assert fetched.value.detail.startswith("key set fetch URL refused")
    assert posted.value.detail.startswith("token endpoint URL refused") and (not url or url not in posted.value.detail)


async def test_a_redirect_is_a_failure_not_a_second_request() -> None:
    """A 3xx to the metadata address is reported by status and never followed, for a GET and a POST."""
    transport, seen = _counting(httpx2.Response(307, headers={"location": "http://169.254.169.254/"}))
    for method in ("GET", "POST"):
        with pytest.raises(LoginFailed) as caught:
            await bounded_request(method, URL, what="token endpoint", error=LoginFailed, timeout_s=10,
                                  max_bytes=1024, form={"a": "b"} if method == "POST" else None, transport=transport)
        assert caught.value.detail == "token endpoint answered HTTP 307"
    assert [str(r.url) for r in seen] == [URL, URL]


async def test_the_body_is_capped_while_it_streams() -> None:
    """One byte over the cap fails; exactly the cap is the answer."""
    over = httpx2.MockTransport(lambda request: httpx2.Response(200, content=b"x" * 1025))
    with pytest.raises(JwksUnavailable) as caught:
        await bounded_request("GET", URL, what="key set fetch", error=JwksUnavailable, timeout_s=10,
                              max_bytes=1024, transport=over)
    assert "size cap" in caught.value.detail
    exact = httpx2.MockTransport(lambda request: httpx2.Response(200, content=b"x" * 1024))
    assert await bounded_request("GET", URL, what="x", error=JwksUnavailable, timeout_s=10, max_bytes=1024,
                                 transport=exact) == b"x" * 1024


async def test_the_token_post_sends_the_form_and_caps_the_answer_at_64_kib() -> None:
    """The code exchange is a form POST asking for JSON; a 64 KiB + 1 answer is refused."""
    transport, seen = _counting(httpx2.Response(200, content=b'{"id_token": "t"}'))
    assert await HttpsPoster(transport=transport)(URL, {"code": "c&d=e", "grant_type": "authorization_code"}) \
        == b'{"id_token": "t"}'
    [request] = seen
    assert request.method == "POST" and request.headers["accept"] == "application/json"
    assert parse_qs(request.content.decode()) == {"code": ["c&d=e"], "grant_type": ["authorization_code"]}
    big = httpx2.MockTransport(lambda request: httpx2.Response(200, content=b" " * (64 * 1024 + 1)))
    with pytest.raises(LoginFailed, match="login failed"):
        await HttpsPoster(transport=big)(URL, {})


async def test_a_hung_server_meets_the_deadline() -> None:
    """A server that never answers fails with 'timed out' (the deadline covers the whole exchange)."""
    async def hang(request: httpx2.Request) -> httpx2.Response:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    with pytest.raises(LoginFailed) as caught:
        await HttpsPoster(timeout_s=0.2, transport=httpx2.MockTransport(hang))(URL, {})
    assert caught.value.detail == "token endpoint timed out"


async def test_transport_errors_are_translated_to_the_callers_error() -> None:
    """No HTTP library exception escapes: a refused connection is the caller's error, named by type only."""
    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused to secret-host:443", request=request)

    with pytest.raises(JwksUnavailable) as caught:
        await HttpsFetcher(transport=httpx2.MockTransport(refuse))(URL)
    assert caught.value.detail == "key set fetch failed: ConnectError"
