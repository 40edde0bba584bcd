"""The HTTP transport under the SDK client for legacy-era services: bounded, and answers matched.

The SDK client posts each JSON-RPC request on its own HTTP request, but it routes a JSON answer
by the id *inside* it: a service that answers one caller's POST with another request's id hands
that body to the other caller, whose call is still in flight. And it reads a JSON body whole,
however large. This transport sits under the SDK (an ``httpx2`` transport wrapper) and, for every
POST that carries a request:

1. reads at most ``max_body_bytes`` of the answer (JSON or SSE, counted as it streams);
2. requires every response in the answer to carry that POST's own id, in the same JSON type;
3. refuses a compressed answer (the gateway asks for ``identity``; a compressed body could
   expand past any limit).

When a rule fails, the rest of the answer is not read (its connection is closed, not reused) and
the SDK is given, in its place, a JSON-RPC error for that POST's id with the gateway's own code
(-31004, or -31005 for size), which :mod:`.sdk_client` turns back into the gateway's error. So the
failure stays with the one call whose answer broke the rules.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx2
import orjson

from portcullis.errors import ResultTooLarge, UpstreamFailed


def _error_body(request_id: int | str, error: type[UpstreamFailed]) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": request_id,
                         "error": {"code": error.code, "message": error.message}})


def _request_id(request: httpx2.Request) -> int | str | None:
    """The id of the JSON-RPC request this POST carries, or None (a notification, a response)."""
    try:
        message = orjson.loads(request.content)
    except (orjson.JSONDecodeError, httpx2.RequestNotRead):
        return None
    if isinstance(message, dict) and "method" in message and isinstance(message.get("id"), int | str):
        return message["id"]  # type: ignore[no-any-return]
    return None


def answers(message: Any, request_id: int | str) -> bool | None:
    """True if ``message`` is a response to ``request_id`` (same type and value), False if it is a
    response to anything else or not a JSON-RPC message, None if it is not a response."""
    if isinstance(message, dict) and "method" in message:
        return None  # a notification or a server request
    if not isinstance(message, dict) or ("result" in message) == ("error" in message):
        return False
    answered = message.get("id")
    return type(answered) is type(request_id) and answered == request_id


class GuardedTransport(httpx2.AsyncBaseTransport):
    """Wraps ``inner``; see the module docstring for the rules."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, *, max_body_bytes: int) -> None:
        self._inner = inner
        self._limit = max_body_bytes

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        expected = _request_id(request) if request.method == "POST" else None
        if expected is None:
            return response
        if response.headers.get("content-encoding", "identity").strip().lower() != "identity":
            return await self._replace(response, request, expected, UpstreamFailed)
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "text/event-stream" and response.status_code < 300:
            response.stream = _SseGuard(response.stream, expected, self._limit)
            return response
        body = bytearray()
        async for chunk in response.stream:  # type: ignore[union-attr]
            body += chunk
            if len(body) > self._limit:
                return await self._replace(response, request, expected, ResultTooLarge)
        await response.aclose()
        if content_type == "application/json" and 200 <= response.status_code < 300:
            try:
                verdict = answers(orjson.loads(body), expected)
            except orjson.JSONDecodeError:
                verdict = True  # not JSON: the SDK reports its own parse error for this call
            if verdict is not True:
                return await self._replace(response, request, expected, UpstreamFailed)
        return httpx2.Response(response.status_code, headers=response.headers, content=bytes(body),
                               request=request, extensions=response.extensions)

    async def aclose(self) -> None:
        await self._inner.aclose()

    @staticmethod
    async def _replace(response: httpx2.Response, request: httpx2.Request, request_id: int | str,
                       error: type[UpstreamFailed]) -> httpx2.Response:
        await response.aclose()  # unread: the connection is closed, never reused
        return httpx2.Response(200, headers={"content-type": "application/json"},
                               content=_error_body(request_id, error), request=request)


class _SseGuard(httpx2.AsyncByteStream):
    """Passes an SSE answer through event by event; the first broken rule ends it with an error event."""

    def __init__(self, inner: Any, request_id: int | str, limit: int) -> None:
        self._inner = inner
        self._id = request_id
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        pending = bytearray()
        size = 0
        async for chunk in self._inner:
            size += len(chunk)
            if size > self._limit:
                yield self._error_event(ResultTooLarge)
                return
            pending += chunk
            # line endings are normalised to LF; a CR at the end may be half of a CRLF, so it waits
            held = b"\r" if pending.endswith(b"\r") else b""
            text = bytes(pending[:len(pending) - len(held)]).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            *events, rest = text.split(b"\n\n")
            pending = bytearray(rest + held)
            for event in events:
                if not self._event_ok(event):
                    yield self._error_event(UpstreamFailed)
                    return
                yield event + b"\n\n"
        if pending:  # an event without its blank line: checked like any other
            if not self._event_ok(bytes(pending).replace(b"\r\n", b"\n").replace(b"\r", b"\n")):
                yield self._error_event(UpstreamFailed)
                return
            yield bytes(pending)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def _event_ok(self, event: bytes) -> bool:
        data = b"\n".join(line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:"))
        if not data:
            return True
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            return True  # the SDK reports its own parse error for this call
        return answers(message, self._id) is not False

    def _error_event(self, error: type[UpstreamFailed]) -> bytes:
        return b"event: message\ndata: " + _error_body(self._id, error) + b"\n\n"
