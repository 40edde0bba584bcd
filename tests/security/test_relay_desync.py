"""Issue 10, item 1: a hostile upstream can never make one call's answer reach another call.

Every row is a real upstream on a loopback socket writing exact bytes for one ``tools/call``; the
calls after it must each get their own answer, and the connection that carried a doubtful
response must not be reused. Rows cover interim responses, framing (length, chunked, close),
extra and pipelined bytes, malformed heads, and JSON-RPC ids in JSON and SSE answers.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from portcullis.config.model import StdioService
from portcullis.errors import ResultTooLarge, UpstreamFailed, UpstreamTimeout, UpstreamUnavailable
from portcullis.upstream.http11 import Response
from portcullis.upstream.http_relay import read_answer
from portcullis.upstream.sdk_client import SdkConnector
from tests.security.hostile_http import (
    Reply,
    correct,
    echo,
    echo_result,
    hostile_upstream,
    http,
    relay_to,
    rpc_body,
    sdk_client_to,
)

Build = Callable[[dict[str, Any]], Reply]


def rid(m: dict[str, Any]) -> int:
    return int(m["id"])


def who(m: dict[str, Any]) -> str:
    return str(m["params"]["arguments"]["who"])


def body(m: dict[str, Any], request_id: Any = None) -> bytes:
    return rpc_body(rid(m) if request_id is None else request_id, echo_result(who(m)))


def raw(*chunks: Callable[[dict[str, Any]], bytes] | bytes, close: bool = False, pause_s: float = 0.0) -> Build:
    """A reply written as these chunks (bytes, or functions of the request), one write each."""
    return lambda m: Reply(tuple(c(m) if callable(c) else c for c in chunks), close=close, pause_s=pause_s)


def head(*lines: bytes) -> bytes:
    return b"\r\n".join(lines) + b"\r\n\r\n"


def chunked(payload: bytes, *, te: bytes = b"chunked", trailer: bytes = b"") -> bytes:
    return (head(b"HTTP/1.1 200 OK", b"Content-Type: application/json", b"Transfer-Encoding: " + te)
            + b"%x\r\n" % len(payload) + payload + b"\r\n0\r\n" + trailer + b"\r\n")


def sse(*events: bytes, newline: bytes = b"\n") -> Callable[[dict[str, Any]], bytes]:
    def build(m: dict[str, Any]) -> bytes:
        text = b"".join(e.replace(b"{ID}", str(rid(m)).encode()).replace(b"{WHO}", who(m).encode())
                        + newline + newline for e in events)
        return http(text.replace(b"\n", newline) if newline != b"\n" else text, content_type=b"text/event-stream")
    return build


OURS = b'data: {"jsonrpc":"2.0","id":{ID},"result":{"content":[{"type":"text","text":"{WHO}"}],"isError":false}}'
OTHER = (b'data: {"jsonrpc":"2.0","id":999,"result":{"content":[{"type":"text","text":"mallory"}],'
         b'"isError":false}}')
NOTE = b'data: {"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}'
SERVER_REQUEST = b'data: {"jsonrpc":"2.0","id":7,"method":"elicitation/create","params":{}}'


def json_answer(value: Callable[[dict[str, Any]], Any]) -> Build:
    return raw(lambda m: http(orjson.dumps(value(m))))


def result_of(m: dict[str, Any]) -> dict[str, Any]:
    return echo_result(who(m))


def cl_head(*extra: bytes, status: bytes = b"HTTP/1.1 200 OK") -> Callable[[dict[str, Any]], bytes]:
    return lambda m: head(status, b"Content-Type: application/json", *[
        e.replace(b"{N}", str(len(body(m))).encode()) for e in extra]) + body(m)


# (id, reply, outcome, whether the connection is reused afterwards)
OK, FAILED, UNAVAILABLE, TIMEOUT = "ok", "failed", "unavailable", "timeout"
ROWS: list[tuple[str, Build, str, bool]] = [
    # ---- interim responses
    ("103-early-hints", raw(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n", correct), OK, True),
    ("100-continue", raw(b"HTTP/1.1 100 Continue\r\n\r\n", correct), OK, True),
    ("102-processing", raw(b"HTTP/1.1 102 Processing\r\n\r\n", correct), OK, True),
    ("103-then-a-pause", raw(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n", correct, pause_s=0.05),
     OK, True),
    ("100-then-a-pause", raw(b"HTTP/1.1 100 Continue\r\n\r\n", correct, pause_s=0.05), OK, True),
    ("interim-separate-writes", raw(b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\n\r\n",
                                    b"HTTP/1.1 103 Early Hints\r\nLink: </b>\r\n\r\n", correct), OK, True),
    ("16-interim", raw(b"HTTP/1.1 103 Early Hints\r\n\r\n" * 16, correct), OK, True),
    ("17-interim", raw(b"HTTP/1.1 103 Early Hints\r\n\r\n" * 17, correct), FAILED, False),
    ("101-switching", raw(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
                          correct), FAILED, False),
    ("interim-with-body", raw(b"HTTP/1.1 103 Early Hints\r\nContent-Length: 5\r\n\r\nhello", correct), FAILED, False),
    ("interim-after-final", raw(correct, b"HTTP/1.1 100 Continue\r\n\r\n"), OK, False),
    ("199-unknown-interim", raw(b"HTTP/1.1 199 Whatever\r\n\r\n", correct), OK, True),
    # ---- Content-Length framing
    ("cl-and-chunked", raw(lambda m: head(b"HTTP/1.1 200 OK", b"Content-Type: application/json",
                                          b"Content-Length: %d" % len(body(m)), b"Transfer-Encoding: chunked")
                           + body(m)), FAILED, False),
    ("duplicate-identical-cl", raw(cl_head(b"Content-Length: {N}", b"Content-Length: {N}")), FAILED, False),
    ("conflicting-cl", raw(cl_head(b"Content-Length: {N}", b"Content-Length: 2")), FAILED, False),
    ("cl-list", raw(cl_head(b"Content-Length: {N}, {N}")), FAILED, False),
    ("cl-plus-sign", raw(cl_head(b"Content-Length: +{N}")), FAILED, False),
    ("cl-negative", raw(cl_head(b"Content-Length: -1")), FAILED, False),
    ("cl-hex", raw(cl_head(b"Content-Length: 0x10")), FAILED, False),
    ("cl-trailing-garbage", raw(cl_head(b"Content-Length: {N}x")), FAILED, False),
    ("cl-with-spaces", raw(cl_head(b"Content-Length:   {N}  ")), OK, True),
    ("body-longer-than-cl", raw(correct, b"garbage"), OK, False),
    ("extra-crlf-after-body", raw(correct, b"\r\n"), OK, False),
    ("pipelined-extra-response", raw(lambda m: correct(m) + http(rpc_body(rid(m) + 1, echo_result("mallory")))),
     OK, False),
    ("stale-response-first", raw(lambda m: http(rpc_body(rid(m) - 1, echo_result("mallory"))) + correct(m)),
     FAILED, False),
    # ---- connection management
    ("connection-close-server-closes", raw(cl_head(b"Content-Length: {N}", b"Connection: close"), close=True),
     OK, False),
    ("connection-close-server-stays", raw(cl_head(b"Content-Length: {N}", b"Connection: close")), OK, False),
    ("connection-keep-alive-close", raw(cl_head(b"Content-Length: {N}", b"Connection: keep-alive, close")),
     OK, False),
    ("http10-with-length", raw(cl_head(b"Content-Length: {N}", status=b"HTTP/1.0 200 OK")), OK, False),
    ("http10-close-delimited", raw(cl_head(status=b"HTTP/1.0 200 OK"), close=True), OK, False),
    ("http11-close-delimited", raw(cl_head(), close=True), OK, False),
    ("unframed-and-kept-open", raw(cl_head()), TIMEOUT, False),
    ("closed-without-answer", raw(close=True), OK, False),  # reused connection: the one allowed retry
    ("truncated-body", raw(lambda m: correct(m)[:-3], close=True), UNAVAILABLE, False),
    ("truncated-head", raw(b"HTTP/1.1 200 OK\r\nContent-Ty", close=True), UNAVAILABLE, False),
    ("truncated-chunked", raw(lambda m: chunked(body(m))[:-5], close=True), UNAVAILABLE, False),
    # ---- chunked framing
    ("chunked", raw(lambda m: chunked(body(m))), OK, True),
    ("chunked-upper-case", raw(lambda m: chunked(body(m), te=b"Chunked")), OK, True),
    ("chunked-extensions", raw(lambda m: head(b"HTTP/1.1 200 OK", b"Content-Type: application/json",
                                              b"Transfer-Encoding: chunked")
                               + b"3;name=value;flag\r\n" + body(m)[:3] + b"\r\n"
                               + b"%X;q=\"quoted\"\r\n" % (len(body(m)) - 3) + body(m)[3:] + b"\r\n0\r\n\r\n"),
     OK, True),
    ("chunked-trailer-cannot-set-headers", raw(lambda m: chunked(
        body(m), trailer=b"Content-Type: text/event-stream\r\nContent-Length: 0\r\n")), OK, True),
    ("te-gzip-chunked", raw(lambda m: chunked(body(m), te=b"gzip, chunked")), FAILED, False),
    ("te-chunked-twice", raw(lambda m: chunked(body(m), te=b"chunked, chunked")), FAILED, False),
    ("te-identity", raw(lambda m: chunked(body(m), te=b"identity")), FAILED, False),
    ("chunk-size-17-digits", raw(lambda m: head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked")
                                 + b"1" * 17 + b"\r\n"), FAILED, False),
    ("chunk-size-0x", raw(lambda m: head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked") + b"0x2\r\n{}\r\n"),
     FAILED, False),
    ("chunk-size-space", raw(lambda m: head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked") + b"2 \r\n{}\r\n"),
     FAILED, False),
    ("chunk-size-negative", raw(lambda m: head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked") + b"-2\r\n{}\r\n"),
     FAILED, False),
    ("chunk-without-crlf", raw(lambda m: head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked")
                               + b"2\r\n{}XX0\r\n\r\n"), FAILED, False),
    ("chunk-lf-only", raw(lambda m: head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked") + b"2\n{}\n0\n\n"),
     FAILED, False),
    # ---- malformed heads
    ("bare-lf-head", raw(lambda m: correct(m).replace(b"\r\n", b"\n")), FAILED, False),
    ("obs-fold", raw(cl_head(b"Content-Length: {N}", b"X-A: 1", b" folded")), FAILED, False),
    ("nul-in-value", raw(cl_head(b"Content-Length: {N}", b"X-A: a\x00b")), FAILED, False),
    ("bare-cr-in-value", raw(cl_head(b"Content-Length: {N}", b"X-A: a\rb")), FAILED, False),
    ("space-in-name", raw(cl_head(b"Content-Length: {N}", b"Content Type: text/plain")), FAILED, False),
    ("space-before-colon", raw(cl_head(b"Content-Length : {N}")), FAILED, False),
    ("huge-head", raw(cl_head(b"Content-Length: {N}", b"X-A: " + b"a" * 70_000)), FAILED, False),
    ("no-reason-phrase", raw(cl_head(b"Content-Length: {N}", status=b"HTTP/1.1 200")), OK, True),
    ("four-digit-status", raw(cl_head(b"Content-Length: {N}", status=b"HTTP/1.1 2000 OK")), FAILED, False),
    ("http2-status-line", raw(cl_head(b"Content-Length: {N}", status=b"HTTP/2 200 OK")), FAILED, False),
    ("icy-status-line", raw(cl_head(b"Content-Length: {N}", status=b"ICY 200 OK")), FAILED, False),
    ("leading-crlf", raw(b"\r\n", correct), FAILED, False),
    ("two-content-types", raw(cl_head(b"Content-Length: {N}", b"Content-Type: text/event-stream")), FAILED, False),
    ("204-with-body", raw(cl_head(b"Content-Length: {N}", status=b"HTTP/1.1 204 No Content")), FAILED, False),
    ("304-with-body", raw(cl_head(b"Content-Length: {N}", status=b"HTTP/1.1 304 Not Modified")), FAILED, False),
    ("json-error-status", raw(lambda m: http(orjson.dumps({"jsonrpc": "2.0", "id": rid(m), "error": {
        "code": -32603, "message": "x"}}), status=b"500 Internal Server Error")), FAILED, True),
    ("plain-text-503", raw(http(b"busy", content_type=b"text/plain", status=b"503 Service Unavailable")),
     UNAVAILABLE, False),  # read refused it: closed, though well framed
    ("json-with-charset", raw(lambda m: http(body(m), content_type=b"application/json; charset=utf-8")), OK, True),
    # ---- JSON-RPC ids and shapes in a JSON answer
    ("id-as-string", raw(lambda m: http(body(m, str(rid(m))))), FAILED, False),
    ("id-as-float", raw(lambda m: http(body(m, float(rid(m))))), FAILED, False),
    ("id-as-true", raw(lambda m: http(body(m, True))), FAILED, False),
    ("id-as-big-int", raw(lambda m: http(body(m).replace(b'"id":%d' % rid(m), b'"id":%d' % (2**64 + rid(m))))),
     FAILED, False),
    ("id-missing", json_answer(lambda m: {"jsonrpc": "2.0", "result": result_of(m)}), FAILED, False),
    ("id-null", json_answer(lambda m: {"jsonrpc": "2.0", "id": None, "result": result_of(m)}), FAILED, False),
    ("id-of-earlier-request", raw(lambda m: http(body(m, rid(m) - 1))), FAILED, False),
    ("id-of-later-request", raw(lambda m: http(body(m, rid(m) + 1))), FAILED, False),
    ("batch-array", raw(lambda m: http(b"[" + body(m) + b"]")), FAILED, False),
    ("notification-as-answer", json_answer(lambda m: {"jsonrpc": "2.0", "method": "notifications/message"}),
     FAILED, False),
    ("request-as-answer", json_answer(lambda m: {"jsonrpc": "2.0", "id": rid(m), "method": "x"}), FAILED, False),
    ("result-and-error", json_answer(lambda m: {"jsonrpc": "2.0", "id": rid(m), "result": result_of(m),
                                                "error": {"code": 1, "message": "x"}}), FAILED, False),
    ("neither-result-nor-error", json_answer(lambda m: {"jsonrpc": "2.0", "id": rid(m)}), FAILED, False),
    ("no-jsonrpc-member", json_answer(lambda m: {"id": rid(m), "result": result_of(m)}), FAILED, False),
    ("not-json", raw(http(b"{not json")), FAILED, False),
    ("scalar-json", raw(http(b"42")), FAILED, False),
    # ---- SSE answers
    ("sse-ours", raw(sse(OURS)), OK, True),
    ("sse-notification-then-ours", raw(sse(NOTE, OURS)), OK, True),
    ("sse-server-request-then-ours", raw(sse(SERVER_REQUEST, OURS)), OK, True),
    ("sse-crlf", raw(sse(NOTE, OURS, newline=b"\r\n")), OK, True),
    ("sse-cr", raw(sse(NOTE, OURS, newline=b"\r")), OK, True),
    ("sse-fields-and-comments", raw(sse(b": comment\nevent: message\nid: 5\nretry: 10\n" + OURS)), OK, True),
    ("sse-other-id-before-ours", raw(sse(OTHER, OURS)), FAILED, False),
    ("sse-other-id-after-ours", raw(sse(OURS, OTHER)), FAILED, False),
    ("sse-ours-twice", raw(sse(OURS, OURS)), FAILED, False),
    ("sse-only-notifications", raw(sse(NOTE, NOTE)), FAILED, False),
    ("sse-id-as-string", raw(sse(OURS.replace(b'"id":{ID}', b'"id":"{ID}"'))), FAILED, False),
    ("sse-id-null", raw(sse(OURS.replace(b'"id":{ID}', b'"id":null'))), FAILED, False),
    ("sse-batch", raw(sse(b"data: [" + OURS[6:] + b"]")), FAILED, False),
    ("sse-invalid-utf8", raw(sse(OURS, b"data: \xff\xfe")), FAILED, False),
    ("sse-invalid-json", raw(sse(b"data: {oops", OURS)), FAILED, False),
    ("sse-unterminated-ours", raw(lambda m: sse(OURS)(m).removesuffix(b"\n\n").replace(
        b"Content-Length: %d" % len(sse(OURS)(m).split(b"\r\n\r\n", 1)[1]),
        b"Content-Length: %d" % (len(sse(OURS)(m).split(b"\r\n\r\n", 1)[1]) - 2))), OK, True),
    ("sse-unterminated-other-id", raw(http(NOTE + b"\n\n" + OTHER, content_type=b"text/event-stream")),
     FAILED, False),
]

EXPECTED: dict[str, type[Exception]] = {FAILED: UpstreamFailed, UNAVAILABLE: UpstreamUnavailable,
                                        TIMEOUT: UpstreamTimeout}


@pytest.mark.parametrize(("reply", "outcome", "reused"), [row[1:] for row in ROWS], ids=[row[0] for row in ROWS])
async def test_a_hostile_answer_never_reaches_another_call(reply: Build, outcome: str, reused: bool) -> None:
    """Each row's call gets its own answer or a gateway error; the calls after it get their own answers."""
    async with hostile_upstream(lambda m, i: reply(m) if i == 0 else None) as upstream:
        async with relay_to(upstream) as connection:
            if outcome == OK:
                assert await echo(connection, "alice") == "alice"
            else:
                with pytest.raises(EXPECTED[outcome]) as caught:
                    await echo(connection, "alice", timeout_s=0.5 if outcome == TIMEOUT else 10.0)
                assert not isinstance(caught.value, ResultTooLarge)
            assert await echo(connection, "bob") == "bob"
            assert await echo(connection, "carol") == "carol"
    assert (upstream.connections == 1) is reused, "a doubtful connection must never be reused"


async def test_a_late_extra_response_never_answers_the_next_call() -> None:
    """An extra response written after the answer is either dropped with its connection or refused by id."""
    extra = raw(correct, lambda m: http(rpc_body(rid(m), echo_result("mallory"))), pause_s=0.05)
    async with hostile_upstream(lambda m, i: extra(m) if i == 0 else None) as upstream:
        async with relay_to(upstream) as connection:
            assert await echo(connection, "alice") == "alice"
            try:
                assert await echo(connection, "bob") == "bob"  # the extra arrived while idle: connection dropped
            except UpstreamFailed:
                pass  # it arrived after bob's request was written: its id is alice's, so bob's call fails
            assert await echo(connection, "carol") == "carol"


# ---------------------------------------------------------------------------- two callers, alternating


def _misbehaving(m: dict[str, Any], i: int) -> Reply | None:
    """A different misbehaviour on most calls: interim noise, stale and duplicated answers, wrong ids."""
    stale = http(rpc_body(rid(m) - 1, echo_result("stale")))
    kinds = [
        None,
        Reply((b"HTTP/1.1 103 Early Hints\r\n\r\n", correct(m)), pause_s=0.01),
        Reply((correct(m) + correct(m),)),               # the same answer twice: the second is extra
        Reply((stale + correct(m),)),                    # the previous call's answer first
        Reply((http(body(m, str(rid(m)))),)),            # the right id as a string
        Reply((correct(m), http(rpc_body(rid(m) + 1, echo_result("future")))), pause_s=0.01),  # next id
        Reply((correct(m)[:-2],), close=True),           # truncated
    ]
    return kinds[i % len(kinds)]


async def test_two_callers_alternating_each_get_only_their_own_answers() -> None:
    """alice and bob take turns (and overlap) against a misbehaving upstream: never the other's answer."""
    async with hostile_upstream(_misbehaving) as upstream, relay_to(upstream) as connection:
        received: dict[str, list[str]] = {"alice": [], "bob": []}
        failures = 0

        async def call(name: str, n: int) -> None:
            nonlocal failures
            try:
                received[name].append(await echo(connection, f"{name}-{n}"))
            except (UpstreamFailed, UpstreamUnavailable):
                failures += 1

        for n in range(30):
            await call("alice", n)
            await call("bob", n)
        for n in range(30, 45):  # overlapping calls share the pool
            await asyncio.gather(call("alice", n), call("bob", n))
    for name, answers in received.items():
        assert answers, "some calls must succeed"
        assert all(a.startswith(f"{name}-") for a in answers), answers
        assert len(set(answers)) == len(answers), "an answer was delivered twice"
    assert failures > 0  # the upstream's misbehaviour was noticed, not hidden


# ---------------------------------------------------------------------------- the id rule, without sockets


def _json(message: Any) -> Response:
    return Response(200, {"content-type": "application/json"}, orjson.dumps(message))


@pytest.mark.parametrize("answered", [b"true", b"1.0", b"1e0", b'"1"', b'" 1"', b"[1]", b'{"id":1}', b"null", b"2",
                                      b"0", b"-1", b"18446744073709551617", b"false"])
def test_only_the_exact_integer_id_answers_request_one(answered: bytes) -> None:
    """1 is answered by 1 alone: not true, 1.0, "1" or anything else Python might call equal."""
    template = b'{"jsonrpc":"2.0","id":%s,"result":{"content":[]}}'
    with pytest.raises(UpstreamFailed):
        read_answer(Response(200, {"content-type": "application/json"}, template % answered), 1, max_depth=64)
    assert read_answer(_json(orjson.loads(template % b"1")), 1, max_depth=64)["result"] == {"content": []}


# ---------------------------------------------------------------------------- stdio children


REPO = Path(__file__).resolve().parents[2]
OK_ROW, FAILS, DROPPED = "ok", "fails", "dropped"
# (mode of the child's answer, what the call sees); the connection always survives
STDIO_ROWS = [
    ("ok", OK_ROW), ("junk-then-ok", OK_ROW), ("twice", OK_ROW), ("notification-then-ok", OK_ROW),
    ("id-as-string", FAILS), ("id-as-float", FAILS), ("result-and-error", FAILS), ("neither", FAILS),
    ("id-as-true", DROPPED), ("id-unknown", DROPPED), ("id-null", DROPPED), ("id-missing", DROPPED),
    ("batch", DROPPED),
]


@pytest.mark.parametrize(("mode", "outcome"), STDIO_ROWS, ids=[r[0] for r in STDIO_ROWS])
async def test_a_stdio_answer_reaches_only_the_call_whose_id_it_carries(mode: str, outcome: str) -> None:
    """Exact ids only: a type-confused id fails that call (-31004), an id of no request is dropped."""
    cfg = StdioService.model_validate({"transport": "stdio", "command": sys.executable,
                                       "args": ["-m", "tests.security.hostile_stdio"], "cwd": str(REPO),
                                       "env": {"PYTHONPATH": str(REPO)}})
    async with SdkConnector("hostile", cfg, os.environ).open() as connection:
        async def call(mode: str, who: str, timeout_s: float = 20.0) -> str:
            result = await connection.call_tool("echo", {"who": who, "mode": mode}, timeout_s=timeout_s,
                                                request_id="r")
            return str(result["content"][0]["text"])

        if outcome == OK_ROW:
            assert await call(mode, "alice") == "alice"
        elif outcome == FAILS:
            with pytest.raises(UpstreamFailed) as caught:
                await call(mode, "alice")
            assert caught.value.code == -31004
        else:
            with pytest.raises(UpstreamTimeout):  # nothing answered this call: it can only time out
                await call(mode, "alice", timeout_s=1.0)
        assert await call("ok", "bob") == "bob"
        assert await call("ok", "carol") == "carol"


# ---------------------------------------------------------------------------- legacy HTTP, through the SDK client


LEGACY_ROWS: list[tuple[str, Build, str]] = [
    ("ok", raw(correct), OK),
    ("id-of-another-request", raw(lambda m: http(body(m, rid(m) + 1))), FAILED),
    ("id-as-string", raw(lambda m: http(body(m, str(rid(m))))), FAILED),
    ("id-as-float", raw(lambda m: http(body(m, float(rid(m))))), FAILED),
    ("id-null", json_answer(lambda m: {"jsonrpc": "2.0", "id": None, "result": result_of(m)}), FAILED),
    ("id-missing", json_answer(lambda m: {"jsonrpc": "2.0", "result": result_of(m)}), FAILED),
    ("batch-array", raw(lambda m: http(b"[" + body(m) + b"]")), FAILED),
    ("sse-ours", raw(sse(NOTE, OURS)), OK),
    ("sse-other-id-first", raw(sse(OTHER, OURS)), FAILED),
    ("sse-id-as-string", raw(sse(OURS.replace(b'"id":{ID}', b'"id":"{ID}"'))), FAILED),
    ("sse-unterminated-other-id", raw(lambda m: http(OTHER, content_type=b"text/event-stream")), FAILED),
]


@pytest.mark.parametrize(("reply", "outcome"), [r[1:] for r in LEGACY_ROWS], ids=[r[0] for r in LEGACY_ROWS])
async def test_a_legacy_answer_must_carry_its_own_posts_id(reply: Build, outcome: str) -> None:
    """Through the SDK client too, an answer with any other id fails that call and no other."""
    async with hostile_upstream(lambda m, i: reply(m) if i == 0 else None, legacy=True) as upstream:
        async with sdk_client_to(upstream) as connection:
            if outcome == OK:
                assert await echo(connection, "alice") == "alice"
            else:
                with pytest.raises(UpstreamFailed) as caught:
                    await echo(connection, "alice")
                assert caught.value.code == -31004
            assert await echo(connection, "bob") == "bob"


async def test_a_legacy_answer_naming_another_callers_request_is_not_delivered_to_it() -> None:
    """alice's POST answered with bob's (next) id: alice's call fails, bob still gets his own answer."""
    def script(m: dict[str, Any], i: int) -> Reply | None:
        if who(m) == "alice":  # answered while bob's request is in flight, with bob's id
            return Reply((b"", http(rpc_body(rid(m) + 1, echo_result("mallory")))), pause_s=0.3)
        return Reply((b"", correct(m, legacy=True)), pause_s=0.6)  # bob's own answer comes later

    async with hostile_upstream(script, legacy=True) as upstream, sdk_client_to(upstream) as connection:
        results = await asyncio.gather(echo(connection, "alice"), echo(connection, "bob"), return_exceptions=True)
    assert isinstance(results[0], UpstreamFailed) and results[0].code == -31004
    assert results[1] == "bob"


# ---------------------------------------------------------------------------- end to end, two principals


async def test_two_principals_through_the_gateway_each_get_only_their_own_answers(tmp_path: Path) -> None:
    """alice's and bob's tokens, one gateway, one misbehaving upstream: nobody sees the other's answer."""
    from mcp import MCPError

    from portcullis.pinning import definition_hash
    from tests.e2e.harness import GatewayProcess, manifest_from_live, write_deployment
    from tests.security.hostile_http import ECHO_TOOL

    async with hostile_upstream(_misbehaving) as upstream:
        root = write_deployment(tmp_path / "deployment", {
            "version": 1, "identity": {"allow_insecure_dev_issuer": True},
            "services": {"hostile": {"transport": "http", "url": upstream.url, "timeout_s": 5}}},
            [manifest_from_live("hostile", ECHO_TOOL, pin=definition_hash(ECHO_TOOL))])
        gateway = GatewayProcess(root)
        try:
            await asyncio.to_thread(gateway.wait_ready)  # the upstream answers from this loop meanwhile
            received: dict[str, list[str]] = {"alice": [], "bob": []}
            errors: list[int] = []
            async with gateway.client(token=gateway.token(user="alice", agent="agent-a")) as alice, \
                    gateway.client(token=gateway.token(user="bob", agent="agent-b")) as bob:
                async def call(client: Any, name: str, n: int) -> None:
                    try:
                        result = await client.call_tool("hostile.echo", {"who": f"{name}-{n}"})
                    except MCPError as exc:
                        errors.append(exc.error.code)
                        return
                    if result.is_error:
                        errors.append(0)
                    else:
                        received[name].append(result.content[0].text)

                for n in range(14):
                    await call(alice, "alice", n)
                    await call(bob, "bob", n)
                for n in range(14, 24):
                    await asyncio.gather(call(alice, "alice", n), call(bob, "bob", n))
        finally:
            await asyncio.to_thread(gateway.stop)
    for name, answers in received.items():
        assert answers and all(a.startswith(f"{name}-") for a in answers), answers
    assert errors and set(errors) <= {-31004, -31002}, errors
