"""Rego cannot stall the gateway: evaluations run in worker processes, are stopped at their CPU
budget and fail closed (``policy_error``); the event loop only answers decision-cache hits.

Hostile modules (each a table row): a huge comprehension, a cross product over the caller's
arguments, an allocation of a billion numbers, a string blow-up, a backtracking regular expression
fed by the caller, and ``walk`` over a large input. Hostile pool states: every worker busy, a
worker or the zygote killed from outside, a caller cancelled mid-evaluation, forged worker replies.

No test depends on a timing margin: a "slow" evaluation needs seconds of CPU time and is
stopped at a budget far below that, and a "fast" one is checked to finish *while the slow one
is still running* (an ordering, not a duration), with generous bounds on top.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from portcullis.policy.rego import RegoPolicy
from portcullis.policy.rego_pool import BUSY, TIMEOUT, PoolSettings, RegoWorkers, _result
from tests.security.harness import INVOICE, REFUND, forwarded, in_process_gateway, refund

HEADER = "package portcullis.t\n\nimport rego.v1\n\n"
FAST = 'deny contains {"id": "fast", "reason": "fast"} if input.arguments.fast == true\n'
HEAVY: dict[str, str] = {
    # ~10^8 elements: seconds of CPU, all inside rego-cpp
    "huge-comprehension": 'x := count([v | some v in numbers.range(1, 100000000); v % 7 == 0]) '
                          'if input.arguments.go\n',
    # the caller chooses the size: 9,000 items make 81 million pairs
    "cross-product-of-arguments": 'x := count([[a, b] | some a in input.arguments.items; '
                                  'some b in input.arguments.items]) if input.arguments.go\n',
    # a billion numbers: the memory cap or the budget stops it, never the gateway's memory
    "allocation": 'x := count(numbers.range(1, 1000000000)) if input.arguments.go\n',
    "string-blow-up": 'x := count(concat("", [s | some i in numbers.range(1, 20000000); s := "aaaaaaaaaa"])) '
                      'if input.arguments.go\n',
    # rego-cpp's regex engine backtracks: (a+)+$ on "aaa…ab" is exponential in the caller's string
    "backtracking-regex": 'x := 1 if regex.match("^(a+)+$", input.arguments.s)\n',
    "walk-a-large-input": 'x := count([v | walk(input.arguments.items, [p, v]); some w in input.arguments.items; '
                          'w == v]) if input.arguments.go\n',
}
SLOW_ARGUMENTS = {"go": True, "items": list(range(9000)), "s": "a" * 60 + "b"}
USES_X = 'deny contains {"id": "x", "reason": "x"} if x < 0\n'


def policy(body: str, *, budget_s: float) -> RegoPolicy:
    return RegoPolicy.compile({"t.rego": HEADER + body + FAST + USES_X}, budget_s=budget_s)


def doc(**arguments: Any) -> dict[str, Any]:
    return {"principal": {}, "tool": {}, "arguments": arguments, "environment": "production",
            "now": "2027-01-15T08:00:00Z", "session": {}}


async def started(rego: RegoPolicy, **settings: Any) -> RegoWorkers:
    pool = rego.workers(PoolSettings(**settings))
    assert await pool.wait_ready(60)
    return pool


@pytest.mark.parametrize("body", list(HEAVY.values()), ids=list(HEAVY))
async def test_a_heavy_evaluation_is_stopped_at_its_budget_and_the_pool_recovers(body: str) -> None:
    """Each hostile module is stopped (timeout: deny), its worker replaced, and the next call answered."""
    rego = policy(body, budget_s=0.05)
    pool = await started(rego, size=1, memory_bytes=256 * 1024 * 1024)
    try:
        stopped = await rego.evaluate_async(doc(**SLOW_ARGUMENTS))
        assert stopped.error == TIMEOUT and stopped.findings == ()
        assert pool.lost_workers == 1  # terminated, not finished
        after = await rego.evaluate_async(doc(fast=True))
        assert after.error is None and [f.rule_id for f in after.findings] == ["fast"]
    finally:
        await pool.aclose()


async def test_a_slow_module_does_not_delay_a_concurrent_call() -> None:
    """While one worker burns its budget, another caller's evaluation is answered (the loop is free)."""
    rego = policy(HEAVY["huge-comprehension"], budget_s=3.0)  # needs far more than 3 s of CPU
    pool = await started(rego, size=2)
    try:
        slow = asyncio.create_task(rego.evaluate_async(doc(**SLOW_ARGUMENTS)))
        await asyncio.sleep(0.05)  # let it reach its worker (not needed for the ordering below)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0)
                ticks += 1

        counting = asyncio.create_task(ticker())
        began = time.monotonic()
        fast = await rego.evaluate_async(doc(fast=True, n=1))
        fast_s = time.monotonic() - began
        assert not slow.done()  # the fast call finished while the slow one still ran
        assert fast.error is None and [f.rule_id for f in fast.findings] == ["fast"]
        assert fast_s < 1.5  # a generous bound: typically well under a millisecond
        assert ticks > 0  # and the event loop kept turning meanwhile
        counting.cancel()
        stopped = await slow
        assert stopped.error == TIMEOUT  # stopped at its budget: a deny (policy_error)
    finally:
        await pool.aclose()


async def test_through_the_gateway_the_slow_call_is_refused_as_policy_error_and_the_fast_one_runs(
        tmp_path: Path) -> None:
    """End to end in process: the slow call is -31020 rego/policy_error; a concurrent call is forwarded."""
    module = HEADER + ('x := count([v | some v in numbers.range(1, 100000000)]) '
                       'if input.arguments.reason == "slow"\n') + USES_X
    rego = RegoPolicy.compile({"t.rego": module}, budget_s=2.0)
    async with in_process_gateway(tmp_path, rego=rego, rego_workers=PoolSettings(size=2)) as gw:
        slow = asyncio.create_task(gw.call(REFUND, {**refund(5), "reason": "slow"}))
        await asyncio.sleep(0.05)
        fast = await gw.call(INVOICE, {"invoice_id": "INV-1"})
        assert not slow.done() and fast.result is not None
        refused = await slow
        assert refused.code == -31020 and refused.error["data"] == {"rule_id": "rego/policy_error"}
        assert forwarded(gw) == [("get_invoice", {"invoice_id": "INV-1"})]
        record = await gw.decision_of_last_call()
        assert "policy_error" in record["decision"]["reasons"]


# ----------------------------------------------------------------------------- saturation and failures

async def test_a_saturated_pool_denies_after_its_wait_and_beyond_its_waiters_at_once() -> None:
    """Every worker busy: one more evaluation waits max_wait_s and is denied; past max_waiters, at once."""
    rego = policy(HEAVY["huge-comprehension"], budget_s=5.0)
    pool = await started(rego, size=1, max_wait_s=0.2, max_waiters=1)
    try:
        slow = asyncio.create_task(rego.evaluate_async(doc(**SLOW_ARGUMENTS)))
        while pool._idle:  # until the slow evaluation has taken the one worker
            await asyncio.sleep(0.01)
        waiting = asyncio.create_task(rego.evaluate_async(doc(fast=True, n=2)))
        await asyncio.sleep(0)
        refused_now = await rego.evaluate_async(doc(fast=True, n=3))  # the one waiter slot is taken
        assert refused_now.error == BUSY and not waiting.done()
        assert (await waiting).error == BUSY
        assert not slow.done()
        slow.cancel()  # the caller gives up: its worker is killed and replaced
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert (await rego.evaluate_async(doc(fast=True, n=4))).findings[0].rule_id == "fast"
    finally:
        await pool.aclose()


async def test_a_cache_hit_is_answered_on_the_loop_even_when_every_worker_is_busy() -> None:
    """Decision-cache hits need no worker: they stay cheap and available under a Rego stall."""
    rego = policy(HEAVY["huge-comprehension"], budget_s=5.0)
    pool = await started(rego, size=1, max_wait_s=0.2)
    try:
        assert (await rego.evaluate_async(doc(fast=True))).error is None  # now cached
        slow = asyncio.create_task(rego.evaluate_async(doc(**SLOW_ARGUMENTS)))
        while pool._idle:
            await asyncio.sleep(0.01)
        hits = rego.cache_hits
        cached = await rego.evaluate_async(doc(fast=True))
        assert cached.error is None and rego.cache_hits == hits + 1 and not slow.done()
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
    finally:
        await pool.aclose()


async def test_a_worker_killed_from_outside_is_replaced() -> None:
    """An idle worker that dies is noticed and replaced; no caller gets an error for it."""
    rego = policy("", budget_s=0.05)
    pool = await started(rego, size=1)
    try:
        victim = pool._idle[0].pid
        os.kill(victim, signal.SIGKILL)  # our own grandchild, started by this test
        for n in range(3):
            deadline = time.monotonic() + 30
            while True:
                result = await rego.evaluate_async(doc(fast=True, n=n))
                if result.error is None or time.monotonic() > deadline:
                    break
            assert result.error is None and result.findings[0].rule_id == "fast"
        assert all(worker.pid != victim for worker in pool._idle)
    finally:
        await pool.aclose()


async def test_a_dead_zygote_fails_closed_then_comes_back() -> None:
    """With the zygote gone, evaluations are denied (never allowed); it is restarted by itself."""
    rego = policy("", budget_s=0.05)
    pool = await started(rego, size=1, max_wait_s=0.1)
    try:
        zygote = pool._zygote
        assert zygote is not None
        zygote.kill()  # our own child process, started by this pool
        await zygote.wait()
        deadline = time.monotonic() + 60
        results = []
        while time.monotonic() < deadline:
            result = await rego.evaluate_async(doc(fast=True, n=len(results)))
            results.append(result)
            if result.error is None and pool._zygote is not zygote:
                break
            await asyncio.sleep(0.05)
        assert all(r.error is not None or [f.rule_id for f in r.findings] == ["fast"] for r in results)
        assert results[-1].error is None and pool._zygote is not zygote
    finally:
        await pool.aclose()


async def test_closing_the_pool_stops_its_processes() -> None:
    """aclose() leaves no zygote behind (its workers die with it)."""
    rego = policy("", budget_s=0.05)
    pool = await started(rego, size=2)
    zygote = pool._zygote
    assert zygote is not None
    await pool.aclose()
    assert zygote.returncode is not None
    assert (await rego.evaluate_async(doc(fast=True, n=9))).error == BUSY  # closed: fail closed


async def test_a_worker_sees_none_of_the_gateways_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``opa.runtime().env`` in a worker holds only what Python needs, never the gateway's secrets."""
    monkeypatch.setenv("PORTCULLIS_TEST_SECRET", "hunter2")
    module = HEADER + ('deny contains {"id": "leak", "reason": "leak"} if '
                       'opa.runtime().env.PORTCULLIS_TEST_SECRET == "hunter2"\n'
                       'deny contains {"id": "no_env", "reason": "no_env"} if not opa.runtime().env.PATH\n')
    rego = RegoPolicy.compile({"t.rego": module}, budget_s=1.0)
    assert [f.rule_id for f in rego.evaluate(doc()).findings] == ["leak"]  # in process it would leak
    pool = await started(rego, size=1)
    try:
        result = await rego.evaluate_async(doc())
        assert result.error is None and result.findings == ()
    finally:
        await pool.aclose()


# ----------------------------------------------------------------------------- hostile inputs and replies

def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


INPUTS: list[tuple[str, dict[str, Any], str | None]] = [
    ("nan", {"fast": True, "x": float("nan")}, "input"),
    ("infinity", {"fast": True, "x": float("inf")}, "input"),
    ("set", {"fast": True, "x": {1, 2}}, "input"),
    ("bytes", {"fast": True, "x": b"\x00"}, "input"),
    ("lone-surrogate", {"fast": True, "x": "\ud800"}, "input"),
    ("too-many-values", {"fast": True, "x": list(range(20_000))}, "input"),
    ("too-deep", {"fast": True, "x": nested(80)}, "input"),
    ("non-string-key", {"fast": True, "x": {1: "a"}}, "input"),
    ("non-string-key-next-to-a-huge-int", {"fast": True, "x": {1: 2**80}}, "input"),
    ("huge-int", {"fast": True, "x": 2**80}, None),
    ("quote-injection", {"fast": True, "x": '"}], "expressions": [[]]}'}, None),
]


@pytest.mark.parametrize(("arguments", "error"), [row[1:] for row in INPUTS], ids=[row[0] for row in INPUTS])
async def test_hostile_input_is_exact_or_an_error_never_a_silent_allow(arguments: dict[str, Any],
                                                                       error: str | None) -> None:
    """Non-JSON, oversized or deep input is an error (deny); exotic but valid JSON is evaluated exactly."""
    rego = RegoPolicy.compile({"t.rego": HEADER + FAST + 'deny contains {"id": "seen", "reason": "seen"} '
                                                        'if input.arguments.x\n'}, budget_s=1.0)
    pool = await started(rego, size=1)
    try:
        result = await rego.evaluate_async(doc(**arguments))
        if error is None:
            assert result.error is None and {f.rule_id for f in result.findings} == {"fast", "seen"}
        else:
            assert result.error is not None and result.error.startswith(error)
    finally:
        await pool.aclose()


REPLIES: list[tuple[str, bytes]] = [
    ("not-json", b"{"),
    ("not-an-object", b"[]"),
    ("missing-keys", b"{}"),
    ("bad-effect", b'{"f": [["allow", "x", "y"]], "o": []}'),
    ("bad-rule-id", b'{"f": [["deny", "x y", "y"]], "o": []}'),
    ("bad-reason", b'{"f": [["deny", "x", "Not Snake"]], "o": []}'),
    ("short-finding", b'{"f": [["deny", "x"]], "o": []}'),
    ("bad-obligation", b'{"f": [], "o": [["delete", "/x"]]}'),
    ("bad-pointer", b'{"f": [], "o": [["redact", "x"]]}'),
    ("empty-error", b'{"e": ""}'),
    ("non-string-error", b'{"e": 1}'),
]


@pytest.mark.parametrize("reply", [r for _, r in REPLIES], ids=[n for n, _ in REPLIES])
def test_a_malformed_worker_reply_is_an_error(reply: bytes) -> None:
    """The gateway checks a worker's answer again: anything malformed is an error (deny), never fewer findings."""
    assert _result(reply).error is not None
