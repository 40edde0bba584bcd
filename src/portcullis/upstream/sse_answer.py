"""One upstream SSE answer to a relayed request, read event by event as its bytes arrive.

The raw relay (:mod:`.http_relay`) feeds each body chunk of a ``text/event-stream`` answer to
:meth:`SseAnswer.feed` the moment the pool receives it, so a call's progress and log notifications
reach its caller while the call runs, not when the answer ends. The rules are those of the whole
answer, applied per event:

1. An event ends at a blank line (``\\n\\n``, ``\\r\\n\\r\\n`` or ``\\r\\r``, mixed too); a line end
   or an event split across TCP reads is joined first (a chunk's final ``\\r`` waits for the next
   chunk: it may be half of a CRLF). What is left when the answer ends counts as one last event.
2. An event's ``data:`` lines, joined with ``\\n``, are one JSON-RPC message; other fields and
   comments are ignored. An event that is not UTF-8 or not JSON fails the call.
3. A message with a ``method`` is a notification or a server request, never the answer:
   ``notifications/tools/list_changed`` is remembered (reported when the answer is complete, as
   before); ``notifications/progress`` and ``notifications/message`` without an ``id`` go to
   ``on_note(after, message)`` at once, ``after`` saying whether the response came before it.
4. Anything else must be one response object carrying the request's id (same JSON type and
   value); a second response, another request's id or a batch fails the call.

Memory: the body as a whole is bounded by the pool (``max_result_bytes``), and an event is held
only until its blank line, so nothing here grows past that bound. Pure: bytes in, calls out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from portcullis.errors import RESULT_TOO_DEEP, ResultTooLarge, UpstreamFailed
from portcullis.notifications import MESSAGE, PROGRESS
from portcullis.upstream.http11_response import ResponseHead

TOOLS_CHANGED = "notifications/tools/list_changed"
Note = Callable[[bool, dict[str, Any]], None]


class SseAnswer:
    """Incremental reader of one SSE answer to ``request_id`` (see the module docstring)."""

    __slots__ = ("_buf", "_cr", "_on_note", "_request_id", "_scan", "changed", "found")

    def __init__(self, request_id: int, on_note: Note | None = None) -> None:
        self._request_id = request_id
        self._on_note = on_note
        self._buf = bytearray()
        self._scan = 0  # where the next search for a blank line starts
        self._cr = False  # the last chunk ended with a CR held back (maybe half of a CRLF)
        self.found: dict[str, Any] | None = None
        self.changed = False

    def feed(self, data: bytes) -> None:
        """Take the next body bytes; handles every event they complete. Raises :class:`UpstreamFailed`."""
        if not data:
            return
        if self._cr:
            data = b"\r" + data
            self._cr = False
        if data.endswith(b"\r"):
            data = data[:-1]
            self._cr = True
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf = self._buf
        buf += data
        while True:
            end = buf.find(b"\n\n", self._scan)
            if end < 0:
                self._scan = max(0, len(buf) - 1)  # a final LF may be half of the blank line
                return
            event = bytes(buf[:end])
            del buf[:end + 2]
            self._scan = 0
            self._event(event)

    def watch(self, head: ResponseHead, chunk: bytes) -> None:
        """The pool's watch (:meth:`~portcullis.upstream.http11.Http11Pool.exchange`): feeds an SSE
        answer's chunks; any other answer is read whole when it ends."""
        if media_type(head.headers) == "text/event-stream":
            self.feed(chunk)

    def finish(self) -> tuple[dict[str, Any], bool]:
        """The answer ended: (the response, whether the stream announced a tool-list change)."""
        if self._cr:
            self._buf += b"\n"
            self._cr = False
        if self._buf:
            rest = bytes(self._buf)
            self._buf.clear()
            for event in rest.split(b"\n\n"):
                self._event(event)
        if self.found is None:
            raise UpstreamFailed(detail="upstream stream ended without a response")
        return self.found, self.changed

    def _event(self, event: bytes) -> None:
        try:
            lines = event.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            raise UpstreamFailed(detail="upstream SSE is not UTF-8") from None
        text = "\n".join(line[5:].removeprefix(" ") for line in lines if line.startswith("data:"))
        if not text:
            return
        message = parse(text, "upstream sent invalid JSON in SSE")
        if type(message) is dict and "method" in message:
            method = message["method"]
            self.changed = self.changed or method == TOOLS_CHANGED
            if self._on_note is not None and "id" not in message and method in (PROGRESS, MESSAGE):
                self._on_note(self.found is not None, message)  # this request's: a 2026-07-28 answer carries no other
            return  # a notification or a server request: not an answer
        if not is_response(message):
            raise UpstreamFailed(detail="upstream SSE event is not a JSON-RPC message")
        check_id(message, self._request_id)
        if self.found is not None:
            raise UpstreamFailed(detail="upstream SSE carries two responses")
        self.found = message


def media_type(headers: dict[str, str]) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


def parse(data: bytes | str, what: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):  # deeper than the parser goes (1024): deeper than any limit
            raise ResultTooLarge(RESULT_TOO_DEEP, detail="answer nested too deeply to parse") from None
        raise UpstreamFailed(detail=what) from None


def is_response(message: Any) -> bool:
    """A response object: a dict with no ``method`` and exactly one of ``result`` / ``error``."""
    return (type(message) is dict and "method" not in message and message.get("jsonrpc") == "2.0"
            and ("result" in message) != ("error" in message))


def check_id(message: dict[str, Any], request_id: int) -> None:
    answered = message.get("id")
    if type(answered) is not int or answered != request_id:  # bool, float and str ids never match
        raise UpstreamFailed(detail="upstream answer carries another request's id")
