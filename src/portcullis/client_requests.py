"""Server-to-client requests an upstream asks of a caller: which ones pass, and what of them.

An upstream may ask the caller of a call for something: to sample its LLM (``sampling/createMessage``),
to ask its user (``elicitation/create``, form or URL mode) or to list its roots (``roots/list``). In
2026-07-28 these arrive inside an ``input_required`` result (``inputRequests``); in the 2025 era as
push requests on the session. Either way the gateway relays one only after :func:`screen`, a pure
decision over one request, in these steps:

1. **kind** (:func:`kind_of`): the method and, for elicitation, its mode; anything else is
   ``unknown_kind``.
2. **allowed**: the service's ``client_requests`` block allows the kind (deny by default), else
   ``not_allowed``.
3. **declared**: the caller declared the capability (never ask for one it did not declare; for
   2026-07-28 callers the request's ``_meta["io.modelcontextprotocol/clientCapabilities"]``), else
   ``not_declared``. Elicitation ``{}`` means form only; URL mode needs ``url``.
4. **rebuilt** from allow-listed fields only, each checked and bounded (``malformed`` /
   ``too_large``): form elicitation ``message`` and a flat ``requestedSchema`` of primitive
   properties; URL elicitation ``message``, ``url`` (``https``, or ``http`` to a loopback host; no
   user info, no control characters) and ``elicitationId``; sampling ``messages`` (text, image or
   audio), ``systemPrompt`` and ``maxTokens``; ``roots/list`` nothing. The upstream's ``_meta``, and
   every other member, never passes.
5. **filtered**: the text the upstream chose (message, sampling texts, system prompt, schema titles
   and descriptions) passes :func:`~portcullis.content.output_filter.filter_message` with the call's
   policy, as text blocks, so secrets and PII are redacted per the policy and an injection is wrapped
   in the untrusted-data envelope; the structural strings (property names, enum values, defaults, the
   URL, the elicitation id) are scanned too, with injection blocking, and must come out unchanged (a
   secret there cannot be redacted without changing the meaning): else ``withheld``. Without a policy
   (``no_filter``) a request carrying text is refused (fail closed); ``roots/list`` carries none.

A refusal raises :class:`~portcullis.errors.ClientRequestRefused` with one reason of :data:`REASONS`;
its message never holds upstream text.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson

from portcullis.config.model import ClientRequestsConfig
from portcullis.content.output_filter import ContentReport, FilterPolicy, filter_message
from portcullis.errors import ClientRequestRefused

KINDS = ("sampling", "elicitation_form", "elicitation_url", "roots")
REASONS = ("unknown_kind", "not_allowed", "not_declared", "malformed", "too_large", "no_filter", "withheld")
SAMPLING, ELICIT, ROOTS = "sampling/createMessage", "elicitation/create", "roots/list"
METHODS = (SAMPLING, ELICIT, ROOTS)
CAPABILITIES_META = "io.modelcontextprotocol/clientCapabilities"

MAX_REQUEST_BYTES = 256 * 1024  # the rebuilt request, serialised
MAX_MESSAGE_CHARS = 4096  # an elicitation's message
MAX_SYSTEM_PROMPT_CHARS = 16 * 1024
MAX_SAMPLING_TEXT_CHARS = 64 * 1024  # one text block
MAX_SAMPLING_MESSAGES = 64
MAX_SAMPLING_BLOCKS = 16  # per message
MAX_MEDIA_BYTES = 192 * 1024  # base64 of one image or audio block
MAX_TOKENS = 1_000_000
MAX_PROPERTIES = 32
MAX_ENUM_VALUES = 64
MAX_TITLE_CHARS = 256
MAX_DESCRIPTION_CHARS = 1024
MAX_VALUE_CHARS = 1024  # an enum value, a default, a const
MAX_URL_CHARS = 2048
MAX_ELICITATION_ID_CHARS = 256
_PROPERTY_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_ELICITATION_ID = re.compile(r"^[\x21-\x7e]{1,256}$")
_STRING_FORMATS = frozenset({"email", "uri", "date", "date-time"})
_MEDIA_TYPE = re.compile(r"^[a-z]+/[A-Za-z0-9.+-]{1,100}$")
_LOOPBACK_NAMES = frozenset({"localhost"})


def kind_of(request: Mapping[str, Any]) -> str | None:
    """The kind of a server-to-client request (one of :data:`KINDS`), or None for anything else."""
    method = request.get("method") if isinstance(request, Mapping) else None
    if method == SAMPLING:
        return "sampling"
    if method == ROOTS:
        return "roots"
    if method != ELICIT:
        return None
    params = request.get("params")
    mode = params.get("mode", "form") if isinstance(params, Mapping) else "form"
    if mode is None or mode == "form":
        return "elicitation_form"
    return "elicitation_url" if mode == "url" else None


def screen(request: Mapping[str, Any], *, allowed: ClientRequestsConfig, declared: Mapping[str, Any] | None,
           policy: FilterPolicy | None) -> dict[str, Any]:
    """The request as the caller may see it (``{"method", "params"}``), or :class:`ClientRequestRefused`."""
    return screen_with_report(request, allowed=allowed, declared=declared, policy=policy)[0]


def screen_with_report(request: Mapping[str, Any], *, allowed: ClientRequestsConfig,
                       declared: Mapping[str, Any] | None,
                       policy: FilterPolicy | None) -> tuple[dict[str, Any], ContentReport | None]:
    """:func:`screen`, also returning the filter's value-free report (None when nothing was filtered)."""
    kind = kind_of(request)
    if kind is None:
        raise ClientRequestRefused("unknown_kind", detail="not a server-to-client request kind")
    if not getattr(allowed, kind):
        raise ClientRequestRefused("not_allowed", kind=kind, detail=f"client_requests.{kind} is false")
    if not declared_capability(kind, declared):
        raise ClientRequestRefused("not_declared", kind=kind, detail=f"the caller did not declare {kind}")
    params = request.get("params")
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise _refused("malformed", kind, "params is not an object")
    texts: list[str] = []  # free text the upstream chose: filtered, redacted in place
    fixed: list[str] = []  # structural strings: scanned, must come out unchanged
    if kind == "roots":
        return {"method": ROOTS, "params": {}}, None
    if kind == "sampling":
        method, rebuilt = SAMPLING, _sampling(params, texts)
    elif kind == "elicitation_form":
        method, rebuilt = ELICIT, _form(params, texts, fixed)
    else:
        method, rebuilt = ELICIT, _url(params, texts, fixed)
    try:
        size = len(orjson.dumps(_put_texts(rebuilt, texts)))
    except TypeError:
        raise _refused("malformed", kind, "not JSON") from None
    if size > MAX_REQUEST_BYTES:
        raise _refused("too_large", kind, f"{size} bytes")
    if policy is None:
        raise _refused("no_filter", kind, "no content filter policy for this call")
    report = _filter(kind, method, texts, fixed, policy)
    return {"method": method, "params": _put_texts(rebuilt, texts)}, report


def declared_capability(kind: str, declared: Mapping[str, Any] | None) -> bool:
    """Whether the caller's client capabilities (as it declared them) cover ``kind``."""
    if not isinstance(declared, Mapping):
        return False
    if kind == "sampling":
        return isinstance(declared.get("sampling"), Mapping)
    if kind == "roots":
        return isinstance(declared.get("roots"), Mapping)
    elicitation = declared.get("elicitation")
    if not isinstance(elicitation, Mapping):
        return False
    if kind == "elicitation_form":  # an empty {} means form only (2025-11-25)
        return not elicitation or isinstance(elicitation.get("form"), Mapping)
    return isinstance(elicitation.get("url"), Mapping)


def declared_of(meta: Any) -> Mapping[str, Any] | None:
    """A 2026-07-28 request's declared client capabilities (its ``_meta``), or None."""
    if not isinstance(meta, Mapping):
        return None
    caps = meta.get(CAPABILITIES_META)
    return caps if isinstance(caps, Mapping) else None


# --------------------------------------------------------------------------- rebuilding


class _Text:
    """A placeholder for free text in a rebuilt request; replaced by the filtered text at the end."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


def _refused(reason: str, kind: str, detail: str) -> ClientRequestRefused:
    return ClientRequestRefused(reason, kind=kind, detail=detail)


def _string(value: Any, limit: int, kind: str, what: str, into: list[str]) -> str:
    """``value``, checked to be a string within ``limit`` characters, appended to ``into``."""
    if not isinstance(value, str):
        raise _refused("malformed", kind, f"{what} is not a string")
    if len(value) > limit:
        raise _refused("too_large", kind, f"{what} is longer than {limit} characters")
    into.append(value)
    return value


def _text(value: Any, limit: int, kind: str, what: str, texts: list[str]) -> _Text:
    _string(value, limit, kind, what, texts)
    return _Text(len(texts) - 1)


_fixed = _string


def _int(value: Any, lo: int, hi: int, kind: str, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise _refused("malformed", kind, f"{what} is not an integer >= {lo}")
    if value > hi:
        raise _refused("too_large", kind, f"{what} is over {hi}")
    return value


def _number(value: Any, kind: str, what: str) -> int | float:
    if not isinstance(value, int | float) or isinstance(value, bool) or value != value or value in (
            float("inf"), float("-inf")):
        raise _refused("malformed", kind, f"{what} is not a finite number")
    return value


def _sampling(params: Mapping[str, Any], texts: list[str]) -> dict[str, Any]:
    kind = "sampling"
    messages = params.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _refused("malformed", kind, "messages is not a non-empty list")
    if len(messages) > MAX_SAMPLING_MESSAGES:
        raise _refused("too_large", kind, "too many messages")
    out: dict[str, Any] = {"messages": [_sampling_message(m, texts) for m in messages],
                           "maxTokens": _int(params.get("maxTokens"), 1, MAX_TOKENS, kind, "maxTokens")}
    if params.get("systemPrompt") is not None:
        out["systemPrompt"] = _text(params["systemPrompt"], MAX_SYSTEM_PROMPT_CHARS, kind, "systemPrompt", texts)
    return out


def _sampling_message(message: Any, texts: list[str]) -> dict[str, Any]:
    kind = "sampling"
    if not isinstance(message, Mapping) or message.get("role") not in ("user", "assistant"):
        raise _refused("malformed", kind, "a message is not {role, content}")
    content = message.get("content")
    if isinstance(content, list):
        if not content or len(content) > MAX_SAMPLING_BLOCKS:
            raise _refused("too_large" if content else "malformed", kind, "content blocks")
        return {"role": message["role"], "content": [_sampling_block(b, texts) for b in content]}
    return {"role": message["role"], "content": _sampling_block(content, texts)}


def _sampling_block(block: Any, texts: list[str]) -> dict[str, Any]:
    kind = "sampling"
    if not isinstance(block, Mapping):
        raise _refused("malformed", kind, "a content block is not an object")
    kind_of_block = block.get("type")
    if kind_of_block == "text":
        return {"type": "text", "text": _text(block.get("text"), MAX_SAMPLING_TEXT_CHARS, kind, "text", texts)}
    if kind_of_block in ("image", "audio"):
        data, mime = block.get("data"), block.get("mimeType")
        if not isinstance(data, str) or not isinstance(mime, str) or not _MEDIA_TYPE.match(mime) \
                or not mime.startswith(f"{kind_of_block}/"):
            raise _refused("malformed", kind, f"an {kind_of_block} block")
        if len(data) > MAX_MEDIA_BYTES:
            raise _refused("too_large", kind, f"an {kind_of_block} block")
        return {"type": kind_of_block, "data": data, "mimeType": mime}
    raise _refused("malformed", kind, "a content block of an unsupported type")


def _form(params: Mapping[str, Any], texts: list[str], fixed: list[str]) -> dict[str, Any]:
    kind = "elicitation_form"
    message = _text(params.get("message"), MAX_MESSAGE_CHARS, kind, "message", texts)
    schema = params.get("requestedSchema")
    if not isinstance(schema, Mapping) or schema.get("type") != "object":
        raise _refused("malformed", kind, "requestedSchema is not an object schema")
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        raise _refused("malformed", kind, "requestedSchema.properties is not an object")
    if len(properties) > MAX_PROPERTIES:
        raise _refused("too_large", kind, "too many properties")
    rebuilt: dict[str, Any] = {}
    for name, prop in properties.items():
        if not isinstance(name, str) or not _PROPERTY_NAME.match(name):
            raise _refused("malformed", kind, "a property name outside [A-Za-z0-9_.-]{1,64}")
        fixed.append(name)
        rebuilt[name] = _property(prop, texts, fixed)
    out_schema: dict[str, Any] = {"type": "object", "properties": rebuilt}
    required = schema.get("required")
    if required is not None:
        if not isinstance(required, list) or any(not isinstance(r, str) or r not in rebuilt for r in required) \
                or len(set(required)) != len(required):
            raise _refused("malformed", kind, "required names a property not in the schema")
        out_schema["required"] = list(required)
    return {"mode": "form", "message": message, "requestedSchema": out_schema} if params.get("mode") == "form" \
        else {"message": message, "requestedSchema": out_schema}


def _property(prop: Any, texts: list[str], fixed: list[str]) -> dict[str, Any]:
    kind = "elicitation_form"
    if not isinstance(prop, Mapping):
        raise _refused("malformed", kind, "a property schema is not an object")
    type_ = prop.get("type")
    out: dict[str, Any] = {"type": type_}
    if prop.get("title") is not None:
        out["title"] = _text(prop["title"], MAX_TITLE_CHARS, kind, "title", texts)
    if prop.get("description") is not None:
        out["description"] = _text(prop["description"], MAX_DESCRIPTION_CHARS, kind, "description", texts)
    if type_ == "string":
        for key in ("minLength", "maxLength"):
            if key in prop:
                out[key] = _int(prop[key], 0, 1_000_000, kind, key)
        if "format" in prop:
            if prop["format"] not in _STRING_FORMATS:
                raise _refused("malformed", kind, "an unsupported string format")
            out["format"] = prop["format"]
        if "enum" in prop:
            out["enum"] = _values(prop["enum"], fixed)
            if "enumNames" in prop:
                names = prop["enumNames"]
                if not isinstance(names, list) or len(names) != len(out["enum"]):
                    raise _refused("malformed", kind, "enumNames does not match enum")
                out["enumNames"] = [_text(n, MAX_TITLE_CHARS, kind, "enumNames", texts) for n in names]
        elif "oneOf" in prop:
            out["oneOf"] = _titled(prop["oneOf"], texts, fixed)
        if "default" in prop:
            out["default"] = _fixed(prop["default"], MAX_VALUE_CHARS, kind, "default", fixed)
    elif type_ in ("number", "integer"):
        for key in ("minimum", "maximum", "default"):
            if key in prop:
                out[key] = _number(prop[key], kind, key)
                if type_ == "integer" and not isinstance(out[key], int):
                    raise _refused("malformed", kind, f"{key} of an integer is not an integer")
    elif type_ == "boolean":
        if "default" in prop:
            if not isinstance(prop["default"], bool):
                raise _refused("malformed", kind, "default of a boolean")
            out["default"] = prop["default"]
    elif type_ == "array":  # a multi-select enum (2025-11-25): items name the choices, nothing nested
        items = prop.get("items")
        if not isinstance(items, Mapping):
            raise _refused("malformed", kind, "an array property without items")
        if items.get("type") == "string" and "enum" in items:
            out["items"] = {"type": "string", "enum": _values(items["enum"], fixed)}
        elif "anyOf" in items:
            out["items"] = {"anyOf": _titled(items["anyOf"], texts, fixed)}
        else:
            raise _refused("malformed", kind, "an array property that is not a multi-select enum")
        for key in ("minItems", "maxItems"):
            if key in prop:
                out[key] = _int(prop[key], 0, MAX_ENUM_VALUES, kind, key)
        if "default" in prop:
            default = prop["default"]
            if not isinstance(default, list) or len(default) > MAX_ENUM_VALUES:
                raise _refused("malformed", kind, "default of a multi-select")
            out["default"] = [_fixed(v, MAX_VALUE_CHARS, kind, "default", fixed) for v in default]
    else:
        raise _refused("malformed", kind, "a property that is not a primitive (nested or unknown type)")
    return out


def _values(values: Any, fixed: list[str]) -> list[str]:
    kind = "elicitation_form"
    if not isinstance(values, list) or not values:
        raise _refused("malformed", kind, "enum is not a non-empty list")
    if len(values) > MAX_ENUM_VALUES:
        raise _refused("too_large", kind, "too many enum values")
    return [_fixed(v, MAX_VALUE_CHARS, kind, "an enum value", fixed) for v in values]


def _titled(options: Any, texts: list[str], fixed: list[str]) -> list[dict[str, Any]]:
    kind = "elicitation_form"
    if not isinstance(options, list) or not options:
        raise _refused("malformed", kind, "oneOf/anyOf is not a non-empty list")
    if len(options) > MAX_ENUM_VALUES:
        raise _refused("too_large", kind, "too many options")
    out = []
    for option in options:
        if not isinstance(option, Mapping):
            raise _refused("malformed", kind, "an option is not {const, title}")
        entry: dict[str, Any] = {"const": _fixed(option.get("const"), MAX_VALUE_CHARS, kind, "const", fixed)}
        if option.get("title") is not None:
            entry["title"] = _text(option["title"], MAX_TITLE_CHARS, kind, "title", texts)
        out.append(entry)
    return out


def _url(params: Mapping[str, Any], texts: list[str], fixed: list[str]) -> dict[str, Any]:
    kind = "elicitation_url"
    message = _text(params.get("message"), MAX_MESSAGE_CHARS, kind, "message", texts)
    url = params.get("url")
    if not isinstance(url, str):
        raise _refused("malformed", kind, "url is not a string")
    if len(url) > MAX_URL_CHARS:
        raise _refused("too_large", kind, "url is too long")
    if not safe_url(url):
        raise _refused("malformed", kind, "url is not https (or http to a loopback host)")
    fixed.append(url)
    out: dict[str, Any] = {"mode": "url", "message": message, "url": url}
    if params.get("elicitationId") is not None:
        elicitation_id = params["elicitationId"]
        if not isinstance(elicitation_id, str) or not _ELICITATION_ID.match(elicitation_id):
            raise _refused("malformed", kind, "elicitationId is not 1-256 printable ASCII characters")
        out["elicitationId"] = _fixed(elicitation_id, MAX_ELICITATION_ID_CHARS, kind, "elicitationId", fixed)
    return out


def safe_url(url: str) -> bool:
    """An ``https`` URL, or ``http`` to a loopback host; printable ASCII, with a host, without user info."""
    if not url or any(not ("\x21" <= c <= "\x7e") for c in url) or "\\" in url:
        return False
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return False
    if not host or parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return False
    if parts.scheme == "https":
        return True
    return parts.scheme == "http" and _loopback(host)


def _loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------- filtering


def _filter(kind: str, channel: str, texts: list[str], fixed: list[str], policy: FilterPolicy) -> ContentReport:
    """Filter ``texts`` in place (as text blocks: redaction and the injection envelope apply), and scan
    ``fixed``, which must come out unchanged; a withheld message or a changed fixed string refuses."""
    carrier = {"content": [{"type": "text", "text": t} for t in texts]}
    outcome = filter_message(carrier, channel, policy)
    if outcome.blocked:
        raise _refused("withheld", kind, f"the output filter withheld it ({outcome.report.blocked})")
    texts[:] = [block["text"] for block in outcome.value["content"]]
    report = outcome.report
    if fixed:
        strict = dataclasses.replace(policy, injection="block") if policy.injection != "off" else policy
        scanned = filter_message({"structuredContent": {"values": fixed}}, channel, strict)
        if scanned.blocked or scanned.value["structuredContent"]["values"] != fixed:
            raise _refused("withheld", kind, "the output filter flagged a structural value")
        report.findings.update(scanned.report.findings)
        report.rule_ids |= scanned.report.rule_ids
    return report


def _put_texts(value: Any, texts: list[str]) -> Any:
    """``value`` with each :class:`_Text` placeholder replaced by its (filtered) text."""
    if isinstance(value, _Text):
        return texts[value.index]
    if isinstance(value, dict):
        return {k: _put_texts(v, texts) for k, v in value.items()}
    if isinstance(value, list):
        return [_put_texts(v, texts) for v in value]
    return value
