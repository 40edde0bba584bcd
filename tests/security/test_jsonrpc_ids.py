"""JSON-RPC ids (and other strings and numbers) that cannot be echoed are refused before anything runs.

Attack classes (issue 10, item 11): integers just past and far past the signed 64-bit range
(positive and negative, thousands of digits), floats and float-looking integers, booleans, null,
objects and arrays, unpaired surrogates (high, low, reversed, doubled, inside text, at the ends),
overlong strings; and the same unrepresentable values in the method name, the tool name and the
arguments. Each row is tried in both protocol eras against a real gateway, and the proof that
nothing ran is the gateway's own call counter, unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from portcullis.errors import InvalidRequest, ParseError
from portcullis.transport.jsonrpc import echoable_id, loads_strict, parse_message
from tests.e2e.harness import GatewayProcess, copy_demo

META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}

# ids as raw JSON text, so that values json.dumps cannot write (lone surrogates, huge ints) are exact
BAD_IDS: list[tuple[str, str]] = [
    ("int64-max-plus-one", str(2**63)),
    ("int64-min-minus-one", str(-(2**63) - 1)),
    ("uint64-max", str(2**64 - 1)),
    ("uint64-max-plus-one", str(2**64)),
    ("int-30-digits", "1" * 30),
    ("int-5000-digits", "9" * 5000),
    ("negative-5000-digits", "-" + "9" * 5000),
    ("float", "1.5"),
    ("float-integral", "1.0"),
    ("float-exponent", "1e3"),
    ("float-negative-zero", "-0.0"),
    ("float-overflow", "1e400"),
    ("true", "true"),
    ("false", "false"),
    ("null", "null"),
    ("object", '{"a":1}'),
    ("empty-object", "{}"),
    ("array", "[1]"),
    ("empty-array", "[]"),
    ("lone-high-surrogate", '"\\ud800"'),
    ("lone-low-surrogate", '"\\udfff"'),
    ("reversed-pair", '"\\udc00\\ud800"'),
    ("two-highs", '"\\ud800\\ud800"'),
    ("surrogate-inside-text", '"abc\\udc00def"'),
    ("surrogate-at-end", '"abc\\ud83d"'),
    ("uppercase-escape-surrogate", '"\\uD800"'),
    ("string-257-chars", json.dumps("x" * 257)),
    ("string-100k-chars", json.dumps("x" * 100_000)),
]

GOOD_IDS: list[tuple[str, str, Any]] = [
    ("int64-max", str(2**63 - 1), 2**63 - 1),
    ("int64-min", str(-(2**63)), -(2**63)),
    ("zero", "0", 0),
    ("negative-zero-int", "-0", 0),
    ("short-string", '"abc"', "abc"),
    ("empty-string", '""', ""),
    ("string-256-chars", json.dumps("x" * 256), "x" * 256),
    ("escaped-surrogate-pair", '"\\ud83d\\ude00"', "\U0001f600"),
    ("raw-utf8-emoji", '"\U0001f600"', "\U0001f600"),
    ("nul-char", '"a\\u0000b"', "a\x00b"),
    ("line-separator", '"\\u2028"', "\u2028"),
]


def message(raw_id: str, method: str = '"ping"') -> bytes:
    return f'{{"jsonrpc":"2.0","id":{raw_id},"method":{method},"params":{{}}}}'.encode()


@pytest.mark.parametrize(("case", "raw_id"), BAD_IDS, ids=[c[0] for c in BAD_IDS])
def test_an_id_that_cannot_be_echoed_is_refused_by_the_parser(case: str, raw_id: str) -> None:
    """The parser refuses every unechoable id (Invalid Request, or Parse error for a float that overflows)."""
    with pytest.raises((InvalidRequest, ParseError)) as refused:
        parse_message(loads_strict(message(raw_id), max_depth=64))
    expected = -32700 if case == "float-overflow" else -32600
    assert refused.value.code == expected


@pytest.mark.parametrize(("case", "raw_id", "value"), GOOD_IDS, ids=[c[0] for c in GOOD_IDS])
def test_an_echoable_id_is_accepted_exactly(case: str, raw_id: str, value: Any) -> None:
    """Every id in range parses to exactly the value that was sent."""
    parsed = parse_message(loads_strict(message(raw_id), max_depth=64))
    assert parsed.id == value and type(parsed.id) is type(value)
    assert echoable_id(parsed.id)


BAD_ELSEWHERE: list[tuple[str, bytes, int]] = [
    ("surrogate-in-method", message("1", '"ping\\ud800"'), -32600),
    ("surrogate-in-tool-name", b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a\\udfff"}}', -32600),
    ("surrogate-in-argument-key", b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t",'
                                  b'"arguments":{"\\ud800":1}}}', -32600),
    ("surrogate-in-argument-value", b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t",'
                                    b'"arguments":{"a":["x","\\udbff"]}}}', -32600),
    ("big-int-in-arguments", b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t",'
                             b'"arguments":{"amount":18446744073709551616}}}', -32600),
    ("huge-int-in-arguments", b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t",'
                              b'"arguments":{"amount":' + b"7" * 5000 + b"}}}", -32600),
    ("overflowing-float-in-arguments", b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t",'
                                       b'"arguments":{"amount":1e999}}}', -32700),
    ("overflowing-long-float", b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t",'
                               b'"arguments":{"amount":' + b"9" * 400 + b'.0}}}', -32700),
    ("surrogate-in-response-id", b'{"jsonrpc":"2.0","id":"\\ud800","result":{}}', -32600),
]


@pytest.mark.parametrize(("case", "body", "code"), BAD_ELSEWHERE, ids=[c[0] for c in BAD_ELSEWHERE])
def test_unrepresentable_values_anywhere_are_refused_by_the_parser(case: str, body: bytes, code: int) -> None:
    """Method names, tool names and arguments the gateway could not forward, audit or log are refused too."""
    with pytest.raises((InvalidRequest, ParseError)) as refused:
        parse_message(loads_strict(body, max_depth=64))
    assert refused.value.code == code


# --------------------------------------------------------------------------- through a real gateway


# one worker runs the whole module, so its module-scoped gateway starts once (tests/conftest.py)
pytestmark = pytest.mark.xdist_group("security/test_jsonrpc_ids.py")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """The bundled demo deployment (its refund tool has a side effect) in a gateway process."""
    root = copy_demo(tmp_path_factory.mktemp("ids") / "deployment")
    with GatewayProcess(root) as process:
        yield process


@pytest.fixture(scope="module")
def legacy_session(gateway: GatewayProcess) -> str:
    init = httpx2.post(gateway.url, headers={**gateway.auth_headers(), "Content-Type": "application/json",
                                             "Accept": "application/json"},
                       json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                           "protocolVersion": "2025-06-18", "capabilities": {},
                           "clientInfo": {"name": "t", "version": "1"}}}, timeout=10)
    return init.headers["mcp-session-id"]


def refund_call(raw_id: str, modern: bool) -> bytes:
    """A call with a side effect (a refund the policy allows) carrying ``raw_id``."""
    params = '{"name":"billing.process_refund","arguments":{"invoice_id":"INV-1001","amount":5,"reason":"t"}' + (
        ',"_meta":' + json.dumps(META) if modern else "") + "}"
    return f'{{"jsonrpc":"2.0","id":{raw_id},"method":"tools/call","params":{params}}}'.encode()


def headers_for(gateway: GatewayProcess, modern: bool, session: str) -> dict[str, str]:
    base = {**gateway.auth_headers(), "Content-Type": "application/json", "Accept": "application/json"}
    if modern:
        return {**base, "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call",
                "Mcp-Name": "billing.process_refund"}
    return {**base, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-06-18"}


def calls_counted(gateway: GatewayProcess) -> float:
    metrics = httpx2.get(f"{gateway.admin_base}/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(r"^portcullis_calls_total\{[^}]*\} (\S+)$", metrics, re.M))


@pytest.mark.parametrize("modern", [False, True], ids=["2025-era", "2026-era"])
@pytest.mark.parametrize(("case", "raw_id"), BAD_IDS, ids=[c[0] for c in BAD_IDS])
def test_a_side_effecting_call_with_an_unechoable_id_never_runs(gateway: GatewayProcess, legacy_session: str,
                                                                case: str, raw_id: str, modern: bool) -> None:
    """The call is refused with -32600 (-32700 for an overflowing float) and HTTP 400; nothing is counted."""
    before = calls_counted(gateway)
    response = httpx2.post(gateway.url, headers=headers_for(gateway, modern, legacy_session),
                           content=refund_call(raw_id, modern), timeout=10)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == (-32700 if case == "float-overflow" else -32600)
    assert response.json()["id"] is None
    assert calls_counted(gateway) == before


@pytest.mark.parametrize("modern", [False, True], ids=["2025-era", "2026-era"])
@pytest.mark.parametrize(("case", "raw_id", "value"), GOOD_IDS, ids=[c[0] for c in GOOD_IDS])
def test_an_echoable_id_comes_back_byte_for_byte(gateway: GatewayProcess, legacy_session: str, case: str,
                                                 raw_id: str, value: Any, modern: bool) -> None:
    """Ids at the edges of the allowed range are echoed exactly, in both eras."""
    headers = headers_for(gateway, modern, legacy_session)
    body = f'{{"jsonrpc":"2.0","id":{raw_id},"method":"tools/list","params":{{' + (
        '"_meta":' + json.dumps(META) if modern else "") + "}}"
    headers["Mcp-Method"] = "tools/list"
    headers.pop("Mcp-Name", None)
    response = httpx2.post(gateway.url, headers=headers, content=body.encode(), timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == value
