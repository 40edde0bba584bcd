"""A lean HTTP/1.1 client for the relay's one job: POST a JSON body, read one whole response.

Profiling showed a general-purpose client (httpx2) spending about 1.1 ms of CPU per relayed
call on this hardware — more than the gateway's whole budget — on pool bookkeeping, request
models and response streaming we do not need. This client keeps a small pool of keep-alive
connections to one origin and parses responses with ``httptools`` (the C parser uvicorn uses),
including chunked bodies.

Rules it keeps:

- header values are ASCII without CR/LF (anything else is refused, never sent);
- a response is read whole, up to ``max_response_bytes``; the caller's timeout bounds the call;
- an idle connection is dropped after ``idle_timeout_s`` (below common server keep-alive
  timeouts) and on any error; a request that fails on a *reused* connection before a single
  response byte arrived — the server closed it while idle — is sent once more on a new
  connection; nothing else is ever retried;
- redirects are not followed (a 3xx is just a response).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools

_FORBIDDEN = frozenset("\r\n\0")


class HttpError(Exception):
    """Transport-level failure (connect, reset, protocol). Translated by the relay."""


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class _Reader:
    """httptools callbacks collecting one response."""

    limit: int
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    done: bool = False
    keep_alive: bool = False
    parser: httptools.HttpResponseParser | None = None

    def on_headers_complete(self) -> None:
        # must be read here: once the message completes, the parser has reset its state
        self.keep_alive = self.parser is not None and self.parser.should_keep_alive()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.limit:
            raise HttpError("response too large")
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.done = True


@dataclass(slots=True)
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float


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
        """POST ``body`` to the pool's URL; one retry only for a reused connection closed while idle."""
        request = self._encode(body, headers)
        conn, reused = await self._acquire()
        try:
            return await self._exchange(conn, request)
        except _NothingReceived:
            if not reused:
                raise HttpError("connection closed before a response") from None
        conn = await self._connect()
        try:
            return await self._exchange(conn, request)
        except _NothingReceived:
            raise HttpError("connection closed before a response") from None

    async def aclose(self) -> None:
        while self._idle:
            self._close(self._idle.popleft())

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
            if now - conn.idle_since < self._idle_timeout_s and not conn.reader.at_eof() and \
                    not conn.writer.is_closing():
                return conn, True
            self._close(conn)
        return await self._connect(), False

    async def _connect(self) -> _Conn:
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                reader, writer = await asyncio.open_connection(
                    self._host, self._port, ssl=self._ssl, server_hostname=self._host if self._ssl else None,
                    limit=1 << 20)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            raise HttpError(f"connect failed: {type(exc).__name__}") from None
        return _Conn(reader, writer, time.monotonic())

    async def _exchange(self, conn: _Conn, request: bytes) -> Response:
        collected = _Reader(self._limit)
        parser = httptools.HttpResponseParser(collected)
        collected.parser = parser
        received = 0
        try:
            conn.writer.write(request)
            while not collected.done:
                data = await conn.reader.read(65536)
                if not data:
                    if received == 0:
                        raise _NothingReceived
                    raise HttpError("connection closed mid-response")
                received += len(data)
                parser.feed_data(data)
        except (_NothingReceived, HttpError):
            self._close(conn)
            raise
        except (OSError, ssl.SSLError, httptools.HttpParserError) as exc:
            self._close(conn)
            if received == 0 and isinstance(exc, ConnectionError):
                raise _NothingReceived from None
            raise HttpError(f"{type(exc).__name__}") from None
        except BaseException:  # cancellation or timeout mid-exchange: the connection state is unknown
            self._close(conn)
            raise
        response = Response(parser.get_status_code(), collected.headers, b"".join(collected.chunks))
        collected.parser = None
        if collected.keep_alive and len(self._idle) < self._max_idle:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            self._close(conn)
        return response

    @staticmethod
    def _close(conn: _Conn) -> None:
        conn.writer.close()


class _NothingReceived(Exception):
    pass
