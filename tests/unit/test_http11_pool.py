"""The relay's HTTP/1.1 pool against a real loopback server: reuse, stale connections, hostile input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from portcullis.upstream.http11 import Http11Pool, HttpError

Handler = Callable[[bytes], bytes | None]


async def _server(respond: Handler, *, close_after: int | None = None) -> tuple[asyncio.Server, list[int]]:
    """A tiny HTTP server: one response per request (by ``respond``), counting connections."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length")), 0)
                body = await reader.readexactly(length)
                answer = respond(head + body)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                served += 1
                if close_after is not None and served >= close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, connections


def ok(body: bytes = b'{"ok":true}') -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


@pytest.fixture
async def pool_for() -> AsyncIterator[Callable[[asyncio.Server], Http11Pool]]:
    pools: list[Http11Pool] = []

    def make(server: asyncio.Server, **kwargs: object) -> Http11Pool:
        port = server.sockets[0].getsockname()[1]
        pools.append(Http11Pool(f"http://127.0.0.1:{port}/mcp", **kwargs))  # type: ignore[arg-type]
        return pools[-1]

    yield make
    for pool in pools:
        await pool.aclose()


async def test_keep_alive_connections_are_reused(pool_for) -> None:  # type: ignore[no-untyped-def]
    """Sequential requests share one connection."""
    server, connections = await _server(lambda _req: ok())
    async with server:
        pool = pool_for(server)
        for _ in range(5):
            response = await pool.post(b"{}", {"Content-Type": "application/json"})
            assert response.status == 200 and response.body == b'{"ok":true}'
    assert len(connections) == 1


async def test_a_connection_the_server_closed_while_idle_is_retried_once(pool_for) -> None:  # type: ignore[no-untyped-def]
    """The server closing after each response costs a reconnect, never a failed call."""
    server, connections = await _server(lambda _req: ok(), close_after=1)
    async with server:
        pool = pool_for(server)
        for _ in range(3):
            assert (await pool.post(b"{}", {})).status == 200
            await asyncio.sleep(0.01)  # let the close arrive
    assert len(connections) == 3


async def test_a_fresh_connection_closed_without_answer_is_an_error_not_a_retry(pool_for) -> None:  # type: ignore[no-untyped-def]
    """If a new connection dies before any response byte, the request is not sent again."""
    seen: list[bytes] = []

    def drop(request: bytes) -> None:
        seen.append(request)
        return None

    server, _ = await _server(drop)
    async with server:
        with pytest.raises(HttpError):
            await pool_for(server).post(b'{"side":"effect"}', {})
    assert len(seen) == 1


async def test_chunked_responses_are_reassembled(pool_for) -> None:  # type: ignore[no-untyped-def]
    """Chunked transfer encoding (as SSE answers use) yields the whole body."""
    chunked = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"7\r\ndata: {\r\n3\r\n}\n\n\r\n0\r\n\r\n")
    server, _ = await _server(lambda _req: chunked)
    async with server:
        response = await pool_for(server).post(b"{}", {})
    assert response.body == b"data: {}\n\n" and response.headers["content-type"] == "text/event-stream"


@pytest.mark.parametrize("headers", [{"X": "a\r\nInjected: 1"}, {"X\r\nY": "1"}, {"X": "caf\u00e9"}, {"X": "a\x00"}])
async def test_header_injection_is_refused_before_sending(pool_for, headers: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """CR, LF, NUL and non-ASCII in header names or values are never written to the wire."""
    server, connections = await _server(lambda _req: ok())
    async with server:
        with pytest.raises(HttpError):
            await pool_for(server).post(b"{}", headers)
    assert connections == []


async def test_oversized_responses_are_refused(pool_for) -> None:  # type: ignore[no-untyped-def]
    """A body over the limit fails the call instead of filling memory."""
    server, _ = await _server(lambda _req: ok(b"x" * 5000))
    async with server:
        with pytest.raises(HttpError):
            await pool_for(server, max_response_bytes=1000).post(b"{}", {})


async def test_connection_refused_is_an_http_error() -> None:
    """Nothing listening is a clear transport error."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(HttpError):
        await Http11Pool(f"http://127.0.0.1:{port}/mcp").post(b"{}", {})


async def test_a_pooled_connection_that_receives_bytes_while_idle_is_closed_not_reused(pool_for) -> None:  # type: ignore[no-untyped-def]
    """Bytes nobody asked for (a late extra response) make the client close that idle connection at once."""
    closed_by_client = asyncio.Event()
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0]))
                writer.write(ok())
                await writer.drain()
                if len(connections) == 1:
                    writer.write(ok(b'{"stale":true}'))  # after the answer, while the client is idle
                    await writer.drain()
                    if await reader.read(1) == b"":
                        closed_by_client.set()
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        pool = pool_for(server)
        assert (await pool.post(b"{}", {})).body == b'{"ok":true}'
        await asyncio.wait_for(closed_by_client.wait(), 30)
        assert (await pool.post(b"{}", {})).body == b'{"ok":true}'
    assert len(connections) == 2
