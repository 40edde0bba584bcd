"""Host and Origin allow-lists."""

from __future__ import annotations

import pytest

from portcullis.errors import BadHost, ForbiddenOrigin
from portcullis.transport.origin_guard import OriginGuard

GUARD = OriginGuard(["127.0.0.1:*", "localhost:*", "[::1]:*", "gw.example:443"],
                    ["http://127.0.0.1:*", "https://console.example"])


@pytest.mark.parametrize("host", ["127.0.0.1:8080", "localhost:1", "LOCALHOST:9", "[::1]:8080", "127.0.0.1",
                                  "gw.example:443"])
def test_allowed_hosts_pass(host: str) -> None:
    """Listed hosts on any port (with ':*') or the exact port pass."""
    GUARD.check(host, None)


@pytest.mark.parametrize("host", [None, "", "evil.example", "evil.example:8080", "127.0.0.1.evil:80",
                                  "localhost.:80", "gw.example:444", "127.0.0.1:80:80", "127.0.0.1:x"])
def test_foreign_hosts_get_421(host: str | None) -> None:
    """Anything else is a misdirected request."""
    with pytest.raises(BadHost):
        GUARD.check(host, None)


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1.evil:80",
                                    "https://console.example.evil", "http://console.example"])
def test_foreign_origins_get_403(origin: str) -> None:
    """A present Origin outside the list is refused."""
    with pytest.raises(ForbiddenOrigin):
        GUARD.check("127.0.0.1:8080", origin)


def test_listed_origin_passes() -> None:
    """A listed Origin passes."""
    GUARD.check("127.0.0.1:8080", "http://127.0.0.1:5173")
    GUARD.check("127.0.0.1:8080", "https://console.example")
