"""Strict JSON-RPC 2.0 parsing for the front door.

The body has already been bounded by the transport. Here it must be UTF-8 JSON with no
duplicate object keys (``json.loads`` would silently keep the last one, so two layers could
read two different values), nesting no deeper than the configured limit, and exactly one
JSON-RPC request, notification or response object (batches were removed from MCP in
2025-06-18).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from portcullis.errors import InvalidRequest, ParseError


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateKey
    return obj


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
        level = [child for node in level for child in (node.values() if isinstance(node, dict) else node)
                 if isinstance(child, dict | list)]
    return False


def loads_strict(body: bytes, *, max_depth: int) -> Any:
    """Parse ``body`` as strict JSON or raise :class:`ParseError` with a precise, fixed message."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("Parse error: body is not valid UTF-8") from None
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except _DuplicateKey:
        raise ParseError("Parse error: duplicate key in JSON object") from None
    except RecursionError:
        raise ParseError("Parse error: JSON nested too deeply") from None
    except ValueError:
        raise ParseError("Parse error: body is not valid JSON") from None
    if depth_exceeds(value, max_depth, raw=body):
        raise ParseError("Parse error: JSON nested too deeply")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(name)  # NaN / Infinity are not JSON


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


def parse_message(value: Any) -> Message:
    """Validate the JSON-RPC envelope; raise :class:`InvalidRequest` for anything else."""
    if isinstance(value, list):
        raise InvalidRequest("Invalid Request: batches are not supported")
    if not isinstance(value, dict) or value.get("jsonrpc") != "2.0":
        raise InvalidRequest("Invalid Request: not a JSON-RPC 2.0 object")
    has_id = "id" in value
    msg_id = value.get("id")
    if has_id and (isinstance(msg_id, bool) or not isinstance(msg_id, str | int) or
                   (isinstance(msg_id, str) and len(msg_id) > 256)):
        raise InvalidRequest("Invalid Request: id must be a string or an integer")
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
