"""Host and Origin allow-lists (DNS-rebinding protection).

Patterns are exact ``host:port`` / ``scheme://host:port`` strings, or end in ``:*`` to allow any
port of that host. A Host that matches nothing gets 421; an Origin that is present and matches
nothing gets 403 (browsers always send one on cross-origin requests, so its absence means a
non-browser client).
"""

from __future__ import annotations

from collections.abc import Iterable

from portcullis.errors import BadHost, ForbiddenOrigin


class _Matcher:
    def __init__(self, patterns: Iterable[str]) -> None:
        exact, any_port = set(), set()
        for pattern in patterns:
            pattern = pattern.lower()
            if pattern.endswith(":*"):
                any_port.add(pattern[:-2])
            else:
                exact.add(pattern)
        self._exact, self._any_port = frozenset(exact), frozenset(any_port)

    def matches(self, value: str) -> bool:
        value = value.lower()
        if value in self._exact:
            return True
        base, sep, port = value.rpartition(":")
        if sep and port.isascii() and port.isdigit() and not base.endswith(":") and base in self._any_port:
            return True
        return value in self._any_port  # no port at all: the default port of that host


class OriginGuard:
    def __init__(self, allowed_hosts: Iterable[str], allowed_origins: Iterable[str]) -> None:
        self._hosts = _Matcher(allowed_hosts)
        self._origins = _Matcher(allowed_origins)

    def check(self, host: str | None, origin: str | None) -> None:
        if not host or not self._hosts.matches(host):
            raise BadHost(detail="host header not allowed")
        if origin is not None and not self._origins.matches(origin):
            raise ForbiddenOrigin(detail="origin header not allowed")
