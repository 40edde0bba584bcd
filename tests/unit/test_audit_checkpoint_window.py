"""The tail window: every durable record is covered by a checkpoint at most ``every_s`` later, busy or idle.

The store is inline (``durability="process"``: no worker threads) and time is a manual clock:
:meth:`ManualClock.advance_to` moves it and wakes the checkpointer's sleeps that are due, then
waits until every task is blocked again, so nothing depends on real timing.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portcullis.audit.checkpoint import Checkpointer, CheckpointPolicy
from portcullis.audit.record import Checkpoint
from portcullis.audit.store import SqliteAuditStore
from portcullis.audit.writer import AuditWriter

KEY = Ed25519PrivateKey.generate()
T0 = 1_800_000_000.0


class ManualClock:
    def __init__(self) -> None:
        self.now = T0
        self._sleepers: list[tuple[float, anyio.Event]] = []
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        event = anyio.Event()
        self._sleepers.append((self.now + seconds, event))
        await event.wait()

    async def advance_to(self, when: float) -> None:
        """Move time forward to ``when``, waking due sleepers in deadline order."""
        while True:
            due = sorted((d for d in self._sleepers if d[0] <= when), key=lambda d: d[0])
            if not due:
                break
            deadline, event = due[0]
            self._sleepers.remove(due[0])
            self.now = max(self.now, deadline)
            event.set()
            await anyio.wait_all_tasks_blocked()
        self.now = max(self.now, when)
        await anyio.wait_all_tasks_blocked()


PATTERNS = {
    "one-record-when-idle": [0.0],
    "two-records-close-together": [0.0, 0.4],
    "busy-ten-per-second": [i / 10 for i in range(35)],
    "burst-then-silence": [0.0, 0.01, 0.02, 0.03, 5.0],
    "just-under-the-window": [0.0, 0.999, 1.998, 2.997],
    "just-over-the-window": [0.0, 1.001, 2.002],
    "slow-trickle": [i * 0.7 for i in range(8)],
}


@pytest.mark.parametrize("every_s", [1.0, 0.25])
@pytest.mark.parametrize("pattern", sorted(PATTERNS))
async def test_every_record_is_signed_within_the_window(tmp_path: Path, pattern: str, every_s: float) -> None:
    """Whatever the arrival pattern, the first checkpoint covering a record is at most every_s after it."""
    clock = ManualClock()
    signed: list[Checkpoint] = []
    async with await SqliteAuditStore.open(tmp_path / "a.db", durability="process") as store:
        checkpointer = Checkpointer(store, KEY, clock=clock, policy=CheckpointPolicy(every_records=1000,
                                                                                      every_s=every_s),
                                    on_checkpoint=signed.append, sleep=clock.sleep)
        stamps: list[float] = []
        async with AuditWriter(store, clock=clock, max_delay_s=0, checkpointer=checkpointer) as writer, \
                anyio.create_task_group() as tg:
            tg.start_soon(checkpointer.run)
            for offset in PATTERNS[pattern]:
                await clock.advance_to(T0 + offset)
                stamps.append((await writer.record("decision", "r", {"n": len(stamps)})).ts)
            await clock.advance_to(clock.now + every_s)
            tg.cancel_scope.cancel()
        assert [c.index for c in await store.checkpoints()] == [c.index for c in signed]
    for index, ts in enumerate(stamps):
        covering = next(c for c in signed if c.index >= index)
        assert covering.ts - ts <= every_s + 1e-9, (index, covering)
    assert signed[-1].index == len(stamps) - 1


async def test_a_busy_writer_signs_about_once_per_window_not_per_record(tmp_path: Path) -> None:
    """Ten records a second for 3.5 s make a handful of checkpoints, not 35."""
    clock = ManualClock()
    signed: list[Checkpoint] = []
    async with await SqliteAuditStore.open(tmp_path / "a.db", durability="process") as store:
        checkpointer = Checkpointer(store, KEY, clock=clock, policy=CheckpointPolicy(every_s=1.0),
                                    on_checkpoint=signed.append, sleep=clock.sleep)
        async with AuditWriter(store, clock=clock, max_delay_s=0, checkpointer=checkpointer) as writer, \
                anyio.create_task_group() as tg:
            tg.start_soon(checkpointer.run)
            for i in range(35):
                await clock.advance_to(T0 + i / 10)
                await writer.record("decision", "r", {"n": i})
            await clock.advance_to(clock.now + 1.0)
            tg.cancel_scope.cancel()
    assert 4 <= len(signed) <= 6


async def test_an_idle_checkpointer_does_not_wake_up(tmp_path: Path) -> None:
    """With nothing unsigned, run() waits on an event: no sleeps, no checkpoints."""
    clock = ManualClock()
    async with await SqliteAuditStore.open(tmp_path / "a.db", durability="process") as store:
        checkpointer = Checkpointer(store, KEY, clock=clock, sleep=clock.sleep)
        async with anyio.create_task_group() as tg:
            tg.start_soon(checkpointer.run)
            await clock.advance_to(T0 + 100)
            tg.cancel_scope.cancel()
        assert await store.checkpoints() == []
    assert clock.slept == []


async def test_clean_stop_signs_the_unsigned_tail(tmp_path: Path) -> None:
    """Closing the writer checkpoints a head that the window had not reached yet."""
    clock = ManualClock()
    async with await SqliteAuditStore.open(tmp_path / "a.db", durability="process") as store:
        checkpointer = Checkpointer(store, KEY, clock=clock, sleep=clock.sleep)
        async with AuditWriter(store, clock=clock, max_delay_s=0, checkpointer=checkpointer) as writer:
            await writer.record("decision", "r", {"n": 0})
            clock.now += 0.1
            await writer.record("decision", "r", {"n": 1})
            assert [c.index for c in await store.checkpoints()] == [0]
        assert [c.index for c in await store.checkpoints()] == [0, 1]


async def test_an_export_hook_that_raises_does_not_stop_the_chain(tmp_path: Path) -> None:
    """A failing SIEM hand-off is logged; the checkpoint is stored and the writer goes on."""
    def explode(checkpoint: Checkpoint) -> None:
        raise RuntimeError("exporter broke")

    clock = ManualClock()
    async with await SqliteAuditStore.open(tmp_path / "a.db", durability="process") as store:
        checkpointer = Checkpointer(store, KEY, clock=clock, on_checkpoint=explode, sleep=clock.sleep)
        async with AuditWriter(store, clock=clock, max_delay_s=0, checkpointer=checkpointer) as writer:
            await writer.record("decision", "r", {"n": 0})
            await writer.record("decision", "r", {"n": 1})
        assert [c.index for c in await store.checkpoints()] == [0, 1]


async def test_a_tail_left_unsigned_by_a_crash_is_signed_when_the_checkpointer_starts(tmp_path: Path) -> None:
    """Records written with no checkpoint (a killed gateway) are signed as soon as run() begins."""
    clock = ManualClock()
    async with await SqliteAuditStore.open(tmp_path / "a.db", durability="process") as store:
        async with AuditWriter(store, clock=clock, max_delay_s=0) as writer:
            for n in range(3):
                await writer.record("decision", "r", {"n": n})
        checkpointer = Checkpointer(store, KEY, clock=clock, sleep=clock.sleep)
        async with anyio.create_task_group() as tg:
            tg.start_soon(checkpointer.run)
            await clock.advance_to(T0)
            tg.cancel_scope.cancel()
        assert [c.index for c in await store.checkpoints()] == [2]
