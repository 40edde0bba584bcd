"""What a caller's answer to a pushed client request may be: the shape per method, rebuilt.

A 2025-era caller answers ``sampling/createMessage``, ``elicitation/create`` and ``roots/list``
by POSTing a JSON-RPC response (:mod:`portcullis.transport.push`). Before that answer goes
anywhere (to the upstream that asked, or into an MRTR round's ``inputResponses``) it is checked
against the method's result shape and rebuilt from the allowed members only; the caller's
``_meta`` and any other member are dropped. Anything else is :class:`MalformedAnswer`.

Pure functions over values; the bounds are small on purpose (an answer is a user's form or a
model's reply, never bulk data).
"""

from __future__ import annotations

from typing import Any

MAX_TEXT_CHARS = 64 * 1024
MAX_NAME_CHARS = 256
MAX_CONTENT_ITEMS = 64
MAX_FIELDS = 64
MAX_LIST_ITEMS = 64
MAX_ROOTS = 256
_ROLES = ("user", "assistant")
_ACTIONS = ("accept", "decline", "cancel")


class MalformedAnswer(ValueError):
    """The caller's answer does not have the shape its method's result must have."""


def _text(value: Any, limit: int = MAX_TEXT_CHARS) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise MalformedAnswer("expected a bounded string")
    return value


def _content_item(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise MalformedAnswer("content item is not an object")
    kind = item.get("type")
    if kind == "text":
        return {"type": "text", "text": _text(item.get("text"))}
    if kind in ("image", "audio"):
        return {"type": kind, "data": _text(item.get("data"), 16 * MAX_TEXT_CHARS),
                "mimeType": _text(item.get("mimeType"), MAX_NAME_CHARS)}
    raise MalformedAnswer("unsupported content type")


def sampling_answer(result: Any) -> dict[str, Any]:
    """``CreateMessageResult``: role, content (one item or a bounded list), model, stopReason."""
    if not isinstance(result, dict) or result.get("role") not in _ROLES:
        raise MalformedAnswer("sampling answer needs a role")
    content = result.get("content")
    if isinstance(content, list):
        if not content or len(content) > MAX_CONTENT_ITEMS:
            raise MalformedAnswer("sampling answer content list size")
        kept: Any = [_content_item(item) for item in content]
    else:
        kept = _content_item(content)
    out: dict[str, Any] = {"role": result["role"], "content": kept, "model": _text(result.get("model"),
                                                                                   MAX_NAME_CHARS)}
    if result.get("stopReason") is not None:
        out["stopReason"] = _text(result["stopReason"], MAX_NAME_CHARS)
    return out


def _field_value(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, list) and len(value) <= MAX_LIST_ITEMS:
        return [_text(item) for item in value]
    raise MalformedAnswer("elicitation field is not a primitive or a list of strings")


def elicitation_answer(result: Any) -> dict[str, Any]:
    """``ElicitResult``: action, and for ``accept`` a flat object of primitives (or string lists)."""
    if not isinstance(result, dict) or result.get("action") not in _ACTIONS:
        raise MalformedAnswer("elicitation answer needs an action")
    out: dict[str, Any] = {"action": result["action"]}
    content = result.get("content")
    if content is None:
        return out
    if result["action"] != "accept" or not isinstance(content, dict) or len(content) > MAX_FIELDS:
        raise MalformedAnswer("elicitation content only with accept, as a small object")
    out["content"] = {_text(key, MAX_NAME_CHARS): _field_value(value) for key, value in content.items()}
    return out


def roots_answer(result: Any) -> dict[str, Any]:
    """``ListRootsResult``: a bounded list of ``file://`` roots, each with an optional name."""
    roots = result.get("roots") if isinstance(result, dict) else None
    if not isinstance(roots, list) or len(roots) > MAX_ROOTS:
        raise MalformedAnswer("roots answer needs a bounded list")
    kept = []
    for root in roots:
        if not isinstance(root, dict):
            raise MalformedAnswer("root is not an object")
        uri = _text(root.get("uri"), 4096)
        if not uri.startswith("file://"):
            raise MalformedAnswer("a root is a file:// URI")
        item = {"uri": uri}
        if root.get("name") is not None:
            item["name"] = _text(root["name"], MAX_NAME_CHARS)
        kept.append(item)
    return {"roots": kept}


_BY_METHOD = {"sampling/createMessage": sampling_answer, "elicitation/create": elicitation_answer,
              "roots/list": roots_answer}
METHODS = frozenset(_BY_METHOD)


def checked_answer(method: str, result: Any) -> dict[str, Any]:
    """The rebuilt answer to a pushed ``method``, or :class:`MalformedAnswer`."""
    check = _BY_METHOD.get(method)
    if check is None:
        raise MalformedAnswer("not a client request method")
    return check(result)
