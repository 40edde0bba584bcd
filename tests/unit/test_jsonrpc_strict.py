"""Strict JSON and JSON-RPC envelope parsing."""

from __future__ import annotations

import pytest

from portcullis.errors import InvalidRequest, ParseError
from portcullis.transport.jsonrpc import loads_strict, parse_message


@pytest.mark.parametrize(("body", "message"), [
    (b'{"a":1,"a":2}', "duplicate key"),
    (b'{"jsonrpc":"2.0","params":{"x":1,"x":1}}', "duplicate key"),
    (b"[" * 100 + b"]" * 100, "nested too deeply"),
    (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    (b'{"a":NaN}', "not valid JSON"),
    (b'{"a":Infinity}', "not valid JSON"),
    (b"\xff\xfe{}", "not valid UTF-8"),
    (b"{", "not valid JSON"),
    (b"", "not valid JSON"),
])
def test_hostile_json_is_a_parse_error(body: bytes, message: str) -> None:
    """Duplicate keys, deep nesting, non-JSON constants and bad encodings are refused precisely."""
    with pytest.raises(ParseError) as caught:
        loads_strict(body, max_depth=64)
    assert message in caught.value.message


def test_nesting_at_the_limit_is_accepted() -> None:
    """Exactly max_depth levels of nesting parse."""
    assert loads_strict(b"[" * 64 + b"]" * 64, max_depth=64) is not None


@pytest.mark.parametrize("value", [
    [{"jsonrpc": "2.0", "id": 1, "method": "ping"}],
    {"jsonrpc": "1.0", "id": 1, "method": "ping"},
    {"id": 1, "method": "ping"},
    {"jsonrpc": "2.0", "id": 1.5, "method": "ping"},
    {"jsonrpc": "2.0", "id": True, "method": "ping"},
    {"jsonrpc": "2.0", "id": None, "method": "ping"},
    {"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"},
    {"jsonrpc": "2.0", "id": 1, "method": ""},
    {"jsonrpc": "2.0", "id": 1, "method": 7},
    {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1]},
    {"jsonrpc": "2.0", "id": 1, "method": "ping", "extra": 1},
    {"jsonrpc": "2.0", "id": 1},
    {"jsonrpc": "2.0", "id": 1, "result": {}, "error": {}},
    "ping",
])
def test_malformed_envelopes_are_invalid_requests(value: object) -> None:
    """Batches, wrong versions, bad ids, methods and params are Invalid Request."""
    with pytest.raises(InvalidRequest):
        parse_message(value)


def test_request_notification_and_response_are_told_apart() -> None:
    """An id makes a request, no id a notification, result/error without method a response."""
    assert parse_message({"jsonrpc": "2.0", "id": 3, "method": "ping"}).kind == "request"
    assert parse_message({"jsonrpc": "2.0", "method": "notifications/initialized"}).kind == "notification"
    assert parse_message({"jsonrpc": "2.0", "id": 3, "result": {}}).kind == "response"
