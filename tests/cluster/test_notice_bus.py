"""The notice bus on the real Redis: delivery between instances, reconnects, and the poll backstop.

Two ``KillSwitches`` over one store file stand for two replicas (the store is shared; the bus carries only
"refresh now"). The dropped connection is this test's own subscriber, found by its CLIENT SETNAME and
killed by id: no other client of the shared server is touched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis

from portcullis.kill.runtime import KillSwitches
from portcullis.kill.store import SqliteKillSwitchStore
from portcullis.storage.bus import MAX_PAYLOAD_CHARS, RESYNC, LocalNoticeBus, RedisNoticeBus


async def wait_for(condition: Callable[[], bool], deadline_s: float = 10.0) -> float:
    """Seconds until ``condition()`` held; fails after ``deadline_s`` (generous: no timing asserts)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > deadline_s:
            pytest.fail("condition not met in time")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


@pytest.fixture
async def buses(redis_url: str, redis_prefix: str) -> AsyncIterator[tuple[RedisNoticeBus, RedisNoticeBus]]:
    a = RedisNoticeBus(redis_url, key_prefix=redis_prefix, backoff_s=(0.05, 0.5))
    b = RedisNoticeBus(redis_url, key_prefix=redis_prefix, backoff_s=(0.05, 0.5))
    tasks = [asyncio.create_task(bus.run()) for bus in (a, b)]
    try:
        await asyncio.wait_for(asyncio.gather(a.connected.wait(), b.connected.wait()), 10)
        yield a, b
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await a.aclose()
        await b.aclose()


def kill_subscriber(redis_url: str, name: str) -> int:
    """CLIENT KILL ID for the pub/sub connection named ``name`` (ours); how many were killed."""
    admin = redis.Redis.from_url(redis_url, socket_timeout=10)
    try:
        ids = [c["id"] for c in admin.client_list(_type="pubsub") if c.get("name") == name]
        for client_id in ids:
            admin.execute_command("CLIENT", "KILL", "ID", client_id)
        return len(ids)
    finally:
        admin.close()


async def test_a_notice_from_one_bus_reaches_another(buses: tuple[RedisNoticeBus, RedisNoticeBus]) -> None:
    """Published on A, delivered on B (and on A itself); payloads over the bound and unknown topics are not sent."""
    a, b = buses
    got_b: list[tuple[str, str]] = []
    b.subscribe("kill_switches", lambda p: got_b.append(("kill_switches", p)))
    b.subscribe("policy", lambda p: got_b.append(("policy", p)))
    assert await a.publish("kill_switches", "ks-1")
    await wait_for(lambda: ("kill_switches", "ks-1") in got_b, 5)
    assert await a.publish("policy", "ps-2")
    await wait_for(lambda: ("policy", "ps-2") in got_b, 5)
    assert not await a.publish("kill_switches", "x" * (MAX_PAYLOAD_CHARS + 1))
    assert not await a.publish("flushall", "x")
    with pytest.raises(ValueError):
        b.subscribe("other", lambda p: None)


async def test_a_failing_callback_does_not_stop_the_bus(buses: tuple[RedisNoticeBus, RedisNoticeBus]) -> None:
    a, b = buses
    got: list[str] = []

    def broken(payload: str) -> None:
        raise RuntimeError("receiver bug")

    b.subscribe("revocations", broken)
    b.subscribe("revocations", got.append)
    await a.publish("revocations", "one")
    await a.publish("revocations", "two")
    await wait_for(lambda: got == ["one", "two"], 5)


async def test_publish_to_an_unreachable_redis_returns_false_and_never_raises() -> None:
    bus = RedisNoticeBus("redis://127.0.0.1:1/0", key_prefix="p:", connect_timeout_s=0.5, op_timeout_s=0.5)
    try:
        assert not await bus.publish("kill_switches", "ks-1")
    finally:
        await bus.aclose()


async def test_local_bus_delivers_in_process() -> None:
    bus = LocalNoticeBus()
    got: list[str] = []

    async def receive(payload: str) -> None:
        got.append(payload)

    bus.subscribe("policy", receive)
    assert await bus.publish("policy", "ps-1")
    assert got == ["ps-1"]
    assert not await bus.publish("nope", "x")


async def test_a_kill_switch_set_on_one_replica_applies_on_the_other_by_notice(
        tmp_path: Path, buses: tuple[RedisNoticeBus, RedisNoticeBus]) -> None:
    """With polling slowed to a minute, only the notice can carry the switch: it applies on B within a second
    of A's set (a generous deadline guards the test; the figure is printed)."""
    a_bus, b_bus = buses
    path = tmp_path / "kill.sqlite3"
    a = KillSwitches(SqliteKillSwitchStore(path), poll_s=60)
    b = KillSwitches(SqliteKillSwitchStore(path), poll_s=60)
    a.start()
    b.start()
    a.connect(a_bus)
    b.connect(b_bus)
    switch = await a.set("agent", "billing-bot", "incident", "test")
    took = await wait_for(lambda: any(s.id == switch.id for s in b.snapshot.switches), 5)
    print(f"kill switch applied on the other replica after {took * 1000:.0f} ms")
    await a.lift(switch.id, "resolved", "test")
    await wait_for(lambda: not b.snapshot.switches, 5)


async def test_a_dropped_subscriber_reconnects_and_the_poll_backstop_applies_changes(
        tmp_path: Path, redis_url: str, redis_prefix: str, buses: tuple[RedisNoticeBus, RedisNoticeBus]) -> None:
    """B's pub/sub connection is killed (CLIENT KILL ID, ours only) and B waits >= 1.5 s to reconnect: a switch
    set meanwhile reaches B by its 0.5 s poll while it is disconnected; B then reconnects, its callbacks get a
    resync, and later notices arrive again."""
    a_bus, _ = buses
    b_bus = RedisNoticeBus(redis_url, key_prefix=redis_prefix, backoff_s=(3.0, 3.0))
    bus_task = asyncio.create_task(b_bus.run())
    path = tmp_path / "kill.sqlite3"
    a = KillSwitches(SqliteKillSwitchStore(path), poll_s=60)
    b = KillSwitches(SqliteKillSwitchStore(path), poll_s=0.5)
    a.start()
    b.start()
    a.connect(a_bus)
    b.connect(b_bus)
    resyncs: list[str] = []
    b_bus.subscribe("policy", lambda p: resyncs.append(p) if p == RESYNC else None)
    poller = asyncio.create_task(b.run())
    try:
        await asyncio.wait_for(b_bus.connected.wait(), 10)
        assert kill_subscriber(redis_url, b_bus.client_name) == 1
        await wait_for(lambda: not b_bus.connected.is_set(), 5)
        switch = await a.set("tool", "billing.refund", "incident", "test")
        await wait_for(lambda: any(s.id == switch.id for s in b.snapshot.switches), 10)
        assert b_bus.reconnects == 1 and not b_bus.connected.is_set()  # applied by the poll, not by a notice
        await wait_for(lambda: b_bus.connected.is_set(), 10)
        await wait_for(lambda: resyncs == [RESYNC], 5)  # callbacks told to refresh after the reconnect
        got: list[str] = []
        b_bus.subscribe("revocations", got.append)
        await a_bus.publish("revocations", "after-reconnect")
        await wait_for(lambda: got == ["after-reconnect"], 5)
    finally:
        for task in (poller, bus_task):
            task.cancel()
        await asyncio.gather(poller, bus_task, return_exceptions=True)
        await b_bus.aclose()


async def test_oversized_notices_published_by_anyone_are_dropped(
        buses: tuple[RedisNoticeBus, RedisNoticeBus], redis_url: str) -> None:
    """A raw PUBLISH of 5,000 characters (bypassing publish's bound) never reaches a callback; later ones do."""
    _, b = buses
    got: list[str] = []
    b.subscribe("kill_switches", got.append)
    admin = redis.Redis.from_url(redis_url, socket_timeout=10)
    try:
        admin.publish(b.channel("kill_switches"), "x" * 5_000)
        admin.publish(b.channel("kill_switches"), "ok")
    finally:
        admin.close()
    await wait_for(lambda: got == ["ok"], 5)


async def test_a_change_is_made_even_when_its_notice_cannot_be_sent(tmp_path: Path) -> None:
    """Redis unreachable: set and lift still succeed and apply locally; only the notice is lost (polls carry it)."""
    bus = RedisNoticeBus("redis://127.0.0.1:1/0", key_prefix="p:", connect_timeout_s=0.5, op_timeout_s=0.5)
    kills = KillSwitches(SqliteKillSwitchStore(tmp_path / "kill.sqlite3"), poll_s=60)
    kills.start()
    kills.connect(bus)
    try:
        switch = await kills.set("agent", "billing-bot", "incident", "test")
        assert [s.id for s in kills.snapshot.switches] == [switch.id]
        await kills.lift(switch.id, "resolved", "test")
        assert kills.snapshot.switches == ()
    finally:
        await bus.aclose()
