"""Global limits on Redis: atomic across processes, fail closed when Redis is unreachable or stalls.

Real Redis only. ``CLIENT PAUSE … WRITE`` stalls every writer of the shared server for 1.5 s at most and is
always lifted in ``finally``; nothing here stops the server or flushes it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
import time
from typing import Any

import pytest
import redis

from portcullis.identity.principal import Principal
from portcullis.observability.metrics import GatewayMetrics
from portcullis.policy.limits import LimitFailure, LimitRule, check_limits
from portcullis.state import StateUnavailable
from portcullis.state.redis_store import RedisStateStore

T0 = 1_000_000.0
LIMIT = 300
PER_PROCESS = 200  # 3 x 200 = 600 attempts at a limit of 300


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends: nothing listens there


def _rule() -> LimitRule:
    return LimitRule.model_validate({"id": "global", "tools": ["t"], "per": ["agent"], "window_s": 3600,
                                     "max_calls": LIMIT})


def _principal() -> Principal:
    return Principal(client_id="console", auth_method="bearer", issuer="https://idp.example", agent_id="bot",
                     user_id="alice")


async def _hammer(url: str, prefix: str) -> int:
    store = RedisStateStore.from_url(url, key_prefix=prefix, connect_timeout_s=5, op_timeout_s=5)
    rule, principal = _rule(), _principal()

    async def one(i: int) -> bool:
        outcome = await check_limits([rule], store, tool="t", principal=principal, arguments={}, now=T0 + i * 1e-3)
        return outcome.allowed

    try:
        results = await asyncio.gather(*(one(i) for i in range(PER_PROCESS)))
    finally:
        await store.aclose()
    return sum(results)


def _worker(url: str, prefix: str, queue: Any, barrier: Any) -> None:
    barrier.wait(timeout=60)  # all three start together, so their calls interleave
    queue.put(asyncio.run(_hammer(url, prefix)))


def test_three_processes_hammering_one_limit_never_exceed_it(redis_url: str, redis_prefix: str) -> None:
    """Three processes x 200 concurrent calls against a limit of 300: exactly 300 accepted (within 5%, never over)."""
    ctx = multiprocessing.get_context("spawn")
    queue, barrier = ctx.Queue(), ctx.Barrier(3)
    procs = [ctx.Process(target=_worker, args=(redis_url, redis_prefix, queue, barrier)) for _ in range(3)]
    for proc in procs:
        proc.start()
    try:
        accepted = [queue.get(timeout=60) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=30)
    assert len(accepted) == 3  # every process made its 200 attempts (600 against a limit of 300)
    assert sum(accepted) <= LIMIT
    assert sum(accepted) >= LIMIT * 0.95


async def test_unreachable_redis_denies_a_limited_call_with_the_clear_error_and_counts_it() -> None:
    """A URL to a closed port: StateUnavailable (fixed text, no URL), the limit denies with limits/policy_error,
    and portcullis_state_store_errors_total{store="redis",op="window_add"} counts it."""
    metrics = GatewayMetrics(process_metrics=False)
    url = f"redis://:hunter2@127.0.0.1:{_closed_port()}/0"
    store = RedisStateStore.from_url(url, key_prefix="p:", connect_timeout_s=1, op_timeout_s=1,
                                     on_error=lambda op: metrics.state_store_error("redis", op))
    try:
        with pytest.raises(StateUnavailable) as raised:
            await store.window_add("k", 1, window_s=60, limit=5, now=T0)
        assert str(raised.value) == "state store unavailable"
        assert "hunter2" not in raised.value.detail and "127.0.0.1" not in raised.value.detail
        outcome = await check_limits([_rule()], store, tool="t", principal=_principal(), arguments={}, now=T0)
        assert outcome.failures == (LimitFailure("deny", "policy_error", "limits/policy_error"),)
        assert "hunter2" not in outcome.detail
        with pytest.raises(StateUnavailable):
            await store.value_get("k", now=T0)
    finally:
        await store.aclose()
    text = metrics.render()[0].decode()
    assert 'portcullis_state_store_errors_total{op="window_add",store="redis"} 2.0' in text
    assert 'portcullis_state_store_errors_total{op="value_get",store="redis"} 1.0' in text


async def test_a_paused_redis_times_out_fails_closed_and_recovers(redis_url: str, redis_prefix: str) -> None:
    """CLIENT PAUSE 1500 WRITE: an add past op_timeout_s is StateUnavailable (denied); after the pause, adds work."""
    store = RedisStateStore.from_url(redis_url, key_prefix=redis_prefix, connect_timeout_s=2, op_timeout_s=0.3)
    admin = redis.Redis.from_url(redis_url, socket_timeout=10)
    try:
        assert (await store.window_add("k", 1, window_s=60, limit=5, now=T0)).accepted
        admin.execute_command("CLIENT", "PAUSE", 1500, "WRITE")
        try:
            started = time.monotonic()
            with pytest.raises(StateUnavailable) as raised:
                await store.window_add("k", 1, window_s=60, limit=5, now=T0 + 1)
            assert time.monotonic() - started < 1.4  # bounded by the op timeout, not by the pause
            assert "Timeout" in raised.value.detail
            outcome = await check_limits([_rule()], store, tool="t", principal=_principal(), arguments={}, now=T0)
            assert not outcome.allowed
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
        deadline = time.monotonic() + 10
        while True:  # recovery: the pool drops the timed-out connections and opens new ones
            try:
                result = await store.window_add("k", 1, window_s=60, limit=5, now=T0 + 2)
                break
            except StateUnavailable:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        assert result.accepted
        # the timed-out adds may have counted once the paused writes ran
        assert await store.window_total("k", now=T0 + 2) in (2, 3, 4)
    finally:
        admin.close()
        await store.aclose()
