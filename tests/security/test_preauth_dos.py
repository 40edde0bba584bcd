"""Pre-authentication denial of service, against a real gateway process and real sockets.

Attack classes (issue 10, item 3): too many header lines, too many header bytes (one huge line,
many medium ones, a huge target or name, an unterminated or whitespace-padded line, chunked
trailers), repeated headers that used to be joined quadratically, a repeated single-valued
header, slow headers (slowloris), a slow body (R.U.D.Y.), and many connections from one address.
Each must be refused at the HTTP layer with a precise status, and every timing assertion here
only bounds from above with a wide margin (the bounds under test are one second; the tests wait
up to twenty).
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator

import httpx2
import pytest

from portcullis.transport.http_guard import ClientConnections, HttpLimits, client_key
from tests.e2e.harness import GatewayProcess
from tests.security.conftest import billing_demo_with, exchange, read_until_closed, status_of

MAX_HEADERS = 100  # the defaults the bounded gateway runs with
MAX_HEADER_BYTES = 16_384
PATIENCE_S = 20.0  # far above the one-second bounds: only a server that never closes fails


def head(*lines: str, target: str = "/healthz", method: str = "GET") -> bytes:
    return (f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" +
            "".join(f"{line}\r\n" for line in lines) + "\r\n").encode("latin-1")


# counted bytes of head(): target + "host" + "127.0.0.1" + "connection" + "close"
_BASE_COUNTED = len("/healthz") + len("host127.0.0.1") + len("connectionclose")

HEAD_CASES: list[tuple[str, bytes, int]] = [
    # (case, request, expected status)
    ("count-at-limit", head(*(f"X-H{i}: v" for i in range(MAX_HEADERS - 2))), 200),
    ("count-one-over", head(*(f"X-H{i}: v" for i in range(MAX_HEADERS - 1))), 431),
    ("count-1000", head(*(f"X-H{i}: v" for i in range(1000))), 431),
    ("count-20000-tiny", head(*("a:b" for _ in range(20_000))), 431),
    ("repeats-at-count-limit", head(*("X-Dup: v" for _ in range(MAX_HEADERS - 2))), 200),
    ("repeats-over-count-limit", head(*("X-Dup: v" for _ in range(5000))), 431),
    ("bytes-at-limit", head("X-Big: " + "a" * (MAX_HEADER_BYTES - _BASE_COUNTED - len("x-big"))), 200),
    ("bytes-one-over", head("X-Big: " + "a" * (MAX_HEADER_BYTES - _BASE_COUNTED - len("x-big") + 1)), 431),
    ("one-64k-value", head("X-Big: " + "a" * 65_536), 431),
    ("one-1m-value", head("X-Big: " + "a" * 1_048_576), 431),
    ("many-medium-lines", head(*(f"X-M{i}: " + "m" * 500 for i in range(40))), 431),
    ("huge-target", head(target="/healthz?" + "q" * 17_000), 431),
    ("huge-name", head("X-" + "n" * 17_000 + ": v"), 431),
    ("whitespace-padded-value", head("X-Pad:" + " " * 20_000 + "v"), 431),
    ("huge-authorization", head("Authorization: Bearer " + "e" * 20_000), 431),
    ("huge-cookie-repeats", head(*("Cookie: c=" + "k" * 1000 for _ in range(20))), 431),
    ("duplicate-host", head("Host: evil.example"), 400),
    ("duplicate-host-other-case", head("HOST: 127.0.0.1"), 400),
    ("duplicate-authorization", head("Authorization: Bearer a", "authorization: Bearer b",
                                     target="/mcp", method="POST"), 400),
]


@pytest.mark.parametrize(("case", "request_bytes", "status"), HEAD_CASES, ids=[c[0] for c in HEAD_CASES])
def test_request_heads_past_the_bounds_are_refused_before_the_app(bounded_gateway: GatewayProcess, case: str,
                                                                  request_bytes: bytes, status: int) -> None:
    """Each head gets its exact status: 431 past the count or byte bound, 400 for a repeated single header."""
    response = exchange(bounded_gateway.port, request_bytes)
    assert status_of(response) == status, response[:300]
    if status == 431:
        assert b"connection: close" in response.lower()


def test_an_unterminated_header_line_is_cut_off_at_the_bound(bounded_gateway: GatewayProcess) -> None:
    """A header line sent in pieces that never ends gets 431 once the head passes the bound, not a buffer."""
    with socket.create_connection(("127.0.0.1", bounded_gateway.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Endless: ")
        sent = 0
        try:
            while sent < 256 * 1024:
                sock.sendall(b"z" * 1024)
                sent += 1024
        except OSError:  # the server answered and closed while the client was still sending
            pass
        response = read_until_closed(sock, timeout=PATIENCE_S)
    assert status_of(response) == 431


def test_oversized_chunked_trailers_are_refused(bounded_gateway: GatewayProcess) -> None:
    """Trailers after a chunked body count against the same header bound."""
    request = (b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
               b"Content-Type: application/json\r\nConnection: close\r\n\r\n2\r\n{}\r\n0\r\n" +
               b"".join(b"X-T%d: " % i + b"t" * 200 + b"\r\n" for i in range(120)) + b"\r\n")
    response = exchange(bounded_gateway.port, request)
    # the app may already have answered 401 (no credentials) before the trailers; either way the
    # connection is closed, and a 431 is what a request that got no answer yet receives
    assert status_of(response) in (401, 431), response[:300]


def test_the_header_bound_is_counted_in_metrics(bounded_gateway: GatewayProcess) -> None:
    """A 431 is counted under portcullis_connections_refused_total{reason="header_limit"}."""
    exchange(bounded_gateway.port, head(*(f"X-H{i}: v" for i in range(500))))
    metrics = httpx2.get(f"{bounded_gateway.admin_base}/metrics", timeout=10).text
    found = re.search(r'portcullis_connections_refused_total\{listener="mcp",reason="header_limit"\} (\S+)', metrics)
    assert found is not None and float(found.group(1)) >= 1


# --------------------------------------------------------------------------- slow clients


def trickle(sock: socket.socket, pieces: Iterator[bytes], every_s: float = 0.25) -> bytes:
    """Send one piece every ``every_s`` until the server closes the connection; what it sent back."""
    deadline = time.monotonic() + PATIENCE_S
    received: list[bytes] = []
    for piece in pieces:
        if time.monotonic() > deadline:
            raise TimeoutError("the server kept a trickling connection open")
        try:
            sock.sendall(piece)
        except OSError:
            break
        sock.settimeout(every_s)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        received.append(chunk)
    try:
        received.append(read_until_closed(sock, timeout=PATIENCE_S))
    except OSError:
        pass
    return b"".join(received)


def forever(piece: bytes) -> Iterator[bytes]:
    while True:
        yield piece


def test_a_slowloris_head_gets_408_and_is_closed(bounded_gateway: GatewayProcess) -> None:
    """A client that keeps sending header lines, slowly, is cut off by the header-read timeout."""
    with socket.create_connection(("127.0.0.1", bounded_gateway.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        response = trickle(sock, forever(b"X-a: b\r\n"))
    assert status_of(response) == 408


def test_a_head_sent_one_byte_at_a_time_is_closed(bounded_gateway: GatewayProcess) -> None:
    """Byte-by-byte header trickling, even of a valid request, cannot outlast the header-read timeout."""
    request = head(*(f"X-H{i}: v" for i in range(90)))
    with socket.create_connection(("127.0.0.1", bounded_gateway.port), timeout=10) as sock:
        response = trickle(sock, (request[i:i + 1] for i in range(len(request))), every_s=0.05)
    assert status_of(response) == 408


def test_a_silent_connection_is_closed(bounded_gateway: GatewayProcess) -> None:
    """A connection that never sends a byte is closed, without a response."""
    with socket.create_connection(("127.0.0.1", bounded_gateway.port), timeout=10) as sock:
        assert read_until_closed(sock, timeout=PATIENCE_S) == b""


def test_an_idle_keep_alive_connection_that_starts_trickling_is_closed(bounded_gateway: GatewayProcess) -> None:
    """After a response, the next head is timed too: trickled blank lines do not keep the connection."""
    with socket.create_connection(("127.0.0.1", bounded_gateway.port), timeout=10) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        response = trickle(sock, forever(b"\r\n"))
    assert status_of(response) == 200  # the first answer, then the server closed the connection


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_slow_body_gets_408_and_is_closed(bounded_gateway: GatewayProcess, framing: str) -> None:
    """An authenticated client that trickles its body is cut off by the body-read timeout."""
    length = b"Content-Length: 100000\r\n" if framing == "content-length" else b"Transfer-Encoding: chunked\r\n"
    piece = b"a" if framing == "content-length" else b"1\r\na\r\n"
    request_head = (b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" + length +
                    f"Authorization: Bearer {bounded_gateway.token()}\r\n\r\n".encode())
    with socket.create_connection(("127.0.0.1", bounded_gateway.port), timeout=10) as sock:
        sock.sendall(request_head)
        response = trickle(sock, forever(piece))
    assert status_of(response) == 408


def test_a_slow_body_after_an_early_answer_still_closes(bounded_gateway: GatewayProcess) -> None:
    """Without credentials the gateway answers 401 before the body; a body that keeps trickling is then cut off."""
    request_head = (b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 100000\r\n\r\n")
    with socket.create_connection(("127.0.0.1", bounded_gateway.port), timeout=10) as sock:
        sock.sendall(request_head)
        response = trickle(sock, forever(b"a"))
    assert status_of(response) == 401


def test_slow_clients_are_counted_in_metrics(bounded_gateway: GatewayProcess) -> None:
    """Header and body timeouts are counted by reason."""
    with socket.create_connection(("127.0.0.1", bounded_gateway.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        trickle(sock, forever(b"X-a: b\r\n"))
    metrics = httpx2.get(f"{bounded_gateway.admin_base}/metrics", timeout=10).text
    found = re.search(r'portcullis_connections_refused_total\{listener="mcp",reason="header_timeout"\} (\S+)',
                      metrics)
    assert found is not None and float(found.group(1)) >= 1


# --------------------------------------------------------------------------- connections per client


# one worker runs the whole module, so its module-scoped gateway starts once (tests/conftest.py)
pytestmark = pytest.mark.xdist_group("security/test_preauth_dos.py")


@pytest.fixture(scope="module")
def capped_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """The demo gateway allowing four connections per client address, with a long header timeout."""
    root = billing_demo_with(tmp_path_factory.mktemp("capped") / "deployment",
                     limits={"max_connections_per_client": 4, "header_timeout_s": 60.0})
    with GatewayProcess(root) as gateway:
        yield gateway


def test_connections_past_the_per_client_cap_get_503(capped_gateway: GatewayProcess) -> None:
    """A fifth open connection from one address is refused with 503; closing one makes room again."""
    held = [socket.create_connection(("127.0.0.1", capped_gateway.port), timeout=10) for _ in range(4)]
    try:
        refused = exchange(capped_gateway.port, head(), timeout=PATIENCE_S)
        assert status_of(refused) == 503, refused[:200]
        assert b"Too many connections" in refused
        held.pop().close()
        deadline = time.monotonic() + PATIENCE_S
        while True:  # the server releases the slot when it sees the close: poll until it has
            answer = exchange(capped_gateway.port, head(), timeout=PATIENCE_S)
            if status_of(answer) == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert status_of(answer) == 200
    finally:
        for sock in held:
            sock.close()
    metrics = httpx2.get(f"{capped_gateway.admin_base}/metrics", timeout=10).text
    found = re.search(r'portcullis_connections_refused_total\{listener="mcp",reason="per_client_cap"\} (\S+)',
                      metrics)
    assert found is not None and float(found.group(1)) >= 1


# --------------------------------------------------------------------------- units


@pytest.mark.parametrize(("peer", "key"), [
    (("127.0.0.1", 5000), "127.0.0.1"),
    (("10.1.2.3", 1), "10.1.2.3"),
    (("2001:db8::1", 1, 0, 0), "2001:db8::/64"),
    (("2001:db8::ffff:1", 1, 0, 0), "2001:db8::/64"),  # same /64: one client
    (("2001:db8:0:1::1", 1, 0, 0), "2001:db8:0:1::/64"),
    (("::ffff:192.0.2.7", 1, 0, 0), "192.0.2.7"),  # IPv4-mapped counts as the IPv4 address
    (("fe80::1%eth0", 1, 0, 2), "fe80::/64"),
    (("::1", 1, 0, 0), "::/64"),
    ("/run/portcullis.sock", None),
    (None, None),
])
def test_connections_count_against_the_client_address(peer: object, key: str | None) -> None:
    """IPv4 clients count per address, IPv6 per /64 (one host holds a whole /64), Unix sockets not at all."""
    assert client_key(peer) == key


def test_the_per_client_map_holds_only_open_connections() -> None:
    """Admitting and releasing leaves no entry behind, so the map is bounded by open connections."""
    clients = ClientConnections(2)
    assert clients.admit("a") and clients.admit("a") and not clients.admit("a")
    assert clients.admit("b")
    clients.release("a")
    assert clients.admit("a")
    for key in ("a", "a", "b"):
        clients.release(key)
    assert clients.open_count("a") == 0 and clients.open_count("b") == 0 and clients._open == {}
    assert clients.stats()["per_client_cap"] == 1


def test_the_raw_head_allowance_covers_line_framing() -> None:
    """The raw-byte bound of a head is the counted bound plus four bytes a line and a request line."""
    limits = HttpLimits(max_header_count=10, max_header_bytes=1000)
    assert limits.max_head_raw_bytes == 1000 + 4 * 11 + 64
