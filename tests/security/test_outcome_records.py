"""Exactly one outcome record for every decision record, whatever happens after it (issue 11).

A table of hostile upstream results and failures, each through the real dispatcher, the real
pipeline in its declared order and the real audit chain (only the upstream and, for the audit
failures, a store that refuses some appends are doubles): results the gateway cannot encode as
JSON (an integer beyond 64 bits, a non-string key, a lone surrogate), NaN and the infinities, an
upstream failing with every kind of error, a call cancelled while it is forwarded, an outcome or
decision write that fails. For each row: the exact sequence of records the call left, and what
the caller got (the JSON-RPC answer bytes, built as the transport builds them).

Then a property: over random sequences of calls with random failure points, every call that has
a write-ahead decision has exactly one outcome after it, and an outcome of ``ok``/``tool_error``
exactly when the caller got a result, whose size is the size the record states.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portcullis.audit.errors import AuditUnavailable
from portcullis.audit.record import AuditRecord
from portcullis.audit.store import AuditStore
from portcullis.cancellation import DEPARTURE, Departure
from portcullis.errors import (
    InvalidParams,
    ResultTooLarge,
    UpstreamFailed,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from portcullis.transport.protocol import encode_response
from tests.security.harness import INVOICE, InProcessGateway, in_process_gateway

ARGS = {"invoice_id": "INV-1"}
Handler = Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]


class RefusingStore:
    """The real store behind a switch: appends holding a record of a kind in ``refuse`` fail
    (:class:`AuditUnavailable`, nothing written), ``times`` times each (``None``: always)."""

    def __init__(self, inner: AuditStore) -> None:
        self._inner = inner
        self.refuse: dict[str, int | None] = {}

    @property
    def inline(self) -> bool:
        return bool(getattr(self._inner, "inline", False))

    async def append(self, batch: Sequence[AuditRecord]) -> None:
        for record in batch:
            if record.kind in self.refuse:
                left = self.refuse[record.kind]
                if left is not None:
                    if left <= 1:
                        del self.refuse[record.kind]
                    else:
                        self.refuse[record.kind] = left - 1
                raise AuditUnavailable(detail="injected append failure")
        await self._inner.append(batch)

    async def head(self) -> tuple[int, str] | None:
        return await self._inner.head()

    async def read(self, from_index: int, limit: int) -> list[AuditRecord]:
        return await self._inner.read(from_index, limit)


class Upstream:
    """``get_invoice`` answers with whatever the current plan says."""

    def __init__(self) -> None:
        self.plan: Callable[[], Awaitable[dict[str, Any]]] = self.done
        self.entered = anyio.Event()

    async def __call__(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        self.entered.set()
        return await self.plan()

    @staticmethod
    async def done() -> dict[str, Any]:
        return {"content": [{"type": "text", "text": "done"}], "isError": False}


def answering(structured: Any, *, is_error: bool = False) -> Callable[[], Awaitable[dict[str, Any]]]:
    async def plan() -> dict[str, Any]:
        return {"content": [{"type": "text", "text": "x"}], "structuredContent": structured, "isError": is_error}
    return plan


def raising(exc: BaseException) -> Callable[[], Awaitable[dict[str, Any]]]:
    async def plan() -> dict[str, Any]:
        raise exc
    return plan


async def hang() -> dict[str, Any]:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


@dataclass
class Setup:
    gateway: InProcessGateway
    upstream: Upstream
    store: RefusingStore


class _Open:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path, self.upstream = tmp_path, Upstream()
        self.store: RefusingStore | None = None
        self._cm: Any = None

    def _wrap(self, inner: AuditStore) -> AuditStore:
        self.store = RefusingStore(inner)
        return self.store  # type: ignore[return-value]

    async def __aenter__(self) -> Setup:
        self._cm = in_process_gateway(self.tmp_path, handlers={"get_invoice": self.upstream},
                                      wrap_audit_store=self._wrap)
        gateway = await self._cm.__aenter__()
        assert self.store is not None
        return Setup(gateway, self.upstream, self.store)

    async def __aexit__(self, *exc: Any) -> None:
        await self._cm.__aexit__(*exc)


async def call_records(gateway: InProcessGateway, before: int) -> list[dict[str, Any]]:
    """The records written since ``before`` records, as (kind, the outcome fields that matter)."""
    return [{"kind": r.kind, **({"outcome": r.fields["outcome"], "error_code": r.fields["error_code"],
                                 "bytes": r.fields["output"]["bytes"]} if r.kind == "outcome" else {}),
             "request_id": r.request_id}
            for r in (await gateway.records())[before:]]


def kinds(records: list[dict[str, Any]]) -> list[tuple[str, str | None, int | None]]:
    return [(r["kind"], r.get("outcome"), r.get("error_code")) for r in records]


def wire(answer: Any) -> bytes:
    """The bytes the caller gets for a result (as the transport splices them), or its error code."""
    assert answer.result is not None
    return encode_response(1, answer.result)


DECISION = ("decision", None, None)


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def measured(result: Mapping[str, Any]) -> int:
    """The size of the call's result as the audit stage encoded it (before the 2026 additions)."""
    return len(orjson.dumps({k: v for k, v in result.items() if k not in ("resultType", "_meta")}))


@dataclass(frozen=True)
class Row:
    name: str
    plan: Callable[[], Awaitable[dict[str, Any]]]
    records: list[tuple[str, str | None, int | None]]
    code: int | None  # the caller's JSON-RPC error code; None: the caller got a result
    refuse: Mapping[str, int | None] | None = None  # audit appends that fail, by record kind

    def __repr__(self) -> str:
        return self.name


UNENCODABLE = [
    Row("int beyond 64 bits", answering({"n": 2**70}), [DECISION, ("outcome", "upstream_error", -31004)], -31004),
    Row("negative int beyond 64 bits", answering({"n": -(2**64)}),
        [DECISION, ("outcome", "upstream_error", -31004)], -31004),
    Row("non-string key", answering({1: "one"}), [DECISION, ("outcome", "upstream_error", -31004)], -31004),
    Row("tuple key", answering({(1, 2): "pair"}), [DECISION, ("outcome", "upstream_error", -31004)], -31004),
    Row("lone surrogate", answering({"s": "a\ud800b"}), [DECISION, ("outcome", "upstream_error", -31004)], -31004),
    Row("lone surrogate in a key", answering({"\udfff": 1}),
        [DECISION, ("outcome", "upstream_error", -31004)], -31004),
    Row("bytes value", answering({"b": b"raw"}), [DECISION, ("outcome", "upstream_error", -31004)], -31004),
    Row("nested beyond the encoder's depth", answering(_nested(300)),
        [DECISION, ("outcome", "upstream_error", -31004)], -31004),
]

ROWS = [
    *UNENCODABLE,
    Row("plain result", Upstream.done, [DECISION, ("outcome", "ok", None)], None),
    Row("tool error result", answering({"e": 1}, is_error=True), [DECISION, ("outcome", "tool_error", None)], None),
    Row("NaN", answering({"x": math.nan}), [DECISION, ("outcome", "ok", None)], None),
    Row("infinities", answering({"x": math.inf, "y": -math.inf}), [DECISION, ("outcome", "ok", None)], None),
    Row("upstream failed", raising(UpstreamFailed(detail="boom")),
        [DECISION, ("outcome", "upstream_error", -31004)], -31004),
    Row("result too large", raising(ResultTooLarge(detail="big")),
        [DECISION, ("outcome", "upstream_error", -31005)], -31005),
    Row("upstream unavailable", raising(UpstreamUnavailable(detail="gone")),
        [DECISION, ("outcome", "upstream_error", -31002)], -31002),
    Row("upstream timeout", raising(UpstreamTimeout(detail="slow")), [DECISION, ("outcome", "timeout", -31003)],
        -31003),
    Row("an rpc error from below", raising(InvalidParams("Invalid params")),
        [DECISION, ("outcome", "upstream_error", -32602)], -32602),
    Row("plain exception", raising(RuntimeError("bug")), [DECISION, ("outcome", "error", None)], -32603),
    Row("builtin timeout", raising(TimeoutError()), [DECISION, ("outcome", "error", None)], -32603),
    Row("outcome write fails once", Upstream.done, [DECISION, ("outcome", "error", -31001)], -31001,
        refuse={"outcome": 1}),
    Row("outcome write fails once after an upstream error", raising(UpstreamFailed(detail="boom")),
        [DECISION, ("outcome", "error", -31001)], -31001, refuse={"outcome": 1}),
    Row("outcome write fails once on an unencodable result", answering({"n": 2**70}),
        [DECISION, ("outcome", "error", -31001)], -31001, refuse={"outcome": 1}),
    Row("outcome write always fails", Upstream.done, [DECISION], -31001, refuse={"outcome": None}),
    Row("decision write fails", Upstream.done, [], -31001, refuse={"decision": 1}),
]


@pytest.mark.parametrize("row", ROWS, ids=repr)
async def test_one_outcome_per_decision(tmp_path: Path, row: Row) -> None:
    async with _Open(tmp_path) as s:
        s.upstream.plan = row.plan
        s.store.refuse.update(row.refuse or {})
        before = len(await s.gateway.records())
        answer = await s.gateway.call(INVOICE, dict(ARGS))
        records = await call_records(s.gateway, before)
        assert kinds(records) == row.records, row.name
        assert len({r["request_id"] for r in records}) <= 1  # all of one call
        if row.code is None:
            body = wire(answer)
            assert orjson.loads(body)["result"]["isError"] is (row.records[-1][1] == "tool_error")
            # the outcome states the size of exactly the result the caller got
            assert records[-1]["bytes"] == measured(orjson.loads(body)["result"])
        else:
            assert answer.code == row.code, answer
            assert "2**70" not in str(answer.body) and "1180591620717411303424" not in str(answer.body)
        # the upstream was asked exactly when a decision was written ahead
        assert s.upstream.entered.is_set() is (row.records != [])


async def test_nan_reaches_the_caller_as_null(tmp_path: Path) -> None:
    async with _Open(tmp_path) as s:
        s.upstream.plan = answering({"x": math.nan, "y": math.inf})
        answer = await s.gateway.call(INVOICE, dict(ARGS))
        assert orjson.loads(wire(answer))["result"]["structuredContent"] == {"x": None, "y": None}


async def test_the_answer_is_the_encoded_result_spliced(tmp_path: Path) -> None:
    """Byte for byte what ``orjson.dumps`` of the whole response gave before the splice (both eras)."""
    async with _Open(tmp_path) as s:
        s.upstream.plan = answering({"a": [1, 2.5, "é"], "b": None})
        for modern in (True, False):
            answer = await s.gateway.call(INVOICE, dict(ARGS), modern=modern)
            assert answer.result is not None
            expected = orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": dict(answer.result)})
            assert encode_response(1, answer.result) == expected


async def test_a_cancelled_call_gets_a_cancelled_outcome(tmp_path: Path) -> None:
    """A client that goes away while the call is forwarded cancels its task: the decision record
    is followed by exactly one ``cancelled`` outcome, written in a shielded scope."""
    async with _Open(tmp_path) as s:
        s.upstream.plan = hang
        before = len(await s.gateway.records())
        async with anyio.create_task_group() as tg:
            tg.start_soon(s.gateway.call, INVOICE, dict(ARGS))
            with anyio.fail_after(30):
                await s.upstream.entered.wait()
            tg.cancel_scope.cancel()
        records = await call_records(s.gateway, before)
        assert kinds(records) == [DECISION, ("outcome", "cancelled", None)]
        assert "cancelled_by" not in (await s.gateway.records())[-1].fields


async def test_a_call_whose_caller_went_away_is_cancelled_by_the_caller(tmp_path: Path) -> None:
    """The transport marks the call's departure before cancelling it (issue 13): the owed outcome says
    the caller cancelled it; a call cancelled for another reason (above) carries no ``cancelled_by``."""
    async with _Open(tmp_path) as s:
        s.upstream.plan = hang
        before = len(await s.gateway.records())
        departure = Departure()

        async def call() -> None:
            DEPARTURE.set(departure)  # as the transport does, in the call's own task
            await s.gateway.call(INVOICE, dict(ARGS))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            with anyio.fail_after(30):
                await s.upstream.entered.wait()
            departure.gone = True
            tg.cancel_scope.cancel()
        records = (await s.gateway.records())[before:]
        assert [(r.kind, r.fields.get("outcome"), r.fields.get("cancelled_by")) for r in records] == [
            ("decision", None, None), ("outcome", "cancelled", "caller")]


async def test_a_call_cancelled_from_the_start_leaves_a_pair_or_nothing(tmp_path: Path) -> None:
    """Cancelled before it began: wherever the cancellation lands, never a decision alone."""
    async with _Open(tmp_path) as s:
        s.upstream.plan = hang
        before = len(await s.gateway.records())
        with anyio.CancelScope() as scope:
            scope.cancel()
            await s.gateway.call(INVOICE, dict(ARGS))
        assert kinds(await call_records(s.gateway, before)) in ([], [DECISION, ("outcome", "cancelled", None)])


# ------------------------------------------------------------------ property: random failure points

_PLANS: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
    "ok": Upstream.done, "tool_error": answering({"e": 1}, is_error=True), "big_int": answering({"n": 2**70}),
    "surrogate": answering({"s": "\ud800"}), "int_key": answering({1: 2}), "nan": answering({"x": math.nan}),
    "failed": raising(UpstreamFailed(detail="x")), "timeout": raising(UpstreamTimeout(detail="x")),
    "unavailable": raising(UpstreamUnavailable(detail="x")), "crash": raising(RuntimeError("x")),
    "builtin_timeout": raising(TimeoutError()), "hang": hang,
}
_REFUSALS: list[dict[str, int | None]] = [{}, {}, {}, {"outcome": 1}, {"outcome": None}, {"decision": 1},
                                          {"decision": 1, "outcome": 1}]
_CALL = st.tuples(st.sampled_from(sorted(_PLANS)), st.sampled_from(range(len(_REFUSALS))), st.booleans())


async def _cancelled_call(s: Setup, modern: bool) -> None:
    async with anyio.create_task_group() as tg:
        async def call() -> None:
            await s.gateway.call(INVOICE, dict(ARGS), modern=modern)
            tg.cancel_scope.cancel()  # ended before it was forwarded (its decision was not written)

        tg.start_soon(call)
        with anyio.fail_after(30):
            await s.upstream.entered.wait()
        tg.cancel_scope.cancel()


async def _run_calls(tmp_path: Path, calls: list[tuple[str, int, bool]]) -> None:
    async with _Open(tmp_path) as s:
        answers: list[Any] = []
        for plan, refusal, modern in calls:
            s.upstream.plan, s.upstream.entered = _PLANS[plan], anyio.Event()
            s.store.refuse.clear()
            s.store.refuse.update(_REFUSALS[refusal])
            if plan == "hang":  # the client goes away while the upstream works
                await _cancelled_call(s, modern)
                answers.append(None)
            else:
                answers.append(await s.gateway.call(INVOICE, dict(ARGS), modern=modern))
        s.store.refuse.clear()
        by_call: dict[str, list[AuditRecord]] = {}
        for record in await s.gateway.records():
            if record.kind in ("decision", "outcome", "rejected"):
                by_call.setdefault(record.request_id, []).append(record)
        assert len(by_call) <= len(calls)
        for records in by_call.values():
            assert [r.kind for r in records] in (["decision"], ["decision", "outcome"]), records
        results = [a for a in answers if a is not None and a.result is not None]
        good = [rs[1] for rs in by_call.values() if len(rs) == 2 and rs[1].fields["outcome"] in ("ok", "tool_error")]
        assert len(good) == len(results)  # an ok outcome exactly for each result a caller got
        for record, answer in zip(good, results, strict=True):
            assert record.fields["output"]["bytes"] == measured(answer.result)
        # a decision alone only when the trail refused every outcome write for it (a cancelled call's
        # outcome is written once, by the record stage: one refused append is all it gets)
        lonely = sum(1 for rs in by_call.values() if len(rs) == 1)
        assert lonely <= sum(1 for plan, refusal, _ in calls if _REFUSALS[refusal].get("outcome", 0) is None
                             or (plan == "hang" and _REFUSALS[refusal].get("outcome") == 1))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_CALL, min_size=1, max_size=5))
def test_property_one_outcome_per_decision(calls: list[tuple[str, int, bool]]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        anyio.run(_run_calls, Path(directory), calls)


@pytest.mark.parametrize(("result", "fields"), [
    ({}, {"resultType": "complete"}),
    ({"content": []}, {"resultType": "complete", "_meta": {"k": "v"}}),
    ({"content": [], "_meta": {"upstream": 1}}, {"_meta": {"k": "v"}}),  # a key it had: encoded afresh
    ({"content": [{"text": "é\u2028"}], "isError": False}, {"_meta": {"io.x/y": "\u00e9"}}),
])
def test_splicing_members_gives_the_bytes_a_full_encoding_gives(result: dict[str, Any],
                                                                fields: dict[str, Any]) -> None:
    from portcullis.pipeline.context import encoded_result
    from portcullis.transport.protocol import add_fields

    encoded = encoded_result(result, orjson.dumps(result))
    add_fields(encoded, fields)
    expected = {**result, **fields}
    assert dict(encoded) == expected and encoded.encoded == orjson.dumps(expected)
    assert encode_response("r-1", encoded) == orjson.dumps({"jsonrpc": "2.0", "id": "r-1", "result": expected})
