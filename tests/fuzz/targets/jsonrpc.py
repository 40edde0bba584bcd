"""Fuzz target: the front door's strict JSON and JSON-RPC envelope parser.

Properties checked for every input the parser accepts:

1. The id (when present) is echoable: ``orjson`` writes it and reads back exactly the same value.
2. The whole message survives ``orjson`` unchanged (what the gateway forwards, audits and logs).
3. No object had a duplicate key (a lenient parse of the same text finds the same number of
   object members) and nothing nests deeper than the limit.
4. The lexical value count never under-counts: at or under the limit, it is at least the true
   number of values.

Inputs starting with ``0x00`` are wrapped as the ``id`` of a ``ping`` request, so the fuzzer
reaches id handling directly. Only :class:`ParseError` and :class:`InvalidRequest` are expected
rejections; anything else that escapes is a bug.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from portcullis.errors import InvalidRequest, ParseError
from portcullis.transport.jsonrpc import count_values, echoable_id, loads_strict, parse_message

MAX_DEPTH = 16
MAX_VALUES = 500


def _values_and_members(value: Any, depth: int = 1) -> tuple[int, int, int]:
    """(values, object members, deepest container level) of a parsed value."""
    if isinstance(value, dict):
        counts = [_values_and_members(v, depth + 1) for v in value.values()]
        return (1 + len(value) + sum(c[0] for c in counts), len(value) + sum(c[1] for c in counts),
                max([depth, *(c[2] for c in counts)]))
    if isinstance(value, list):
        counts = [_values_and_members(v, depth + 1) for v in value]
        return 1 + sum(c[0] for c in counts), sum(c[1] for c in counts), max([depth, *(c[2] for c in counts)])
    return 1, 0, depth - 1


def _lenient_members(text: str) -> int:
    members = 0

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal members
        members += len(pairs)
        return dict(pairs)

    json.loads(text, object_pairs_hook=hook)
    return members


def fuzz_one(data: bytes) -> None:
    if data[:1] == b"\x00":
        data = b'{"jsonrpc":"2.0","id":' + data[1:] + b',"method":"ping"}'
    try:
        message = parse_message(loads_strict(data, max_depth=MAX_DEPTH, max_values=MAX_VALUES))
    except (ParseError, InvalidRequest):
        return
    value = json.loads(data)  # accepted input is plain JSON too
    if message.has_id:
        assert echoable_id(message.id), message.id
        assert orjson.loads(orjson.dumps({"id": message.id}))["id"] == message.id
    assert orjson.loads(orjson.dumps(value)) == value
    values, members, depth = _values_and_members(value)
    assert depth <= MAX_DEPTH, depth
    text = data.decode("utf-8")
    assert _lenient_members(text) == members, "a duplicate key was accepted"
    for limit in (values - 1, values, MAX_VALUES):
        counted = count_values(text, limit)
        assert counted > limit or counted >= values, (limit, counted, values)
