"""The admin listener applies the front door's Host and Origin guards (DNS rebinding, foreign origins).

Attack classes (issue 10, item 14): DNS-rebinding Host names (a foreign name, a name that embeds
an allowed one, the allowed name with a trailing dot), alternative spellings of loopback (IPv6
long form, IPv4-mapped, decimal, hex, octal, short forms), malformed ports (empty, signed,
non-ASCII digits, out of range is allowed since the port is not what rebinding abuses),
userinfo tricks, missing, empty and repeated Host; Origin ``null``, foreign, scheme-swapped,
trailing dot or slash, suffix tricks, repeated. Every row runs against both listeners, so the two
guards cannot drift apart; the admin rows hit ``/metrics`` (read) and ``/approvals`` (the
approvers' API, which changes state).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.harness import GatewayProcess, copy_demo
from tests.security.conftest import exchange, status_of

# one worker runs the whole module, so its module-scoped gateway starts once (tests/conftest.py)
pytestmark = pytest.mark.xdist_group("security/test_admin_guards.py")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = copy_demo(tmp_path_factory.mktemp("guards") / "deployment")
    with GatewayProcess(root) as process:
        yield process


# "{port}" is replaced by the listener's port
HOSTS: list[tuple[str, str | None, bool]] = [
    # (case, Host header value or None for no Host line, allowed)
    ("loopback-v4", "127.0.0.1:{port}", True),
    ("localhost", "localhost:{port}", True),
    ("localhost-upper", "LOCALHOST:{port}", True),
    ("localhost-mixed", "LocalHost:{port}", True),
    ("loopback-v6", "[::1]:{port}", True),
    ("loopback-no-port", "127.0.0.1", True),
    ("localhost-no-port", "localhost", True),
    ("foreign-name", "evil.example", False),
    ("foreign-name-with-port", "evil.example:{port}", False),
    ("rebinding-service", "127.0.0.1.nip.io:{port}", False),
    ("allowed-as-subdomain", "localhost.evil.example:{port}", False),
    ("allowed-as-suffix", "evillocalhost:{port}", False),
    ("trailing-dot", "localhost.:{port}", False),
    ("trailing-dot-v4", "127.0.0.1.:{port}", False),
    ("dot-after-port", "localhost:{port}.", False),
    ("v6-long-form", "[0:0:0:0:0:0:0:1]:{port}", False),
    ("v6-unbracketed", "::1:{port}", False),
    ("v6-unbracketed-no-port", "::1", False),
    ("v4-mapped-v6", "[::ffff:127.0.0.1]:{port}", False),
    ("decimal-v4", "2130706433:{port}", False),
    ("hex-v4", "0x7f000001:{port}", False),
    ("octal-v4", "0177.0.0.1:{port}", False),
    ("short-v4", "127.1:{port}", False),
    ("other-loopback", "127.0.0.2:{port}", False),
    ("zero-address", "0.0.0.0:{port}", False),
    ("empty-port", "localhost:", False),
    ("signed-port", "localhost:+{port}", False),
    ("superscript-port", "localhost:\u00b2", False),
    ("letters-port", "localhost:http", False),
    ("userinfo", "evil.example@localhost:{port}", False),
    ("userinfo-reversed", "localhost:{port}@evil.example", False),
    ("path-in-host", "localhost:{port}/x", False),
    ("comma-list", "localhost:{port}, evil.example", False),
    ("empty", "", False),
    ("missing", None, False),
]

ORIGINS: list[tuple[str, str, int]] = [
    # (case, Origin header value, expected status on an allowed Host: 200 or 403)
    ("same-loopback", "http://127.0.0.1:{port}", 200),
    ("localhost", "http://localhost:{port}", 200),
    ("upper-case", "HTTP://LOCALHOST:{port}", 200),
    ("null", "null", 403),
    ("foreign", "http://evil.example", 403),
    ("foreign-same-port", "http://evil.example:{port}", 403),
    ("https-swap", "https://localhost:{port}", 403),
    ("trailing-slash", "http://localhost:{port}/", 403),
    ("trailing-dot", "http://localhost.:{port}", 403),
    ("suffix-trick", "http://localhost:{port}.evil.example", 403),
    ("userinfo-trick", "http://localhost:{port}@evil.example", 403),
    ("subdomain-trick", "http://localhost.evil.example:{port}", 403),
    ("file-scheme", "file://", 403),
    ("empty", "", 403),
    ("v6-long-form", "http://[0:0:0:0:0:0:0:1]:{port}", 403),
]


def request(path: str, host: str | None, *extra: str, method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [*extra, "Connection: close", "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode("latin-1")


def targets(gateway: GatewayProcess) -> list[tuple[int, str, str]]:
    """(port, path, method) of each guarded endpoint: the admin listener's and the front door's."""
    return [(gateway.admin_port, "/metrics", "GET"), (gateway.admin_port, "/approvals", "GET"),
            (gateway.admin_port, "/approvals/apr_0/approve", "POST"), (gateway.port, "/healthz", "GET")]


@pytest.mark.parametrize(("case", "host", "allowed"), HOSTS, ids=[c[0] for c in HOSTS])
def test_host_header_is_checked_on_every_listener(gateway: GatewayProcess, case: str, host: str | None,
                                                  allowed: bool) -> None:
    """A Host outside the allow-list gets 421 on the admin listener exactly as on the front door."""
    for port, path, method in targets(gateway):
        value = None if host is None else host.replace("{port}", str(port))
        status = status_of(exchange(port, request(path, value, method=method)))
        if allowed:
            assert status not in (421, 403, 400), (port, path, status)
        else:
            assert status == 421, (port, path, status)


@pytest.mark.parametrize(("case", "origin", "expected"), ORIGINS, ids=[c[0] for c in ORIGINS])
def test_origin_header_is_checked_on_every_listener(gateway: GatewayProcess, case: str, origin: str,
                                                    expected: int) -> None:
    """An Origin that is present and not allowed gets 403 on the admin listener as on the front door."""
    for port, path, method in targets(gateway):
        header = f"Origin: {origin.replace('{port}', str(port))}"
        status = status_of(exchange(port, request(path, f"127.0.0.1:{port}", header, method=method)))
        if expected == 403:
            assert status == 403, (port, path, status)
        else:
            assert status not in (421, 403, 400), (port, path, status)


@pytest.mark.parametrize(("case", "lines"), [
    ("two-hosts", ("Host: evil.example",)),
    ("two-hosts-same", ("Host: 127.0.0.1",)),
    ("two-origins", ("Origin: http://127.0.0.1", "Origin: http://evil.example")),
    ("two-authorizations", ("Authorization: Bearer a", "Authorization: Bearer b")),
])
def test_a_repeated_single_header_is_refused_on_the_admin_listener(gateway: GatewayProcess, case: str,
                                                                   lines: tuple[str, ...]) -> None:
    """A header that must appear once cannot be sent twice for the guard and the app to read differently."""
    response = exchange(gateway.admin_port, request("/metrics", "127.0.0.1", *lines))
    assert status_of(response) == 400


def test_the_admin_listener_bounds_header_count(gateway: GatewayProcess) -> None:
    """The admin listener runs the same HTTP-layer header bounds as the front door."""
    response = exchange(gateway.admin_port, request("/metrics", "127.0.0.1", *(f"X-H{i}: v" for i in range(200))))
    assert status_of(response) == 431
