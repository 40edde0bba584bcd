"""Real sockets for the HTTP kit's tests: a loopback canary that counts every connection it is
offered, and a small HTTP/1.1 server on loopback that answers each path with the bytes a test gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from hypothesis import strategies as st

from tests.ports import free_port


class LoopbackCanary:
    """Listeners on ``127.0.0.1:port`` and ``[::1]:port`` that accept, record and close every connection,
    from a thread of their own. Loopback only, so nothing from outside the machine can reach them and
    make a test fail; a connection to another local address (127.1.2.3) is refused by the kernel instead,
    which the tables catch by asserting the exact refusal reason.
    """

    def __init__(self, port: int | None = None, *, ipv4: bool = True) -> None:
        self.port = port if port is not None else free_port()
        self.seen: list[tuple[str, int]] = []
        self._sockets: list[socket.socket] = []
        if ipv4:
            self._sockets.append(self._listen(socket.AF_INET, "127.0.0.1"))
        self._sockets.append(self._listen(socket.AF_INET6, "::1"))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loopback-canary", daemon=True)
        self._thread.start()

    def _listen(self, family: socket.AddressFamily, host: str) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, self.port))
        sock.listen(128)
        sock.setblocking(False)
        return sock

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            for sock in self._sockets:
                selector.register(sock, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.05):
                    self._accept(key.fileobj)  # type: ignore[arg-type]

    def _accept(self, sock: socket.socket) -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                conn, peer = sock.accept()
                self.seen.append(peer[:2])
                conn.close()

    def close(self) -> list[tuple[str, int]]:
        """Stop, take what still waits in the accept queues, and return every connection seen."""
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(timeout=5)
            for sock in self._sockets:
                self._accept(sock)
                sock.close()
        return self.seen


@contextlib.contextmanager
def canary(port: int | None = None, *, ipv4: bool = True) -> Iterator[LoopbackCanary]:
    listener = LoopbackCanary(port, ipv4=ipv4)
    try:
        yield listener
    finally:
        listener.close()


def response(body: bytes = b"hello", *, status: bytes = b"200 OK", content_type: bytes | None = b"text/plain",
             extra: bytes = b"") -> bytes:
    """A well-formed response with a Content-Length."""
    head = b"HTTP/1.1 " + status + b"\r\n"
    if content_type is not None:
        head += b"Content-Type: " + content_type + b"\r\n"
    return head + b"Content-Length: %d\r\n" % len(body) + extra + b"\r\n" + body


def redirect(location: str, status: bytes = b"302 Found") -> bytes:
    return response(b"", status=status, content_type=None, extra=b"Location: " + location.encode() + b"\r\n")


# a route answers with bytes, or with a callable of the raw request that returns them, or None: never answer
Route = bytes | Callable[[bytes], bytes] | None


@dataclass
class KitServer:
    """An HTTP/1.1 server on 127.0.0.1 that answers by path and keeps every raw request head."""

    routes: dict[str, Route]
    port: int = 0
    requests: list[bytes] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)  # type: ignore[arg-type]
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            raw = head + (await reader.readexactly(length) if length else b"")
            self.requests.append(raw)
            path = head.split(b" ", 2)[1].decode()
            route = self.routes.get(path, response(b"not here", status=b"404 Not Found"))
            if route is None:
                await asyncio.sleep(3600)
                return
            writer.write(route(raw) if callable(route) else route)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serve(routes: dict[str, Route], *, port: int | None = None,
                tls: ssl.SSLContext | None = None) -> AsyncIterator[KitServer]:
    server = KitServer(routes, port if port is not None else free_port())
    listener = await asyncio.start_server(server.handle, "127.0.0.1", server.port, ssl=tls)
    try:
        yield server
    finally:
        listener.close()
        for task in server.tasks:
            task.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await listener.wait_closed()


# ---------------------------------------------------------------- generated spellings of an IPv4 address

_RADIX = st.sampled_from(["dec", "hex", "HEX", "oct"])


def _part(value: int, radix: str, zeros: int) -> str:
    if radix == "hex":
        return "0x" + "0" * zeros + format(value, "x")
    if radix == "HEX":
        return "0X" + "0" * zeros + format(value, "X")
    if radix == "oct":
        return "0" + "0" * zeros + format(value, "o")
    return str(value)


def ipv4_spelling(value: int) -> st.SearchStrategy[tuple[int, str]]:
    """``value`` and one of its WHATWG host spellings: 1 to 4 parts, each decimal, hex or octal with
    leading zeros, an optional trailing dot — or an IPv4-mapped IPv6 literal."""
    @st.composite
    def spell(draw: st.DrawFn) -> tuple[int, str]:
        raw = value.to_bytes(4, "big")
        if draw(st.booleans()) and draw(st.booleans()):
            dotted = ".".join(str(b) for b in raw)
            return value, draw(st.sampled_from([f"[::ffff:{dotted}]", f"[::ffff:{value >> 16:x}:{value & 0xFFFF:x}]",
                                                f"[0:0:0:0:0:ffff:{dotted}]"]))
        count = draw(st.integers(1, 4))
        numbers = [*raw[:count - 1], int.from_bytes(raw[count - 1:], "big")]
        text = ".".join(_part(n, draw(_RADIX), draw(st.integers(0, 2))) for n in numbers)
        return value, text + draw(st.sampled_from(["", "."]))
    return spell()
