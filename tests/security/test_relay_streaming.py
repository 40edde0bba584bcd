"""The raw relay hands a call's notifications to its caller as they arrive (issue 13, streaming), under
the same bounds as before, and closes its request stream when the call is cancelled.

The upstream holds its answer back until an event the test controls is set: the result cannot exist
before the caller saw the first notification, so the order is proven without timing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import orjson
import pytest

from portcullis.content.output_filter import FilterPolicy
from portcullis.content.scan import DetectorSet
from portcullis.errors import ResultTooLarge
from portcullis.notifications import CURRENT, CallStream, StreamBounds
from tests.security.hostile_http import Reply, echo_result, hostile_upstream, relay_to

POLICY = FilterPolicy(detectors=DetectorSet.build(secrets=True, pii=("email",)))
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def _event(message: dict[str, Any]) -> bytes:
    return b"event: message\ndata: " + orjson.dumps(message) + b"\n\n"


def _progress(message: dict[str, Any], n: int, text: str = "") -> bytes:
    token = message["params"]["_meta"]["progressToken"]
    return _event({"jsonrpc": "2.0", "method": "notifications/progress",
                   "params": {"progressToken": token, "progress": n, "message": text or f"step {n}"}})


def _result(message: dict[str, Any]) -> bytes:
    return _event({"jsonrpc": "2.0", "id": message["id"], "result": echo_result("done")})


def _stream(bounds: StreamBounds | None = None) -> tuple[CallStream, list[dict[str, Any]], asyncio.Event]:
    out: list[dict[str, Any]] = []
    first = asyncio.Event()

    def deliver(note: dict[str, Any]) -> None:
        out.append(note)
        first.set()

    stream = CallStream(deliver, progress_token="caller-token", bounds=bounds or StreamBounds())
    stream.policy = POLICY
    return stream, out, first


async def _call(connection: Any, stream: CallStream, *, timeout_s: float = 20.0) -> dict[str, Any]:
    CURRENT.set(stream)  # as the transport does for a streaming caller (this task's own context)
    result: dict[str, Any] = await connection.call_tool("echo", {"who": "x"}, timeout_s=timeout_s, request_id="r")
    return result


async def test_progress_reaches_the_caller_before_the_upstream_sends_the_result() -> None:
    """The upstream writes its result only after the caller's stream received the first progress,
    with the event split across two writes: a relay that waited for the whole answer would time out."""
    stream, out, first = _stream()

    async def until_seen(n: int) -> None:
        if n == 3:  # before the result chunk
            await first.wait()

    def script(message: dict[str, Any], _: int) -> Reply:
        event = _progress(message, 1)
        return Reply((HEAD + _chunk(event[:9]), _chunk(event[9:]), _chunk(_result(message)) + b"0\r\n\r\n"),
                     before=until_seen)

    async with hostile_upstream(script) as upstream, relay_to(upstream) as connection:
        result = await _call(connection, stream)
    assert result["content"][0]["text"] == "done"
    assert [n["params"] for n in out] == [{"progress": 1, "message": "step 1", "progressToken": "caller-token"}]
    assert stream.summary() == {"relayed": 1}


async def test_the_whole_answer_bound_still_holds_while_notifications_stream() -> None:
    """max_result_bytes is over the whole answer, notifications included: the call fails as too large,
    and nothing past the bound was relayed (what arrived before it may have been: it was within it)."""
    stream, out, _ = _stream()

    def script(message: dict[str, Any], _: int) -> Reply:
        notes = tuple(_chunk(_progress(message, i, "x" * 200)) for i in range(20))
        return Reply((HEAD, *notes, _chunk(_result(message)) + b"0\r\n\r\n"))

    async with hostile_upstream(script) as upstream, relay_to(upstream, max_result_bytes=2048) as connection:
        with pytest.raises(ResultTooLarge):
            await _call(connection, stream)
    assert len(_progress({"params": {"_meta": {"progressToken": 1}}}, 1, "x" * 200)) * len(out) <= 2048


async def test_per_call_notification_bounds_apply_to_streamed_notifications() -> None:
    stream, out, _ = _stream(StreamBounds(max_notification_bytes=1024, max_per_call=2, max_total_bytes=10_000))

    def script(message: dict[str, Any], _: int) -> Reply:
        notes = b"".join(_chunk(_progress(message, i)) for i in range(4)) + _chunk(_progress(message, 9, "y" * 2000))
        return Reply((HEAD + notes + _chunk(_result(message)) + b"0\r\n\r\n",))

    async with hostile_upstream(script) as upstream, relay_to(upstream) as connection:
        await _call(connection, stream)
    assert len(out) == 2
    assert stream.summary() == {"relayed": 2, "too_many": 2, "too_large": 1}


async def test_notifications_after_the_result_are_dropped_as_after_end() -> None:
    stream, out, _ = _stream()

    def script(message: dict[str, Any], _: int) -> Reply:
        body = _progress(message, 1) + _result(message) + _progress(message, 2, "late")
        return Reply((HEAD + _chunk(body) + b"0\r\n\r\n",))

    async with hostile_upstream(script) as upstream, relay_to(upstream) as connection:
        await _call(connection, stream)
    assert [n["params"]["message"] for n in out] == ["step 1"]
    assert stream.summary() == {"after_end": 1, "relayed": 1}


async def test_a_cancelled_call_closes_its_upstream_request_stream() -> None:
    """Cancelling the relayed call (the caller went away) closes the connection the upstream is
    answering on; the upstream sees it while it still holds its result."""
    stream, _, first = _stream()
    never = asyncio.Event()

    def script(message: dict[str, Any], index: int) -> Reply | None:
        if index:
            return None  # a correct answer
        return Reply((HEAD + _chunk(_progress(message, 1)), _chunk(_result(message)) + b"0\r\n\r\n"),
                     before=lambda n: never.wait())

    async with hostile_upstream(script) as upstream, relay_to(upstream) as connection:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_call, connection, stream)
            await first.wait()  # the call is in flight: its first progress was relayed
            tg.cancel_scope.cancel()
        with anyio.fail_after(20):
            await upstream.gone_while_held.wait()
        assert await _echo_after(connection) == "again"  # the relay still works: the pool lost one connection


async def _echo_after(connection: Any) -> str:
    result = await connection.call_tool("echo", {"who": "again"}, timeout_s=20, request_id="r2")
    return str(result["content"][0]["text"])
