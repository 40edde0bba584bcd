"""Pre-authentication bounds at the HTTP layer, before the ASGI app sees a request.

uvicorn's httptools protocol reads request heads of any size and count, lets a client take as
long as it likes to send them and its body, and accepts any number of connections from one
address. :func:`guarded_protocol` returns a subclass of it (or of a subclass, such as the TLS
one in :mod:`portcullis.identity.tls`) that adds, per connection, in the order a request
arrives:

1. **Connection cap per client.** A connection from an address (an IPv6 client counts per /64,
   since one host holds a whole /64) that already has ``max_connections_per_client`` open ones
   gets ``503`` and is closed, without its request being parsed.
2. **Header-read timeout.** From connection start, and again after each response, the next
   request head must be complete within ``header_timeout_s``; else ``408`` (or a silent close if
   not one byte of it arrived) — a client trickling header bytes cannot hold the connection.
3. **Head size.** At most ``max_header_count`` header lines and ``max_header_bytes`` of target
   plus header names and values (trailers of a chunked body count too); past either, ``431`` and
   close. The check runs in the parser's callbacks, on each header as it completes, and on the
   raw bytes of the head (framing and whitespace included, with an allowance of 4 bytes a line):
   the parser is never fed more of a head than that, so an unterminated or padded header line is
   caught too. (A head that begins in the same read as the end of the previous request's body is
   bounded by the callbacks' count and the size of that one read.)
4. **Body-read timeout.** Once the head is complete, the whole body must arrive within
   ``body_timeout_s``; else ``408`` (if no response started), the app sees ``http.disconnect``
   and the connection closes.

Every refusal is counted by reason in :class:`ClientConnections` (``/metrics``). Upgrades to
WebSocket are not offered (the listeners run with ``ws="none"``).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: Reasons counted in :attr:`ClientConnections.refused`.
REASONS = ("per_client_cap", "header_limit", "header_timeout", "body_timeout")
#: Each refusal reason as an attempt reason (audit/attempts.py) and the status answered.
ATTEMPTS = {"per_client_cap": ("too_many_connections", 503), "header_limit": ("header_limits", 431),
            "header_timeout": ("header_timeout", 408), "body_timeout": ("body_timeout", 408)}
_LINE_OVERHEAD = 4  # ": " and CRLF of each header line; the raw-bytes bound allows for them


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The bounds one listener applies (``limits`` in ``gateway.yaml``)."""

    max_header_count: int = 100
    max_header_bytes: int = 16_384
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections_per_client: int = 64

    @property
    def max_head_raw_bytes(self) -> int:
        """Raw bytes a head may take on the wire: the counted bytes plus line framing and the
        request line's method and version."""
        return self.max_header_bytes + _LINE_OVERHEAD * (self.max_header_count + 1) + 64


def peer_address(scope: Any) -> str | None:
    """The connection's peer address from an ASGI scope (``scope["client"]``), None for a Unix socket."""
    peer = scope.get("client")
    if isinstance(peer, tuple | list) and peer and isinstance(peer[0], str):
        return peer[0]
    return None


def client_key(peer: Any) -> str | None:
    """The address a connection counts against: IPv4 as is, IPv6 per /64 (IPv4-mapped as IPv4)."""
    if not isinstance(peer, tuple) or not peer or not isinstance(peer[0], str):
        return None  # a Unix socket: no address to count against
    try:
        address = ipaddress.ip_address(peer[0].split("%", 1)[0])
    except ValueError:
        return peer[0]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class RefusalObserver(Protocol):
    """Told of every refusal (the gateway's attempt recorder); must not raise or block."""

    def refused(self, source: str | None, reason: str, status: int) -> None: ...


class ClientConnections:
    """Open connections per client address (an entry exists only while one is open, so the map
    is bounded by the open connections) and refusals by reason, each also told to ``observer``
    (as an attempt reason, see :data:`ATTEMPTS`). Event-loop thread only."""

    def __init__(self, max_per_client: int, observer: RefusalObserver | None = None) -> None:
        if max_per_client < 1:
            raise ValueError("max_per_client must be at least 1")
        self._max = max_per_client
        self._open: dict[str, int] = {}
        self.refused: Counter[str] = Counter({reason: 0 for reason in REASONS})
        self.observer = observer

    def refuse(self, key: str | None, reason: str) -> None:
        """Count one refusal of ``key``'s connection for ``reason`` (one of :data:`REASONS`)."""
        self.refused[reason] += 1
        if self.observer is not None:
            attempt_reason, status = ATTEMPTS[reason]
            self.observer.refused(key, attempt_reason, status)

    def admit(self, key: str | None) -> bool:
        if key is None:
            return True
        count = self._open.get(key, 0)
        if count >= self._max:
            self.refuse(key, "per_client_cap")
            return False
        self._open[key] = count + 1
        return True

    def release(self, key: str | None) -> None:
        if key is None:
            return
        count = self._open.get(key, 0) - 1
        if count > 0:
            self._open[key] = count
        else:
            self._open.pop(key, None)

    def open_count(self, key: str) -> int:
        return self._open.get(key, 0)

    def stats(self) -> dict[str, int]:
        """Refusals by reason (every reason present, zero included)."""
        return dict(self.refused)


def _plain(status: bytes, text: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            b"content-length: " + str(len(text)).encode() + b"\r\n\r\n" + text)


_TOO_MANY_CONNECTIONS = _plain(b"503 Service Unavailable", b"Too many connections from this address")
_HEAD_TOO_LARGE = _plain(b"431 Request Header Fields Too Large", b"Request Header Fields Too Large")
_TIMEOUT = _plain(b"408 Request Timeout", b"Request Timeout")


class _HeadTooLarge(Exception):
    """Raised inside a parser callback; the parser turns it into an error and stops."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds above. Use :func:`guarded_protocol`, which binds
    ``limits`` and ``clients`` (shared by every connection of one listener)."""

    limits: HttpLimits = HttpLimits()
    clients: ClientConnections | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0  # counted: target + header names and values of the current head
        self._head_raw = 0  # raw bytes of a head that spans reads
        self._header_count = 0
        self._in_head = True  # between a message's end (or the connection's start) and its headers' end
        self._heads = 0  # heads completed on this connection
        self._head_over = False  # set by a parser callback just before it stops the parser
        self._linger: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._client_key = client_key(transport.get_extra_info("peername"))
        self._admitted = self.clients is None or self.clients.admit(self._client_key)
        if not self._admitted:
            transport.write(_TOO_MANY_CONNECTIONS)
            if transport.can_write_eof():  # lingering close: the client reads the 503, not a reset
                transport.write_eof()
                self._linger = self.loop.call_later(min(1.0, self.limits.header_timeout_s), transport.close)
            else:
                transport.close()
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if self._linger is not None:
            self._linger.cancel()
        if self._admitted and self.clients is not None:
            self._admitted = False
            self.clients.release(self._client_key)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._admitted or self.transport.is_closing():
            return
        if not self._in_head:
            super().data_received(data)
            return
        heads = self._heads
        budget = self.limits.max_head_raw_bytes - self._head_raw
        if len(data) <= budget:
            super().data_received(data)
            if self._heads == heads:  # the whole read went to a head that is still incomplete
                self._head_raw += len(data)
            return
        # more than the head may still take: feed only that much, and the rest once the head is done
        super().data_received(data[:budget])
        if self.transport.is_closing():
            return
        if self._heads == heads:
            self._refuse_head()
        else:
            super().data_received(data[budget:])

    # parser callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_bytes = self._header_count = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        if self._head_bytes > self.limits.max_header_bytes:
            self._head_over = True
            raise _HeadTooLarge
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._head_bytes += len(name) + len(value)
        if self._header_count > self.limits.max_header_count or self._head_bytes > self.limits.max_header_bytes:
            self._head_over = True
            raise _HeadTooLarge
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._heads += 1
        self._head_raw = 0
        self._cancel_header_timer()
        super().on_headers_complete()
        queued = bool(self.pipeline) and self.pipeline[0][0] is self.cycle
        if not queued:  # a pipelined request's body waits behind the response before it, untimed
            self._arm_body_timer()

    def on_message_complete(self) -> None:
        self._in_head = True
        self._cancel_body_timer()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self._arm_header_timer()  # waiting for the next request's head

    def send_400_response(self, msg: str) -> None:
        if self._head_over:
            self._refuse_head()
            return
        super().send_400_response(msg)

    # refusals ----------------------------------------------------------------------------------

    def _refuse_head(self) -> None:
        if self.transport.is_closing():
            return
        self._count("header_limit")
        self._cancel_timers()
        self.transport.write(_HEAD_TOO_LARGE)
        self.transport.close()

    def _count(self, reason: str) -> None:
        if self.clients is not None:
            self.clients.refuse(self._client_key, reason)

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._header_timed_out)

    def _arm_body_timer(self) -> None:
        self._cancel_body_timer()
        self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_timed_out)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_header_timer()
        self._cancel_body_timer()

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        started = self._head_bytes > 0 or self._head_raw > 0 or self._header_count > 0
        if started:  # a head that began and did not finish; an idle connection just closes
            self._count("header_timeout")
            self.transport.write(_TIMEOUT)
        self.transport.close()

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self.transport.is_closing():
            return
        self._count("body_timeout")
        cycle = self.cycle
        if cycle is not None:
            if not cycle.response_started:
                self.transport.write(_TIMEOUT)
            cycle.disconnected = True  # the app's receive() now returns http.disconnect; its send is a no-op
            cycle.message_event.set()
        self.transport.close()


def guarded_protocol(limits: HttpLimits, clients: ClientConnections | None = None,
                     base: type[HttpToolsProtocol] = HttpToolsProtocol) -> type[GuardedHttpToolsProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` that applies ``limits`` on top of ``base``.

    ``clients`` is shared by all connections of the listener; give each listener its own.
    """
    if not issubclass(base, HttpToolsProtocol):
        raise TypeError("base must be uvicorn's HttpToolsProtocol or a subclass of it")
    bases: tuple[type, ...] = (GuardedHttpToolsProtocol,) if base is HttpToolsProtocol else (
        GuardedHttpToolsProtocol, base)
    shared = clients if clients is not None else ClientConnections(limits.max_connections_per_client)
    namespace = {"limits": limits, "clients": shared, "__module__": __name__}
    return type(f"Guarded{base.__name__}", bases, namespace)
