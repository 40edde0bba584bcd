"""Property-based tests (hypothesis) of the JSON-RPC parser and of header handling.

Where the fuzz targets explore bytes, these generate structured inputs the properties are about:
JSON documents with ids across and beyond the 64-bit range and strings with and without
unpaired surrogates; header lists with repeats, mixed case and single-valued names; requests cut
into reads of every size. Each property is the target's own check, so the two never disagree.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portcullis.errors import InvalidRequest, ParseError
from portcullis.transport.app import _SINGLE_HEADERS, _Answer, _headers
from portcullis.transport.jsonrpc import count_values, echoable_id, loads_strict, parse_message
from tests.fuzz.targets import headers as headers_target
from tests.fuzz.targets import jsonrpc as jsonrpc_target

# any code point, unpaired surrogates included (hypothesis leaves them out by default)
ANY_TEXT = st.text(st.characters(codec=None, categories=None), max_size=20)
SAFE_TEXT = st.text(max_size=20)
INT64 = (-(2**63), 2**63 - 1)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | SAFE_TEXT,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(SAFE_TEXT, inner, max_size=5),
    max_leaves=30,
)
json_values_in_range = st.recursive(
    st.none() | st.booleans() | st.integers(*INT64) | st.floats(allow_nan=False, allow_infinity=False) | SAFE_TEXT,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(SAFE_TEXT, inner, max_size=5),
    max_leaves=30,
)
ids = st.integers(-(2**80), 2**80) | ANY_TEXT | st.text(min_size=250, max_size=300) | st.floats() | st.booleans()
RELAXED = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def dumps(value: Any, *, ensure_ascii: bool) -> bytes:
    text = json.dumps(value, ensure_ascii=ensure_ascii, allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


def echoable(value: Any) -> bool:
    if type(value) is int:
        return INT64[0] <= value <= INT64[1]
    if type(value) is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return len(value) <= 256
    return False


@RELAXED
@given(msg_id=ids, params=st.dictionaries(SAFE_TEXT, json_values, max_size=4), ascii_only=st.booleans())
def test_a_request_is_accepted_exactly_when_its_id_can_be_echoed(msg_id: Any, params: dict[str, Any],
                                                                  ascii_only: bool) -> None:
    """With an otherwise valid envelope, the id alone decides; an accepted id parses to the value sent."""
    body = dumps({"jsonrpc": "2.0", "id": msg_id, "method": "tools/call", "params": params}, ensure_ascii=ascii_only)
    params_ok = all(INT64[0] <= i <= INT64[1] for i in _ints(params))
    try:
        message = parse_message(loads_strict(body, max_depth=64))
    except ParseError:  # NaN and infinities are not JSON; a raw lone surrogate is not UTF-8
        assert (isinstance(msg_id, float) and not math.isfinite(msg_id)) or (
            not ascii_only and _has_lone_surrogate(msg_id))
        return
    except InvalidRequest:
        assert not echoable(msg_id) or not params_ok
        return
    assert echoable(msg_id) and message.id == msg_id and type(message.id) is type(msg_id)
    assert echoable_id(message.id)
    jsonrpc_target.fuzz_one(body)


def _ints(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [i for v in value.values() for i in _ints(v)]
    if isinstance(value, list):
        return [i for v in value for i in _ints(v)]
    return [value] if type(value) is int else []


def _has_lone_surrogate(value: Any) -> bool:
    return isinstance(value, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in value)


@RELAXED
@given(value=json_values, indent=st.sampled_from([None, 0, 2]))
def test_the_value_count_never_undercounts(value: Any, indent: int | None) -> None:
    """At or under the limit, the lexical count is at least the true number of values."""
    text = json.dumps(value, indent=indent)
    true_count = _count(value)
    for limit in (0, true_count - 1, true_count, true_count + 10, 10**6):
        counted = count_values(text, limit)
        assert counted > limit or counted >= true_count


def _count(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + len(value) + sum(_count(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(_count(v) for v in value)
    return 1


@RELAXED
@given(value=json_values_in_range)
def test_strict_parsing_agrees_with_json_on_valid_documents(value: Any) -> None:
    """A document with unique keys, in range, parses to what the standard parser returns."""
    body = json.dumps(value).encode()
    assert loads_strict(body, max_depth=64, max_values=10**6) == json.loads(body)


header_names = st.sampled_from(["host", "Host", "accept", "ACCEPT", "x-a", "X-A", "origin", "mcp-name",
                                "authorization", "cookie", "content-type"])
header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                        max_size=30).map(str.strip)


@RELAXED
@given(pairs=st.lists(st.tuples(header_names, header_values), max_size=12))
def test_the_header_map_keeps_every_value_in_order_or_refuses_a_repeated_single(
        pairs: list[tuple[str, str]]) -> None:
    """Repeated list headers are joined in order; a repeated single-valued header is 400; too many is 431."""
    raw = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in pairs]
    lowered = [n.lower() for n, _ in pairs]
    try:
        mapped = _headers({"headers": raw}, 10)
    except _Answer as answer:
        if answer.status == 431:
            assert len(pairs) > 10
        else:
            assert answer.status == 400
            assert any(lowered.count(n) > 1 for n in set(lowered) if n in _SINGLE_HEADERS)
        return
    assert len(pairs) <= 10
    expected: dict[str, list[str]] = {}
    for name, value in pairs:
        expected.setdefault(name.lower(), []).append(value)
    assert mapped == {k: ", ".join(v) for k, v in expected.items()}


@RELAXED
@given(pairs=st.lists(st.tuples(st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True), header_values),
                      max_size=14),
       target=st.from_regex(r"/[a-z0-9/]{0,300}", fullmatch=True), step=st.integers(0, 255))
def test_the_http_layer_never_hands_the_app_a_head_past_the_bounds(pairs: list[tuple[str, str]], target: str,
                                                                   step: int) -> None:
    """Cut into reads of any size, a request reaches the app only within the count and byte bounds."""
    head = f"GET {target} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in pairs) + "\r\n"
    headers_target.fuzz_one(bytes([step]) + head.encode("latin-1"))
