"""Issue 10, item 9: an upstream's answer is bounded in bytes and nesting, on every transport.

``max_result_bytes`` bounds what is read (reading stops when it is passed) and
``max_result_depth`` bounds the result's nesting; either failure is -31005 for that call. The
relay closes the connection; a stdio child whose line passed the limit is restarted.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from pydantic import ValidationError

from portcullis.config.model import HttpService, StdioService
from portcullis.errors import RESULT_TOO_DEEP, PortcullisError, ResultTooLarge, UpstreamFailed, to_wire
from portcullis.upstream.http11 import Http11Pool, ResponseTooLarge
from portcullis.upstream.registry import ServiceHandle
from portcullis.upstream.sdk_client import SdkConnector
from tests.security.hostile_http import (
    Reply,
    echo,
    echo_result,
    hostile_upstream,
    http,
    relay_to,
    rpc_body,
    sdk_client_to,
)

REPO = Path(__file__).resolve().parents[2]
LIMIT = 4096


def who(m: dict[str, Any]) -> str:
    return str(m["params"]["arguments"]["who"])


def sized(m: dict[str, Any], size: int) -> bytes:
    """A correct JSON-RPC answer body of exactly ``size`` bytes (the text is padded)."""
    frame = rpc_body(m["id"], echo_result(who(m)))
    return frame.replace(b'"text":"%s"' % who(m).encode(), b'"text":"%s%s"' % (who(m).encode(),
                                                                              b" " * (size - len(frame))))


def chunked(payload: bytes, content_type: bytes = b"application/json", piece: int = 1000) -> bytes:
    parts = [payload[i:i + piece] for i in range(0, len(payload), piece)]
    return (b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"%x\r\n" % len(p) + p + b"\r\n" for p in parts) + b"0\r\n\r\n")


def sse_event(body: bytes) -> bytes:
    return b"data: " + body + b"\n\n"


def deep_result(m: dict[str, Any], depth: int) -> bytes:
    """A correct answer whose result nests exactly ``depth`` deep (the result object is 1)."""
    value: Any = {}
    for _ in range(depth - 2):
        value = {"a": value}
    return rpc_body(m["id"], {**echo_result(who(m)), "structuredContent": value})


# (id, the reply to the first call, whether it must fail with -31005)
SIZE_ROWS: list[tuple[str, Any, bool]] = [
    ("length-at-limit", lambda m: Reply((http(sized(m, LIMIT)),)), False),
    ("length-over-limit", lambda m: Reply((http(sized(m, LIMIT + 1)),)), True),
    ("length-declared-huge", lambda m: Reply((b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                              b"Content-Length: 1000000000000\r\n\r\n{",)), True),
    ("chunked-at-limit", lambda m: Reply((chunked(sized(m, LIMIT)),)), False),
    ("chunked-over-limit", lambda m: Reply((chunked(sized(m, LIMIT + 1)),)), True),
    ("chunk-declared-huge", lambda m: Reply((b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                             b"Transfer-Encoding: chunked\r\n\r\nffffffffffff\r\n{",)), True),
    ("sse-over-limit", lambda m: Reply((http(sse_event(sized(m, LIMIT)), content_type=b"text/event-stream"),)),
     True),
    ("sse-chunked-over-limit", lambda m: Reply((chunked(sse_event(sized(m, LIMIT)), b"text/event-stream"),)), True),
    ("sse-many-small-events", lambda m: Reply((http(
        b'data: {"jsonrpc":"2.0","method":"notifications/progress","params":{}}\n\n' * 80
        + sse_event(sized(m, 100)), content_type=b"text/event-stream"),)), True),
    ("close-delimited-over-limit", lambda m: Reply((b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n"
                                                    + sized(m, LIMIT + 1),), close=True), True),
    ("interim-then-over-limit", lambda m: Reply((b"HTTP/1.1 103 Early Hints\r\n\r\n" + http(sized(m, LIMIT + 1)),)),
     True),
]


@pytest.mark.parametrize(("reply", "too_large"), [r[1:] for r in SIZE_ROWS], ids=[r[0] for r in SIZE_ROWS])
async def test_the_relay_refuses_an_answer_over_max_result_bytes(reply: Any, too_large: bool) -> None:
    """Over the limit is -31005 and a closed connection; at the limit is fine; the next call is unaffected."""
    async with hostile_upstream(lambda m, i: reply(m) if i == 0 else None) as upstream:
        async with relay_to(upstream, max_result_bytes=LIMIT) as connection:
            if too_large:
                with pytest.raises(ResultTooLarge) as caught:
                    await echo(connection, "alice")
                assert caught.value.message == "Service result too large"
            else:
                assert (await echo(connection, "alice")).rstrip() == "alice"
            assert await echo(connection, "bob") == "bob"
    assert (upstream.connections == 1) is not too_large


async def test_the_relay_stops_reading_an_endless_answer_at_the_limit() -> None:
    """A body that never ends is cut off at the limit: the upstream cannot push the rest."""
    written = 0
    finished = asyncio.Event()
    chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(4096):  # 256 MiB, if anyone read it
                writer.write(chunk)
                await writer.drain()
                written += len(chunk)
        except ConnectionError:
            pass
        finally:
            writer.close()
            finished.set()

    server = await asyncio.start_server(endless, "127.0.0.1", 0)
    async with server:
        pool = Http11Pool(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/mcp", max_response_bytes=1 << 20)
        with pytest.raises(ResponseTooLarge):
            await pool.post(b"{}", {})
        await pool.aclose()
        async with asyncio.timeout(60):
            await finished.wait()  # the writer saw its connection reset
    assert written < 64 * (1 << 20), f"{written} bytes were accepted from a 1 MiB-limited answer"


# (id, depth of the result, configured max_result_depth, must fail)
DEPTH_ROWS = [("at-default-limit", 64, None, False), ("over-default-limit", 65, None, True),
              ("at-configured-limit", 8, 8, False), ("over-configured-limit", 9, 8, True),
              ("beyond-the-parser", 1100, None, True)]


@pytest.mark.parametrize(("depth", "limit", "too_deep"), [r[1:] for r in DEPTH_ROWS], ids=[r[0] for r in DEPTH_ROWS])
@pytest.mark.parametrize("framing", ["json", "sse"])
async def test_the_relay_refuses_a_result_nested_over_max_result_depth(depth: int, limit: int | None,
                                                                       too_deep: bool, framing: str) -> None:
    """A result deeper than the limit is -31005 "nested too deeply"; at the limit it passes."""
    def reply(m: dict[str, Any]) -> Reply:
        if depth > 1000:  # past any JSON parser's own limit: built as text
            body = rpc_body(m["id"], echo_result(who(m))).replace(b'"isError"', b'"x":' + b"[" * depth + b"]" * depth
                                                                    + b',"isError"')
        else:
            body = deep_result(m, depth)
        if framing == "sse":
            return Reply((http(sse_event(body), content_type=b"text/event-stream"),))
        return Reply((http(body),))

    settings = {} if limit is None else {"max_result_depth": limit}
    async with hostile_upstream(lambda m, i: reply(m) if i == 0 else None) as upstream:
        async with relay_to(upstream, max_result_bytes=1 << 20, **settings) as connection:
            if too_deep:
                with pytest.raises(ResultTooLarge) as caught:
                    await echo(connection, "alice")
                assert caught.value.message == RESULT_TOO_DEEP
            else:
                assert await echo(connection, "alice") == "alice"
            assert await echo(connection, "bob") == "bob"


# ---------------------------------------------------------------------------- stdio


def stdio_service(**settings: Any) -> StdioService:
    return StdioService.model_validate({"transport": "stdio", "command": sys.executable,
                                        "args": ["-m", "tests.security.hostile_stdio"], "cwd": str(REPO),
                                        "env": {"PYTHONPATH": str(REPO)}, **settings})


async def stdio_call(connection: Any, mode: str, *, timeout_s: float = 20.0, **args: Any) -> str:
    result = await connection.call_tool("echo", {"who": "alice", "mode": mode, **args}, timeout_s=timeout_s,
                                        request_id="r")
    return str(result["content"][0]["text"])


STDIO_LIMIT = 65536
# (id, mode and its arguments, failure expected, whether the connection must end)
STDIO_ROWS: list[tuple[str, dict[str, Any], bool, bool]] = [
    ("line-at-limit", {"mode": "sized", "size": STDIO_LIMIT}, False, False),
    ("line-over-limit", {"mode": "sized", "size": STDIO_LIMIT + 1}, True, True),
    ("line-far-over-limit", {"mode": "sized", "size": 8 * STDIO_LIMIT}, True, True),
    ("endless-line", {"mode": "endless", "size": 1 << 30}, True, True),
    ("depth-at-limit", {"mode": "deep", "depth": 64}, False, False),
    ("depth-over-limit", {"mode": "deep", "depth": 65}, True, False),
    ("depth-beyond-the-parser", {"mode": "deep", "depth": 400}, True, True),
]


@pytest.mark.parametrize(("args", "fails", "ends"), [r[1:] for r in STDIO_ROWS], ids=[r[0] for r in STDIO_ROWS])
async def test_a_stdio_answer_over_the_limits_fails_its_call(args: dict[str, Any], fails: bool, ends: bool) -> None:
    """Over max_result_bytes (or unparseably deep) ends the connection; over max_result_depth fails one call."""
    connector = SdkConnector("hostile", stdio_service(max_result_bytes=STDIO_LIMIT), os.environ)
    async with connector.open() as connection:
        if fails:
            with pytest.raises(ResultTooLarge):
                await stdio_call(connection, **args)
        else:
            assert await stdio_call(connection, **args)  # an answer (its text is padding or "alice")
        if ends:
            with anyio.fail_after(10):
                await connection.wait_closed()  # the supervisor restarts the child on this
        else:
            assert await stdio_call(connection, "ok") == "alice"


async def test_a_stdio_child_whose_line_passed_the_limit_is_restarted() -> None:
    """The supervisor replaces the child; calls then work again on a new process."""
    connector = SdkConnector("hostile", stdio_service(max_result_bytes=STDIO_LIMIT), os.environ)
    handle = ServiceHandle("hostile", [connector], lambda _name, _tools, _as_of: None, health_interval_s=0.2,
                           max_backoff_s=0.2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(handle.run)
        with anyio.fail_after(30):
            await handle.ready.wait()
            first = await stdio_call(handle, "pid")
            with pytest.raises(ResultTooLarge):
                await stdio_call(handle, "endless")
            while True:  # the old child is gone and a new one answers
                try:
                    second = await stdio_call(handle, "pid", timeout_s=2)
                    if second != first:
                        break
                except PortcullisError:  # unavailable while it restarts
                    pass
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert second != first


# ---------------------------------------------------------------------------- SDK client (legacy HTTP)


def legacy_rows() -> list[tuple[str, Any, str | None]]:
    return [
        ("json-at-limit", lambda m: Reply((http(sized(m, LIMIT)),)), None),
        ("json-over-limit", lambda m: Reply((http(sized(m, LIMIT + 1)),)), "Service result too large"),
        ("json-chunked-over-limit", lambda m: Reply((chunked(sized(m, 4 * LIMIT)),)), "Service result too large"),
        ("sse-over-limit", lambda m: Reply((http(sse_event(sized(m, LIMIT)), content_type=b"text/event-stream"),)),
         "Service result too large"),
        ("depth-over-limit", lambda m: Reply((http(deep_result(m, 65)),)), RESULT_TOO_DEEP),
        ("compressed", lambda m: Reply((http(sized(m, 100), extra=b"Content-Encoding: gzip\r\n"),)), "Service error"),
    ]


@pytest.mark.parametrize(("reply", "error"), [r[1:] for r in legacy_rows()], ids=[r[0] for r in legacy_rows()])
async def test_the_sdk_client_path_bounds_legacy_answers_too(reply: Any, error: str | None) -> None:
    """A legacy-era service (reached through the SDK client) gets the same limits as the relay."""
    async with hostile_upstream(lambda m, i: reply(m) if i == 0 else None, legacy=True) as upstream:
        async with sdk_client_to(upstream, max_result_bytes=LIMIT) as connection:
            if error is None:
                assert (await echo(connection, "alice")).rstrip() == "alice"
            else:
                with pytest.raises(UpstreamFailed) as caught:
                    await echo(connection, "alice")
                assert caught.value.message == error
            assert await echo(connection, "bob") == "bob"


# ---------------------------------------------------------------------------- configuration and wire


def test_the_limits_have_safe_defaults_and_bounds() -> None:
    """4 MiB and 64 levels unless configured; nonsense values are configuration errors."""
    service = HttpService.model_validate({"transport": "http", "url": "http://127.0.0.1/mcp"})
    assert (service.max_result_bytes, service.max_result_depth) == (4 * 1024 * 1024, 64)
    for bad in ({"max_result_bytes": 0}, {"max_result_bytes": 1023}, {"max_result_bytes": 1 << 40},
                {"max_result_depth": 3}, {"max_result_depth": 129}, {"max_result_bytes": "4MiB"}):
        with pytest.raises(ValidationError):
            stdio_service(**bad)


@pytest.mark.parametrize(("error", "message"), [(ResultTooLarge(), "Service result too large"),
                                                (ResultTooLarge(RESULT_TOO_DEEP), RESULT_TOO_DEEP)])
def test_too_large_results_are_error_31005_on_the_wire(error: ResultTooLarge, message: str) -> None:
    """The caller sees -31005 with a fixed message and nothing of the answer."""
    wire = to_wire(error, request_id=7, modern=True)
    assert wire.status == 200 and wire.body == {"jsonrpc": "2.0", "id": 7,
                                                "error": {"code": -31005, "message": message}}
    assert orjson.dumps(wire.body)
