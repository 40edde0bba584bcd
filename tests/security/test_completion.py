"""``completion/complete`` through the real dispatcher and completion pipeline (only the upstream is a double).

The attacker's table: a completion for a prompt or template the caller may not see (byte-identical to an
unknown one, nothing forwarded), unknown ref types, oversized and undeclared arguments, and an upstream that
answers 10,000 values, a secret canary in a value, non-string values, extra fields and ``_meta``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from portcullis.pipeline.completion import MAX_ARGUMENT_CHARS, MAX_CONTEXT_ARGUMENTS, MAX_VALUES
from portcullis.transport.protocol import CAPABILITIES

from .canaries import CANARIES
from .harness import BOT, STRANGER
from .test_surface import STAFF, surface_gateway

SECRET = CANARIES["github_token"]
PROMPT_REF = {"type": "ref/prompt", "name": "billing.summarize"}
TEMPLATE_REF = {"type": "ref/resource", "uri": "billing+docs://pages/{topic}"}


def _complete(ref: Mapping[str, Any], value: str = "in", name: str = "topic", **extra: Any) -> dict[str, Any]:
    return {"ref": dict(ref), "argument": {"name": name, "value": value}, **extra}


def _answer(values: list[Any], **extra: Any) -> Any:
    def completer(ref: Mapping[str, str], argument: Mapping[str, str], context: Mapping[str, str] | None) -> Any:
        return {"completion": {"values": values, **extra}, "_meta": {"upstream/secret": SECRET}, "extra": 1}
    return completer


async def test_prompt_and_template_completions_reach_the_upstream_in_its_names(tmp_path: Path) -> None:
    counted: list[str] = []
    async with surface_gateway(tmp_path, counted=counted.append) as gw:
        gw.connector.surface.completer = _answer(["intro", "index"], total=2, hasMore=False)
        result, error = await gw.request("completion/complete", _complete(
            PROMPT_REF, context={"arguments": {"topic": "x", "undeclared": "y"}}), STAFF)
        assert error is None and result == {"completion": {"values": ["intro", "index"], "total": 2,
                                                           "hasMore": False}}
        result, error = await gw.request("completion/complete", _complete(TEMPLATE_REF), BOT, modern=True)
        assert error is None and result is not None and result["completion"]["values"] == ["intro", "index"]
        assert result["resultType"] == "complete"
        conn = gw.connector.current
        assert conn is not None
        assert conn.surface.completions == [
            ({"type": "ref/prompt", "name": "summarize"}, {"name": "topic", "value": "in"}, {"topic": "x"}),
            ({"type": "ref/resource", "uri": "docs://pages/{topic}"}, {"name": "topic", "value": "in"}, None)]
        assert all(conn.tokens)  # a minted token for each, never the caller's
        assert counted == ["ok", "ok"]
        assert await gw.records() == []  # no audit record (docs/mcp-surface.md says why)
    assert CAPABILITIES["completions"] == {}


HIDDEN = [
    # (request params, principal, the unknown twin it must be byte-identical to)
    (_complete(PROMPT_REF), BOT, _complete({"type": "ref/prompt", "name": "billing.nothing"})),  # bot is not staff
    (_complete(PROMPT_REF, name="undeclared"), BOT, _complete({"type": "ref/prompt", "name": "billing.nothing"})),
    (_complete(TEMPLATE_REF), STRANGER, None),
    (_complete({"type": "ref/resource", "uri": "billing+docs://board-minutes"}), BOT, None),  # static, hidden
    (_complete({"type": "ref/resource", "uri": "billing+docs://terms"}), BOT, None),  # static: no arguments
    (_complete({"type": "ref/resource", "uri": "docs://pages/{topic}"}), BOT, None),  # the upstream's own name
    (_complete({"type": "ref/resource", "uri": "billing+docs://pages/intro"}), BOT, None),  # a URI, not the template
    (_complete({"type": "ref/prompt", "name": "summarize"}), STAFF, None),  # the upstream's own name
]


@pytest.mark.parametrize(("params", "principal", "twin"), HIDDEN)
async def test_a_ref_the_caller_may_not_see_is_refused_like_an_unknown_one(
        tmp_path: Path, params: dict[str, Any], principal: Any, twin: dict[str, Any] | None) -> None:
    counted: list[str] = []
    async with surface_gateway(tmp_path, counted=counted.append) as gw:
        gw.connector.surface.completer = _answer(["x"])
        _, error = await gw.request("completion/complete", params, principal)
        if params["ref"]["type"] == "ref/prompt":
            expected = {"code": -32602, "message": "Unknown prompt"}
        else:
            expected = {"code": -32602, "message": "Resource not found", "data": {"uri": params["ref"]["uri"]}}
        assert error == orjson.dumps({"error": expected, "jsonrpc": "2.0"}, option=orjson.OPT_SORT_KEYS)
        if twin is not None:
            assert (await gw.request("completion/complete", twin, principal))[1] == error
        assert gw.connector.current is not None and gw.connector.current.surface.completions == []
        assert set(counted) == {"refused"}


MALFORMED = [
    {"argument": {"name": "topic", "value": "x"}},  # no ref
    _complete({"type": "ref/tool", "name": "billing.summarize"}),  # an unknown ref type
    _complete({"type": "REF/PROMPT", "name": "billing.summarize"}),
    _complete({"type": ["ref/prompt"], "name": "billing.summarize"}),
    _complete({"type": "ref/prompt"}),
    _complete({"type": "ref/prompt", "name": 7}),
    _complete({"type": "ref/resource", "name": "billing+docs://pages/{topic}"}),  # uri missing
    _complete({"type": "ref/prompt", "name": "x" * 2049}),
    {"ref": PROMPT_REF},  # no argument
    {"ref": PROMPT_REF, "argument": {"name": "topic"}},
    _complete(PROMPT_REF, value="v" * (MAX_ARGUMENT_CHARS + 1)),  # oversized value
    _complete(PROMPT_REF, value=7),  # type: ignore[arg-type]
    _complete(PROMPT_REF, name="../topic"),
    _complete(PROMPT_REF, name=""),
    _complete(PROMPT_REF, context={"arguments": {f"a{i}": "v" for i in range(MAX_CONTEXT_ARGUMENTS + 1)}}),
    _complete(PROMPT_REF, context={"arguments": {"topic": 1}}),
    _complete(PROMPT_REF, context={"arguments": {"topic": "v" * (MAX_ARGUMENT_CHARS + 1)}}),
    _complete(PROMPT_REF, context={"arguments": ["topic"]}),
    _complete(PROMPT_REF, context="topic"),
]


@pytest.mark.parametrize("params", MALFORMED)
async def test_malformed_completions_are_invalid_params_and_never_forwarded(tmp_path: Path,
                                                                            params: dict[str, Any]) -> None:
    async with surface_gateway(tmp_path) as gw:
        gw.connector.surface.completer = _answer(["x"])
        _, error = await gw.request("completion/complete", params, STAFF)
        assert error is not None
        body = orjson.loads(error)["error"]
        assert body["code"] == -32602 and body["message"].startswith("Invalid params")
        assert gw.connector.current is not None and gw.connector.current.surface.completions == []


async def test_an_undeclared_argument_of_a_visible_prompt_is_invalid(tmp_path: Path) -> None:
    async with surface_gateway(tmp_path) as gw:
        gw.connector.surface.completer = _answer(["x"])
        _, error = await gw.request("completion/complete", _complete(PROMPT_REF, name="exfil"), STAFF)
        assert error is not None and b"not an argument of this reference" in error


@pytest.mark.parametrize(("values", "extra", "expected"), [
    ([f"v{i}" for i in range(10_000)], {"total": 10_000},
     {"values": [f"v{i}" for i in range(MAX_VALUES)], "total": 10_000, "hasMore": True}),
    (["ok", f"key {SECRET}", "fine"], {}, {"values": ["ok", "fine"]}),  # the canary's value is dropped
    (["ok", 7, None, {"a": 1}, "x" * 1025, "\u202eevil"], {"hasMore": "yes", "total": -1}, {"values": ["ok"]}),
    (["a"], {"total": True, "hasMore": True, "_meta": {"k": SECRET}, "nextCursor": "c"},
     {"values": ["a"], "hasMore": True}),
])
async def test_the_upstream_answer_is_bounded_and_filtered(tmp_path: Path, values: list[Any], extra: dict[str, Any],
                                                           expected: dict[str, Any]) -> None:
    async with surface_gateway(tmp_path) as gw:
        gw.connector.surface.completer = _answer(values, **extra)
        result, error = await gw.request("completion/complete", _complete(PROMPT_REF), STAFF)
        assert error is None and result == {"completion": expected}
        assert SECRET not in orjson.dumps(result).decode()


@pytest.mark.parametrize("answer", [{}, {"completion": None}, {"completion": {"values": "ab"}}, {"values": ["a"]}])
async def test_a_malformed_upstream_answer_fails(tmp_path: Path, answer: dict[str, Any]) -> None:
    async with surface_gateway(tmp_path) as gw:
        gw.connector.surface.completer = lambda *_: answer
        _, error = await gw.request("completion/complete", _complete(PROMPT_REF), STAFF)
        assert error is not None and orjson.loads(error)["error"]["code"] == -31004


async def test_without_a_filter_no_value_is_sent(tmp_path: Path) -> None:
    """Fail closed: content.enabled: false leaves reads unfiltered, but a completion sends no value at all."""
    async with surface_gateway(tmp_path, content=False) as gw:
        gw.connector.surface.completer = _answer(["intro"])
        result, error = await gw.request("completion/complete", _complete(PROMPT_REF), STAFF)
        assert error is None and result == {"completion": {"values": []}}


async def test_a_quarantined_prompt_is_not_completed(tmp_path: Path) -> None:
    async with surface_gateway(tmp_path) as gw:
        gw.connector.surface.completer = _answer(["x"])
        gw.connector.surface.prompts[0] = {**gw.connector.surface.prompts[0], "description": "changed"}
        await gw.watch.refresh("billing")  # the background re-listing quarantines it (the surface watch)
        _, error = await gw.request("completion/complete", _complete(PROMPT_REF), STAFF)
        assert error is not None and b"Unknown prompt" in error
        assert gw.connector.current is not None and gw.connector.current.surface.completions == []
