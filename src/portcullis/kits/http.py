"""The HTTP kit: an outbound GET / POST for service tools that cannot be turned against the network
it runs in (SSRF).

Each hop of a fetch takes these steps, in this order; any refusal ends the fetch with an
:class:`~portcullis.kits.http_errors.HttpKitError` before a connection is made:

1. parse the URL with the WHATWG parser (:mod:`.http_url`): one canonical scheme, host, port and
   path, whatever encoding the text used;
2. match it against the configured :class:`~portcullis.kits.http_url.UrlRule` list (scheme,
   host, port, path prefix) — an empty list is a configuration error, never "allow all";
3. resolve the host once (:mod:`.http_resolve`; an IP literal is not resolved) and check *every*
   address against the address rules (:mod:`.net_addresses`), the operator's allow and deny lists
   included;
4. connect to one of exactly those addresses (:mod:`.http_exchange`), TLS-verified against the
   URL's host for ``https``, and send a request whose headers the kit controls (:mod:`.http_headers`);
5. read the response with the relay's strict HTTP/1.1 reader, within the size limit;
6. on a redirect (301, 302, 303, 307, 308 with a ``Location``), start again at step 1 with the new
   URL — at most ``max_redirects`` times, never from ``https`` to ``http``, credentials dropped
   on a change of origin; 303 (and 301/302 after a POST) continue as a GET without a body;
7. refuse a compressed body or a content type that is not allowed.

The whole fetch, redirects and lookups included, is bounded by ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field

from portcullis.kits import http_headers as hh
from portcullis.kits.http_errors import HttpKitError, HttpKitReason
from portcullis.kits.http_exchange import Exchanged, exchange
from portcullis.kits.http_resolve import Resolver, SystemResolver, checked_addresses
from portcullis.kits.http_url import Target, UrlRule, first_match, parse_target
from portcullis.kits.net_addresses import AddressPolicy
from portcullis.text import escape_invisible

log = logging.getLogger("portcullis.kits.http")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True, slots=True)
class HttpKitConfig:
    """What a tool may fetch, and within which limits (validated on construction)."""

    rules: tuple[UrlRule, ...]
    addresses: AddressPolicy = field(default_factory=AddressPolicy)
    caller_headers: frozenset[str] = hh.DEFAULT_CALLER_HEADERS
    content_types: frozenset[str] = frozenset({"application/json", "text/plain"})
    max_response_bytes: int = 1024 * 1024
    max_redirects: int = 5
    timeout_s: float = 15.0
    connect_timeout_s: float = 5.0
    ca_file: str | None = None  # trust these CAs for https instead of the system's
    user_agent: str = "portcullis-http-kit"

    def __post_init__(self) -> None:
        if not self.rules:
            raise ValueError("an HTTP kit needs at least one URL rule")
        if self.max_response_bytes <= 0 or self.max_redirects < 0 or self.timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ValueError("HTTP kit limits must be positive")
        object.__setattr__(self, "caller_headers", hh.allowed_names(self.caller_headers))
        object.__setattr__(self, "content_types", hh.allowed_media_types(self.content_types))
        if not hh.valid_value(self.user_agent):
            raise ValueError("the HTTP kit's user agent must be visible ASCII")


@dataclass(frozen=True, slots=True)
class HttpKitResponse:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    url: str  # the URL that answered, after redirects (canonical, no fragment)

    @property
    def content_type(self) -> str | None:
        return hh.media_type(self.headers)

    def text(self) -> str:
        """The body decoded by its charset (UTF-8 when absent or unknown), never failing."""
        try:
            return self.body.decode(hh.charset(self.headers) or "utf-8", errors="replace")
        except LookupError:
            return self.body.decode("utf-8", errors="replace")


class HttpKit:
    """Fetch allow-listed URLs; see the module docstring for the steps."""

    def __init__(self, config: HttpKitConfig, *, resolver: Resolver | None = None) -> None:
        self.config = config
        self._resolver = resolver or SystemResolver()
        self._tls: ssl.SSLContext | None = None  # the system's CAs: loaded at the first https hop (slow)
        if config.ca_file is not None:
            try:
                self._tls = ssl.create_default_context(cafile=config.ca_file)
            except (OSError, ssl.SSLError):
                raise ValueError("the HTTP kit's ca_file could not be loaded") from None

    async def get(self, url: str, headers: Mapping[str, str] | None = None) -> HttpKitResponse:
        return await self.fetch("GET", url, headers=headers)

    async def post(self, url: str, body: bytes, headers: Mapping[str, str] | None = None) -> HttpKitResponse:
        return await self.fetch("POST", url, body=body, headers=headers)

    async def fetch(self, method: str, url: str, *, body: bytes = b"",
                    headers: Mapping[str, str] | None = None) -> HttpKitResponse:
        if method not in ("GET", "POST") or not isinstance(body, bytes):
            raise ValueError("the HTTP kit sends GET or POST with a bytes body")
        try:
            async with asyncio.timeout(self.config.timeout_s):
                return await self._follow(method, url, body, hh.caller_headers(headers, self.config.caller_headers))
        except TimeoutError:
            error = HttpKitError(HttpKitReason.TIMEOUT)
        except HttpKitError as exc:
            error = exc
        log.info("http kit refused a fetch: %s%s", error.reason.value,
                 f" ({error.address_reason.value})" if error.address_reason else "")
        raise error

    async def _follow(self, method: str, url: str, body: bytes,
                      headers: tuple[tuple[str, str], ...]) -> HttpKitResponse:
        target = parse_target(url)
        for hop in range(self.config.max_redirects + 1):
            answer = await self._hop(method, target, body, headers)
            location = answer.headers.get("location")
            if answer.status not in _REDIRECTS or location is None:
                hh.check_response(answer.headers, answer.body, self.config.content_types)
                return HttpKitResponse(answer.status, answer.headers, answer.body, target.href)
            if hop == self.config.max_redirects:
                raise HttpKitError(HttpKitReason.TOO_MANY_REDIRECTS)
            following = _redirect(target, location)
            log.debug("http kit follows a redirect to %s", escape_invisible(following.host))
            if following.origin != target.origin:
                headers = hh.without_sensitive(headers)
            if answer.status == 303 or (answer.status in (301, 302) and method == "POST"):
                method, body = "GET", b""
                headers = tuple((name, value) for name, value in headers if name != "content-type")
            target = following
        raise HttpKitError(HttpKitReason.TOO_MANY_REDIRECTS)  # unreachable: the loop returns or raises

    async def _hop(self, method: str, target: Target, body: bytes, headers: tuple[tuple[str, str], ...]) -> Exchanged:
        first_match(self.config.rules, target)
        found = [target.literal] if target.literal is not None else await self._resolver.resolve(target.host,
                                                                                                    target.port)
        addresses = checked_addresses(found, self.config.addresses)
        return await exchange(addresses, target.port, self._request(method, target, body, headers),
                              tls=self._tls_context() if target.scheme == "https" else None, server_name=target.host,
                              connect_timeout_s=self.config.connect_timeout_s,
                              max_body_bytes=self.config.max_response_bytes)

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:  # CERT_REQUIRED and check_hostname: verification is never off
            self._tls = ssl.create_default_context(cafile=self.config.ca_file)
        return self._tls

    def _request(self, method: str, target: Target, body: bytes, headers: tuple[tuple[str, str], ...]) -> bytes:
        lines = [f"{method} {target.request_target} HTTP/1.1", f"Host: {target.authority}", "Connection: close",
                 "Accept-Encoding: identity", f"User-Agent: {self.config.user_agent}"]
        if method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        lines.extend(f"{name}: {value}" for name, value in headers)
        try:  # every part is ASCII by construction (the parser percent-encodes); a bug fails closed
            return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body
        except UnicodeEncodeError:
            raise HttpKitError(HttpKitReason.URL_INVALID) from None


def _redirect(current: Target, location: str) -> Target:
    """The next hop's target; refuses a malformed ``Location`` and any https -> http downgrade."""
    try:
        following = parse_target(location, base=current.href)
    except HttpKitError:
        raise HttpKitError(HttpKitReason.REDIRECT_REFUSED) from None
    if current.scheme == "https" and following.scheme == "http":
        raise HttpKitError(HttpKitReason.REDIRECT_REFUSED)
    return following
