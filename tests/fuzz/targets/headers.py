"""Fuzz target: the HTTP layer's head bounds and the app's header map.

The input is fed to the guarded httptools protocol (:mod:`portcullis.transport.http_guard`) in
reads whose size comes from its first byte, with small test limits (8 header lines, 256 bytes).
The ASGI app is not run; each request the protocol would hand it is recorded instead.

Properties:

1. Nothing escapes ``data_received`` (a malformed request is answered, never raised).
2. Every request that reaches the app has at most ``max_header_count`` header lines and at most
   ``max_header_bytes`` of target plus header names and values.
3. Whatever the protocol writes back is a whole HTTP/1.1 refusal (400, 408, 431 or 503).
4. The app's header map of each such request is exact: single-valued headers appear once (a
   repeat is refused with 400) and a repeated list header's value is every value, in order,
   joined with ", ".
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from portcullis.transport.app import _SINGLE_HEADERS, _Answer, _headers
from portcullis.transport.http_guard import ClientConnections, HttpLimits, guarded_protocol

LIMITS = HttpLimits(max_header_count=8, max_header_bytes=256, header_timeout_s=60, body_timeout_s=60,
                    max_connections_per_client=4)
_LOOP = asyncio.new_event_loop()  # timers are scheduled on it, never run
_REFUSALS = (b"HTTP/1.1 400 ", b"HTTP/1.1 408 ", b"HTTP/1.1 431 ", b"HTTP/1.1 503 ")


async def _never_called(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("the app is not run by this target")


_CONFIG = Config(_never_called, http="httptools", ws="none", lifespan="off", log_level="critical")
_CONFIG.load()


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("192.0.2.1", 4242), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def can_write_eof(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Recording(guarded_protocol(LIMITS, ClientConnections(4))):  # type: ignore[misc]
    seen: list[tuple[bytes, list[tuple[bytes, bytes]]]]

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        self.seen.append((self.url, list(cycle.scope["headers"])))


def _check_header_map(raw: list[tuple[bytes, bytes]]) -> None:
    try:
        mapped = _headers({"headers": raw}, LIMITS.max_header_count)
    except _Answer as answer:
        assert answer.status in (400, 431), answer.status
        names = [name.decode("latin-1").lower() for name, _ in raw]
        assert answer.status == 431 or any(
            names.count(n) > 1 for n in set(names) if n in _SINGLE_HEADERS), raw
        return
    expected: dict[str, list[str]] = {}
    for name, value in raw:
        expected.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
    assert mapped == {k: ", ".join(v) for k, v in expected.items()}


def fuzz_one(data: bytes) -> None:
    if not data:
        return
    step, data = data[0] % 64 + 1, data[1:]
    transport = _Transport()
    protocol = _Recording(config=_CONFIG, server_state=ServerState(), app_state={}, _loop=_LOOP)
    protocol.seen = []
    protocol.connection_made(transport)
    try:
        for start in range(0, len(data), step):
            if transport.closing:
                break
            protocol.data_received(data[start:start + step])
    finally:
        protocol.connection_lost(None)
        _LOOP.call_soon(_LOOP.stop)
        _LOOP.run_forever()  # one pass purges the cancelled timers, so a long run does not accumulate them
    for url, raw in protocol.seen:
        assert len(raw) <= LIMITS.max_header_count, len(raw)
        assert len(url) + sum(len(n) + len(v) for n, v in raw) <= LIMITS.max_header_bytes
        _check_header_map(raw)
    out = b"".join(transport.written)
    assert not out or out.startswith(_REFUSALS), out[:80]
