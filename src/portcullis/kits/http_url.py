"""URLs for the HTTP kit: parsed once by a WHATWG URL parser (``ada-url``), matched against rules.

A URL means only what the WHATWG parser says it means: the parser turns every host encoding a
browser accepts (``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1``, fullwidth digits, IDNA,
``[::ffff:127.0.0.1]``) into one canonical host, resolves dot segments (``%2e%2e`` too) and treats
``\\`` as ``/``. Everything after that — the rule match, the address check, the request line, the
``Host`` header, TLS's server name — reads that one result, never the raw text.

:func:`parse_target` refuses (``url_invalid``) what the parser refuses, a scheme other than
``http``/``https``, credentials (``user:pass@``, which only serve to confuse a reader), an empty
host and a URL over :data:`MAX_URL_CHARS`. The fragment is dropped (it is never sent).

A :class:`UrlRule` allows one scheme, a host (exact, ``*.suffix`` for any subdomain, or ``*`` for
any host — the address rules still apply), one port (the scheme's default unless given) and a
path prefix matched at a segment boundary (``/api/`` allows what is below ``/api/``; ``/api``
allows ``/api`` itself too; neither allows ``/apix``). Under a prefix other than ``/``, a path holding an
encoded ``/``, ``\\``, ``.`` or NUL is refused: a server that decodes them would leave the prefix.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ada_url import HostType, join_url, parse_url

from portcullis.kits.http_errors import HttpKitError, HttpKitReason
from portcullis.kits.net_addresses import IPAddress

MAX_URL_CHARS = 8192
DEFAULT_PORTS = {"http": 80, "https": 443}
_ENCODED_ESCAPES = re.compile(r"%(?:2f|5c|2e|00)", re.IGNORECASE)
_ATTRIBUTES = ("href", "protocol", "username", "password", "hostname", "port", "pathname", "search", "host_type")


@dataclass(frozen=True, slots=True)
class Target:
    """One parsed URL: what the kit connects to and what it sends."""

    scheme: str  # "http" | "https"
    host: str  # canonical, lower case, IPv6 without brackets, no trailing dot
    literal: IPAddress | None  # the address when the host is an IP literal (no DNS then)
    port: int
    path: str  # percent-encoded, dot segments resolved
    query: str  # "" or "?…"
    href: str  # the canonical URL without its fragment

    @property
    def request_target(self) -> str:
        return self.path + self.query

    @property
    def authority(self) -> str:
        """The ``Host`` header's value."""
        host = f"[{self.host}]" if isinstance(self.literal, ipaddress.IPv6Address) else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


def parse_target(url: str, base: str | None = None) -> Target:
    """``url`` (resolved against ``base`` for a redirect's ``Location``) as a :class:`Target`."""
    if not isinstance(url, str) or len(url) > MAX_URL_CHARS:
        raise HttpKitError(HttpKitReason.URL_INVALID)
    try:
        joined = url if base is None else join_url(base, url)  # a redirect's Location, by the same parser
        parts = parse_url(joined, attributes=_ATTRIBUTES)
    except ValueError:
        raise HttpKitError(HttpKitReason.URL_INVALID) from None
    scheme = parts["protocol"].removesuffix(":")
    if scheme not in DEFAULT_PORTS or parts["username"] or parts["password"] or not parts["hostname"]:
        raise HttpKitError(HttpKitReason.URL_INVALID)
    host, literal = _host(parts["hostname"], parts["host_type"])
    port = int(parts["port"]) if parts["port"] else DEFAULT_PORTS[scheme]
    href = parts["href"].split("#", 1)[0]
    return Target(scheme, host, literal, port, parts["pathname"] or "/", parts["search"], href)


def _host(hostname: str, host_type: HostType) -> tuple[str, IPAddress | None]:
    if host_type == HostType.IPV6:
        address: IPAddress = ipaddress.IPv6Address(hostname.strip("[]"))
        return str(address), address
    if host_type == HostType.IPV4:
        address = ipaddress.IPv4Address(hostname)
        return str(address), address
    host = hostname.removesuffix(".")  # "example.com." is example.com: one trailing dot, no empty label
    if not host or len(host) > 253 or "" in host.split("."):
        raise HttpKitError(HttpKitReason.URL_INVALID)
    return host, None


@dataclass(frozen=True, slots=True)
class UrlRule:
    """Allow ``scheme://host:port/path_prefix…``; see the module docstring for the matching."""

    scheme: str
    host: str
    port: int | None = None
    path_prefix: str = "/"

    def __post_init__(self) -> None:
        if self.scheme not in DEFAULT_PORTS:
            raise ValueError("a URL rule's scheme must be http or https")
        if self.port is not None and not 0 < self.port < 65536:
            raise ValueError("a URL rule's port must be 1-65535")
        if not self.path_prefix.startswith("/"):
            raise ValueError("a URL rule's path prefix must start with /")
        object.__setattr__(self, "host", _rule_host(self.host))
        prefix = parse_target(f"http://h{self.path_prefix}").path
        if prefix != self.path_prefix or "?" in self.path_prefix:
            raise ValueError("a URL rule's path prefix must be a canonical path")

    def matches(self, target: Target) -> bool:
        port = self.port if self.port is not None else DEFAULT_PORTS[self.scheme]
        return (target.scheme == self.scheme and target.port == port and self._host_matches(target)
                and self._path_matches(target.path))

    def _host_matches(self, target: Target) -> bool:
        if self.host == "*":
            return True
        if self.host.startswith("*."):
            return target.literal is None and target.host.endswith(self.host[1:])
        return target.host == self.host

    def _path_matches(self, path: str) -> bool:
        prefix = self.path_prefix
        if prefix == "/":
            return True
        if _ENCODED_ESCAPES.search(path):
            return False
        if prefix.endswith("/"):  # "/api/" allows what is below /api/, not /api itself
            return path.startswith(prefix)
        return path == prefix or path.startswith(prefix + "/")  # "/api": /api and below, never /apix


def _rule_host(host: str) -> str:
    """The canonical form of a rule's host, by the same parser; raises ``ValueError``."""
    if host == "*":
        return host
    wildcard = host.startswith("*.")
    name = host[2:] if wildcard else host
    try:
        canonical = parse_target(f"http://{name}/")
    except HttpKitError:
        raise ValueError("a URL rule's host is not a valid host") from None
    if canonical.path != "/" or canonical.query or canonical.port != 80 or "*" in name:
        raise ValueError("a URL rule's host is not a valid host")
    if wildcard and canonical.literal is not None:
        raise ValueError("a wildcard URL rule needs a domain name")
    return f"*.{canonical.host}" if wildcard else canonical.host


def first_match(rules: tuple[UrlRule, ...], target: Target) -> UrlRule:
    """The first rule that allows ``target``; raises ``url_not_allowed``."""
    for rule in rules:
        if rule.matches(target):
            return rule
    raise HttpKitError(HttpKitReason.URL_NOT_ALLOWED)
