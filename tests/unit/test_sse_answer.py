"""The relay's incremental SSE reader (:mod:`portcullis.upstream.sse_answer`): events split anywhere
across reads give exactly what the whole answer gives, and notifications come out as they complete."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from portcullis.errors import UpstreamFailed
from portcullis.upstream.sse_answer import SseAnswer


def _event(message: dict[str, Any], newline: bytes = b"\n") -> bytes:
    return b"event: message" + newline + b"data: " + orjson.dumps(message) + newline + newline


PROGRESS = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 7, "progress": 1}}
LOG = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "é ✓"}}
OURS = {"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": "ünïcode"}]}}
CHANGED = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}


def _read(chunks: list[bytes]) -> tuple[dict[str, Any], bool, list[tuple[bool, Any]]]:
    notes: list[tuple[bool, Any]] = []
    answer = SseAnswer(7, lambda after, note: notes.append((after, note["params"])))
    for chunk in chunks:
        answer.feed(chunk)
    found, changed = answer.finish()
    return found, changed, notes


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_every_split_point_gives_the_same_answer(newline: bytes) -> None:
    """Split the answer into two reads at every byte (a CRLF, a UTF-8 character, a blank line cut in two)."""
    body = _event(PROGRESS, newline) + _event(CHANGED, newline) + _event(LOG, newline) + _event(OURS, newline) \
        + _event(LOG, newline)
    whole = _read([body])
    assert whole == (OURS, True, [(False, PROGRESS["params"]), (False, LOG["params"]), (True, LOG["params"])])
    for cut in range(1, len(body)):
        assert _read([body[:cut], body[cut:]]) == whole, cut
    assert _read([body[i:i + 1] for i in range(len(body))]) == whole  # one byte per read


def test_a_notification_comes_out_the_moment_its_event_is_complete() -> None:
    """Nothing waits for the end of the answer: the progress event is handed over before the result exists."""
    notes: list[tuple[bool, Any]] = []
    answer = SseAnswer(7, lambda after, note: notes.append((after, note)))
    event = _event(PROGRESS)
    answer.feed(event[:-1])
    assert notes == []  # one LF short of the blank line
    answer.feed(event[-1:])
    assert notes == [(False, PROGRESS)]
    answer.feed(_event(OURS))
    assert answer.finish() == (OURS, False)


def test_an_unterminated_last_event_still_counts() -> None:
    body = _event(PROGRESS) + _event(OURS).rstrip(b"\n")
    assert _read([body])[0] == OURS
    assert _read([body + b"\r"])[0] == OURS  # a final CR held back for a possible LF ends the answer too


HOSTILE = [
    ("not UTF-8", b"data: \xff\xfe\n\n" + _event(OURS), "not UTF-8"),
    ("a UTF-8 character cut by a blank line", "data: é".encode()[:-1] + b"\n\n" + _event(OURS), "not UTF-8"),
    ("invalid JSON", b"data: {oops\n\n" + _event(OURS), "invalid JSON"),
    ("another request's id", _event({**OURS, "id": 8}), "another request"),
    ("the id as a string", _event({**OURS, "id": "7"}), "another request"),
    ("two responses", _event(OURS) + _event(OURS), "two responses"),
    ("a batch", b"data: [" + orjson.dumps(OURS) + b"]\n\n", "not a JSON-RPC message"),
    ("no response", _event(PROGRESS), "without a response"),
]


@pytest.mark.parametrize(("case", "body", "detail"), HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_answers_fail_the_call_whatever_the_reads(case: str, body: bytes, detail: str) -> None:
    for chunks in ([body], [body[i:i + 1] for i in range(len(body))]):
        with pytest.raises(UpstreamFailed) as caught:
            _read(chunks)
        assert detail in str(caught.value.detail)


def test_a_server_request_or_a_notification_with_an_id_is_never_a_note() -> None:
    request = {"jsonrpc": "2.0", "id": 3, "method": "sampling/createMessage", "params": {}}
    noted = {**LOG, "id": 4}
    assert _read([_event(request) + _event(noted) + _event(OURS)]) == (OURS, False, [])
