"""One bounded HTTP exchange with an identity provider: the key set fetch (:mod:`.jwks`) and the console's
code exchange (:mod:`portcullis.console.oidc`) both go through :func:`bounded_request`.

1. The URL passes :func:`url_allowed` before any I/O: https anywhere, plain http only to a loopback host,
   no user info, no fragment.
2. One request, redirects never followed (a 3xx is a failed exchange, not a second request); TLS verified
   (the HTTP client's defaults).
3. One deadline (``anyio.fail_after``) over connecting, sending and reading the whole body.
4. Any status but 200 fails; the body is read as a stream and fails as soon as it passes ``max_bytes``.

Every failure raises the caller's own error type with an operator detail that starts with the caller's
name for the exchange (``key set fetch answered HTTP 302``); the HTTP library's exceptions never leave here.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import anyio
import httpx2

from portcullis.errors import PortcullisError


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback IP address (where plain-text transport stays on this machine)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_allowed(url: object) -> bool:
    """A string URL that is https, or plain http to a loopback host, without user info or fragment."""
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    if not host or parts.username is not None or parts.password is not None or parts.fragment:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(host))


async def bounded_request(method: str, url: str, *, what: str, error: type[PortcullisError], timeout_s: float,
                          max_bytes: int, form: dict[str, str] | None = None,
                          transport: httpx2.AsyncBaseTransport | None = None) -> bytes:
    """The body of a 200 answer to one ``method`` request (``form`` url-encoded), under the module's rules;
    otherwise ``error(detail=f"{what} …")``. ``transport``: an ``httpx2.MockTransport`` in tests."""
    if not url_allowed(url):
        raise error(detail=f"{what} URL refused: https, or http to loopback; no user info, no fragment")
    try:
        with anyio.fail_after(timeout_s):
            async with httpx2.AsyncClient(timeout=timeout_s, follow_redirects=False, transport=transport) as client:
                async with client.stream(method, url, data=form, headers={"accept": "application/json"}) as response:
                    if response.status_code != 200:
                        raise error(detail=f"{what} answered HTTP {response.status_code}")
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > max_bytes:
                            raise error(detail=f"{what} answer larger than the size cap ({max_bytes} bytes)")
                    return bytes(body)
    except TimeoutError:
        raise error(detail=f"{what} timed out") from None
    except httpx2.HTTPError as exc:
        raise error(detail=f"{what} failed: {type(exc).__name__}") from None
