"""Strict JSON-RPC 2.0 parsing for the front door.

The body has already been bounded by the transport. Here, in order:

1. It must be UTF-8.
2. Its work is bounded before it is parsed: at most ``max_values`` JSON values (objects, arrays,
   strings, numbers, literals, keys included), counted lexically at C speed. Parsing costs a few
   hundred nanoseconds of event-loop time per value, so this bound, not the byte limit, is what
   keeps one request from blocking the loop (a 1 MiB body of ``[{},{},…]`` is 350,000 objects).
3. It must be JSON with no duplicate object keys (``json.loads`` would silently keep the last one,
   so two layers could read two different values), no ``NaN``/``Infinity``, no number that
   overflows to infinity, nesting no deeper than ``max_depth``. An integer literal of more than
   20 characters is not converted (thousands of digits cost quadratic time; none fits 64 bits).
4. It must be exactly one JSON-RPC request, notification or response object (batches were
   removed from MCP in 2025-06-18) whose ``id``, if any, can be echoed: a string of at most 256
   characters without unpaired surrogates, or an integer in the signed 64-bit range.
5. Every value in it must survive serialisation unchanged (no unpaired surrogate anywhere, no
   integer beyond 64 bits), because the gateway forwards, audits and logs it with ``orjson``.

Steps 4 and 5 are Invalid Request (-32600); everything before them is Parse error (-32700). All
of it happens before anything runs, so a refused message never has a side effect.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import orjson

from portcullis.errors import InvalidRequest, ParseError

DEFAULT_MAX_VALUES = 20_000
_MAX_ID_CHARS = 256
_INT64 = (-(2**63), 2**63 - 1)


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateKey
    return obj


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError("number overflows to infinity")
    return value


class _Overlong:
    """Stands in for an integer literal of more than 20 characters: no 64-bit integer is that long,
    and converting thousands of digits costs quadratic time. It fails the id check and orjson."""

    __slots__ = ()


_OVERLONG = _Overlong()


def _bounded_int(text: str) -> int | _Overlong:
    return int(text) if len(text) <= 20 else _OVERLONG


def _reject_constant(name: str) -> Any:
    raise ValueError(name)  # NaN / Infinity are not JSON


def count_values(text: str, limit: int) -> int:
    """An upper bound on the JSON values in ``text`` (tight enough to enforce ``limit``), at C speed.

    Every value but the first is preceded by ``,``, ``:`` or an opening bracket, so counting those
    bounds the values (keys included; an empty container counts twice). The quick count also sees
    such characters inside strings; only when it exceeds ``limit`` are the strings cut out and the
    rest counted again. Escaped backslashes, then escaped quotes, are removed first (``replace``
    pairs backslashes left to right, as a JSON parser does), so every quote left delimits a string;
    each string is a value, so more than ``limit`` of them is over the limit without looking further.
    """
    quick = text.count(",") + text.count(":") + text.count("[") + text.count("{") + 1
    if quick <= limit:
        return quick
    unescaped = text.replace("\\\\", "").replace('\\"', "")
    strings = unescaped.count('"') // 2
    if strings > limit:
        return strings
    outside = "".join(unescaped.split('"')[0::2])
    return outside.count(",") + outside.count(":") + outside.count("[") + outside.count("{") + 1


def depth_exceeds(value: Any, limit: int, *, raw: bytes | None = None) -> bool:
    """True when containers nest deeper than ``limit`` (the top-level container is depth 1).

    Iterative, one level at a time (no recursion on hostile input). ``raw``, the text ``value``
    was parsed from, short-cuts the common case: nesting can never exceed the number of ``[``
    and ``{`` bytes in it, which C counts in well under a microsecond for a typical message.
    Also used on upstream results (:mod:`portcullis.upstream`)."""
    if raw is not None and raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    level = [value] if isinstance(value, dict | list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        nxt: list[Any] = []
        for node in level:
            nxt += [c for c in (node.values() if isinstance(node, dict) else node) if isinstance(c, dict | list)]
        level = nxt
    return False


def loads_strict(body: bytes, *, max_depth: int, max_values: int = DEFAULT_MAX_VALUES) -> Any:
    """Parse ``body`` as strict JSON or raise :class:`ParseError` with a precise, fixed message."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("Parse error: body is not valid UTF-8") from None
    if count_values(text, max_values) > max_values:
        raise ParseError("Parse error: too many JSON values")
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant,
                           parse_float=_finite_float, parse_int=_bounded_int)
    except _DuplicateKey:
        raise ParseError("Parse error: duplicate key in JSON object") from None
    except RecursionError:
        raise ParseError("Parse error: JSON nested too deeply") from None
    except ValueError:
        raise ParseError("Parse error: body is not valid JSON") from None
    # only a body with more brackets than the limit can nest past it: most never pay for the walk
    if text.count("[") + text.count("{") > max_depth and depth_exceeds(value, max_depth):
        raise ParseError("Parse error: JSON nested too deeply")
    return value


@dataclass(frozen=True, slots=True)
class Message:
    """One validated JSON-RPC message. ``id`` is absent (``has_id`` False) for notifications."""

    kind: str  # "request" | "notification" | "response"
    method: str
    params: dict[str, Any]
    id: Any = None
    has_id: bool = False


_ENVELOPE_KEYS = frozenset({"jsonrpc", "id", "method", "params"})
_RESPONSE_KEYS = frozenset({"jsonrpc", "id", "result", "error"})


def echoable_id(value: Any) -> bool:
    """Whether ``value`` is an id the gateway can send back byte for byte."""
    if type(value) is int:
        return _INT64[0] <= value <= _INT64[1]
    if type(value) is str:
        return len(value) <= _MAX_ID_CHARS and _is_scalar_text(value)
    return False


def _is_scalar_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # an unpaired surrogate: no encoder can write it
        return False
    return True


def parse_message(value: Any) -> Message:
    """Validate the JSON-RPC envelope; raise :class:`InvalidRequest` for anything else."""
    if isinstance(value, list):
        raise InvalidRequest("Invalid Request: batches are not supported")
    if not isinstance(value, dict) or value.get("jsonrpc") != "2.0":
        raise InvalidRequest("Invalid Request: not a JSON-RPC 2.0 object")
    has_id = "id" in value
    msg_id = value.get("id")
    if has_id and not echoable_id(msg_id):
        raise InvalidRequest("Invalid Request: id must be a string of at most 256 characters or a 64-bit integer")
    try:  # one C pass: the same check orjson makes when the gateway forwards, audits or logs the call
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        raise InvalidRequest("Invalid Request: a string with an unpaired surrogate or an integer beyond "
                             "64 bits") from None
    if "method" not in value:
        if has_id and ("result" in value) != ("error" in value) and value.keys() <= _RESPONSE_KEYS:
            return Message("response", "", {}, msg_id, True)
        raise InvalidRequest("Invalid Request: missing method")
    if not value.keys() <= _ENVELOPE_KEYS:
        raise InvalidRequest("Invalid Request: unexpected member in request")
    method = value["method"]
    if not isinstance(method, str) or not method or len(method) > 128:
        raise InvalidRequest("Invalid Request: method must be a non-empty string")
    params = value.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidRequest("Invalid Request: params must be an object")
    return Message("request" if has_id else "notification", method, params, msg_id, has_id)
