"""A lean HTTP/1.1 client for the relay's one job: POST a JSON body, read one whole response.

Profiling showed a general-purpose client (httpx2) spending about 1.1 ms of CPU per relayed
call on this hardware — more than the gateway's whole budget — on pool bookkeeping, request
models and response streaming we do not need. This client keeps a small pool of keep-alive
connections to one origin and reads responses with the strict reader in :mod:`.http11_response`.

A connection shared by calls of different callers must never hand one caller's answer to the
next, so the rules are:

- header values are ASCII without CR/LF (anything else is refused, never sent);
- interim ``1xx`` responses are skipped, ``101`` is refused; a response is read whole, up to
  ``max_response_bytes``, and the caller's timeout bounds the call;
- a connection goes back to the pool only when its response was read exactly to its end (no
  byte after it, HTTP/1.1, not ``Connection: close``) *and* the caller's ``read`` function
  accepted the answer (the relay checks the JSON-RPC id there); on any error, timeout or
  cancellation it is closed;
- a pooled connection that received anything while idle (a late or extra response), saw EOF, or
  sat idle past ``idle_timeout_s`` is closed when next taken, never used;
- a request that fails on a *reused* connection before a single response byte arrived — the
  server closed it while idle — is sent once more on a new connection; nothing else is retried;
- redirects are not followed (a 3xx is just a response);
- an exchange's ``watch`` sees the body's chunks as they arrive (the relay reads an SSE answer's
  events while the call runs); it changes none of the rules above.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar, cast
from urllib.parse import urlsplit

from portcullis.upstream.http11_response import BodyTooLarge, ResponseError, ResponseHead, ResponseReader

_FORBIDDEN = frozenset("\r\n\0")
_HIGH_WATER = 256 * 1024  # bytes buffered before the socket stops being read
T = TypeVar("T")
#: told of each body chunk as it arrives (with the response's head); what it raises ends the exchange
Watch = Callable[[ResponseHead, bytes], None]


class HttpError(Exception):
    """Transport-level failure (connect, reset, protocol). Translated by the relay."""


class ProtocolError(HttpError):
    """The upstream's bytes are not one well-formed HTTP/1.1 response (it broke the protocol)."""


class ResponseTooLarge(ProtocolError):
    """The response body passed ``max_response_bytes``; reading stopped there."""


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class _Conn(asyncio.Protocol):
    """One socket; received bytes wait in ``_chunks`` until the exchange in progress takes them."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.busy = True  # bytes arriving while idle are a desync: the connection is then dropped
        self.dirty = False
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream transport: create_connection's

    def data_received(self, data: bytes) -> None:
        if not self.busy:
            self.dirty = True  # an answer nobody asked for: never reuse, never buffer
            self.close()
            return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._wake()

    @property
    def reusable(self) -> bool:
        """Idle, open, nothing received and nothing pending."""
        transport = self.transport
        return (not self.dirty and not self._eof and not self._chunks and transport is not None
                and not transport.is_closing())

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("connection closed")
        self.transport.write(data)

    async def receive(self) -> bytes:
        """The next bytes from the socket, or ``b""`` at EOF."""
        while not self._chunks:
            if self._eof:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = self._chunks.popleft()
        self._buffered -= len(data)
        if self._paused and self._buffered <= _HIGH_WATER // 4 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Http11Pool:
    """Keep-alive connections to one origin (``http://`` or ``https://``)."""

    def __init__(self, url: str, *, ssl_context: ssl.SSLContext | None = None, max_idle: int = 32,
                 idle_timeout_s: float = 2.0, connect_timeout_s: float = 10.0,
                 max_response_bytes: int = 16 * 1024 * 1024) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("upstream URL must be http(s)://host[:port]/path")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = (ssl_context or ssl.create_default_context()) if parts.scheme == "https" else None
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._authority = host if parts.port is None else f"{host}:{parts.port}"
        self._idle: deque[_Conn] = deque()
        self._max_idle = max_idle
        self._idle_timeout_s = idle_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._limit = max_response_bytes

    async def post(self, body: bytes, headers: dict[str, str]) -> Response:
        """POST ``body`` to the pool's URL and return the response."""
        return await self.exchange(body, headers, _identity)

    async def exchange(self, body: bytes, headers: dict[str, str], read: Callable[[Response], T],
                       watch: Watch | None = None) -> T:
        """POST ``body``; ``read`` interprets the response before its connection may be pooled.

        Whatever ``read`` raises closes the connection and propagates, so a caller that finds the
        answer is not its own (a wrong JSON-RPC id) never leaves that connection for the next one.
        One retry only, for a reused connection the server closed while idle. ``watch``, if given,
        sees each body chunk as it arrives (the relay reads an SSE answer's events as they come);
        what it raises closes the connection and propagates like ``read``'s.
        """
        request = self._encode(body, headers)
        conn, reused = await self._acquire()
        try:
            response, reusable = await self._roundtrip(conn, request, watch)
        except _NothingReceived:
            if not reused:
                raise HttpError("connection closed before a response") from None
            conn = await self._connect()
            try:
                response, reusable = await self._roundtrip(conn, request, watch)
            except _NothingReceived:
                raise HttpError("connection closed before a response") from None
        try:
            value = read(response)
        except BaseException:
            conn.close()
            raise
        self._release(conn, reusable)
        return value

    async def aclose(self) -> None:
        while self._idle:
            self._idle.popleft().close()

    def _encode(self, body: bytes, headers: dict[str, str]) -> bytes:
        lines = [f"POST {self._path} HTTP/1.1", f"Host: {self._authority}", f"Content-Length: {len(body)}"]
        for name, value in headers.items():
            if not name.isascii() or not value.isascii() or _FORBIDDEN.intersection(name + value):
                raise HttpError("header name or value not allowed")
            lines.append(f"{name}: {value}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body

    async def _acquire(self) -> tuple[_Conn, bool]:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # most recently used first: least likely to have been closed
            if now - conn.idle_since < self._idle_timeout_s and conn.reusable:
                conn.busy = True
                return conn, True
            conn.close()
        return await self._connect(), False

    def _release(self, conn: _Conn, reusable: bool) -> None:
        if reusable and conn.reusable and len(self._idle) < self._max_idle:
            conn.busy = False
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, conn = await loop.create_connection(
                    _Conn, self._host, self._port, ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            raise HttpError(f"connect failed: {type(exc).__name__}") from None
        return conn

    async def _roundtrip(self, conn: _Conn, request: bytes, watch: Watch | None = None) -> tuple[Response, bool]:
        reader = ResponseReader(max_body_bytes=self._limit)
        received = watched = 0
        try:
            conn.write(request)
            while True:
                data = await conn.receive()
                if not data:
                    if received == 0:
                        raise _NothingReceived
                    if not reader.feed_eof():
                        raise HttpError("connection closed mid-response")
                    break
                received += len(data)
                done = reader.feed(data)
                if watch is not None and reader.head is not None:
                    parts = reader.parts
                    while watched < len(parts):
                        watch(reader.head, parts[watched])
                        watched += 1
                if done:
                    break
        except _NothingReceived:
            conn.close()
            raise
        except BodyTooLarge:
            conn.close()
            raise ResponseTooLarge(f"response body over {self._limit} bytes") from None
        except ResponseError as exc:
            conn.close()
            raise ProtocolError(str(exc)) from None
        except (OSError, ssl.SSLError) as exc:
            conn.close()
            if received == 0 and isinstance(exc, ConnectionError):
                raise _NothingReceived from None
            raise HttpError(type(exc).__name__) from None
        except BaseException:  # cancellation or timeout mid-exchange: the connection state is unknown
            conn.close()
            raise
        head = reader.head
        if head is None:  # unreachable: done implies a head; kept so a bug fails closed
            conn.close()
            raise ProtocolError("no response head")
        return Response(head.status, head.headers, reader.body), reader.reusable


def _identity(response: Response) -> Response:
    return response


class _NothingReceived(Exception):
    pass
