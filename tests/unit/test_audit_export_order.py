"""The writer feeds the SIEM export: chain order, every durable record once, never before it is durable.

Hostile rows: many concurrent writers with random delays, against an inline store whose
committing callers then wait a random time in the checkpointer (so callers resume out of chain
order: feeding the export from the callers, as before, reorders it), and against a group-commit
store whose appends are randomly slow and of which every other one fails.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portcullis.audit import AuditRecord, AuditUnavailable, AuditWriter, Checkpoint, SqliteAuditStore
from portcullis.audit.checkpoint import Checkpointer, CheckpointPolicy
from portcullis.audit.siem import ExportQueue, RecordingExporter


def clock() -> float:
    return 1_800_000_000.0


class HostileStore:
    """Wraps a real store: notes what is durable; appends may be slow (random) and every Nth fails."""

    def __init__(self, inner: SqliteAuditStore, rng: random.Random, *, max_delay_s: float = 0.0,
                 fail_every: int = 0) -> None:
        self.inner, self.rng, self.max_delay_s, self.fail_every = inner, rng, max_delay_s, fail_every
        self.appends = 0
        self.inline = inner.inline  # an inline store must stay atomic: no delay is added to it
        self.durable: set[int] = set()

    async def append(self, batch: Sequence[AuditRecord]) -> None:
        if self.max_delay_s and not self.inline:
            await anyio.sleep(self.rng.random() * self.max_delay_s)
        self.appends += 1
        if self.fail_every and self.appends % self.fail_every == 0:
            raise OSError("disk full")
        await self.inner.append(batch)
        self.durable.update(r.index for r in batch)

    async def head(self) -> tuple[int, str] | None:
        return await self.inner.head()

    async def read(self, from_index: int, limit: int) -> list[AuditRecord]:
        return await self.inner.read(from_index, limit)

    async def add_checkpoint(self, checkpoint: Checkpoint) -> None:  # slow too: callers wait in the checkpointer
        await anyio.sleep(self.rng.random() * 0.002)
        await self.inner.add_checkpoint(checkpoint)

    async def checkpoints(self) -> list[Checkpoint]:
        return await self.inner.checkpoints()


class SlowCheckpointer(Checkpointer):
    """A real checkpointer that first waits a random time, as one does while signing and storing a checkpoint."""

    def __init__(self, rng: random.Random, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rng = rng

    async def after_append(self, head: tuple[int, str], *, force: bool = False) -> Checkpoint | None:
        await anyio.sleep(self.rng.random() * 0.002)
        return await super().after_append(head, force=force)


async def _hammer(writer: AuditWriter, rng: random.Random, *, writers: int, each: int) -> int:
    """``writers`` tasks, each writing ``each`` records with random pauses; returns how many failed."""
    failed = 0

    async def one(w: int) -> None:
        nonlocal failed
        for i in range(each):
            await anyio.sleep(rng.random() * 0.002)
            try:
                await writer.record("decision", f"req-{w}-{i}", {"w": w, "i": i})
            except AuditUnavailable:
                failed += 1

    async with anyio.create_task_group() as tg:
        for w in range(writers):
            tg.start_soon(one, w)
    return failed


@pytest.mark.parametrize(("durability", "max_delay_s", "fail_every"), [
    ("process", 0.0, 0.0),  # inline commits: each committing caller then waits a random time in the checkpointer
    ("power", 0.003, 2),  # group commit; slow appends, every other batch fails (its callers are refused)
], ids=["inline-checkpointed", "group-commit-slow-failing"])
async def test_export_is_exactly_the_chain_in_order_under_concurrent_writers(
        tmp_path: Path, durability: str, max_delay_s: float, fail_every: int) -> None:
    rng = random.Random(1606)
    exporter = RecordingExporter()
    checkpoint_lines: list[tuple[int, int]] = []  # (checkpoint index, records exported when it was offered)
    not_yet_durable: list[int] = []
    async with await SqliteAuditStore.open(tmp_path / "a.db", durability=durability) as inner:
        store = HostileStore(inner, rng, max_delay_s=max_delay_s, fail_every=fail_every)
        async with ExportQueue([exporter], max_pending=100_000, flush_timeout_s=30) as queue:
            offered: list[int] = []

            def export(line: dict[str, Any]) -> bool:
                if line["index"] not in store.durable:
                    not_yet_durable.append(line["index"])
                offered.append(line["index"])
                return queue.offer(line)

            checkpointer = SlowCheckpointer(rng, store, Ed25519PrivateKey.generate(), clock=clock,
                                            policy=CheckpointPolicy(every_records=1, every_s=3600),
                                            on_checkpoint=lambda c: checkpoint_lines.append((c.index, len(offered))))
            async with AuditWriter(store, clock=clock, checkpointer=checkpointer, export=export) as writer:
                failed = await _hammer(writer, rng, writers=48, each=8)
        chain = await inner.read(0, 1_000_000)
    exported = [line["index"] for line in exporter.records]
    assert not not_yet_durable  # never offered before its batch committed
    assert exported == [r.index for r in chain] == list(range(len(chain)))  # strictly increasing, no gap, once
    assert [line["hash"] for line in exporter.records] == [r.hash for r in chain]
    assert len(chain) + failed == 48 * 8
    if fail_every:  # at least two batches (384 records, at most 256 a batch), so one failed
        assert failed  # the hostile store did refuse batches, and none of theirs was exported
    # each checkpoint was offered after every record it covers
    assert checkpoint_lines and all(covered <= seen for covered, seen in ((i + 1, n) for i, n in checkpoint_lines))


async def test_a_stuck_sink_never_blocks_or_fails_an_append_and_what_overflows_is_counted(tmp_path: Path) -> None:
    exporter = RecordingExporter()
    exporter.gate = anyio.Event()  # the destination never answers
    async with await SqliteAuditStore.open(tmp_path / "a.db") as store:
        async with ExportQueue([exporter], max_pending=5, flush_timeout_s=0) as queue:
            async with AuditWriter(store, clock=clock, max_delay_s=0, export=queue.offer) as writer:
                with anyio.fail_after(30):
                    for i in range(20):
                        await writer.record("decision", f"req-{i}", {"i": i})
            stats = queue.stats()["recording"]
            assert (stats.dropped, stats.depth) == (15, 5)
        assert len(await store.read(0, 100)) == 20
    assert queue.stats()["recording"].dropped == 20  # the flush gave up on the five it held: counted too


async def test_an_export_hook_that_raises_is_logged_and_the_append_still_succeeds(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def broken(_line: dict[str, Any]) -> bool:
        raise RuntimeError("bug")

    async with await SqliteAuditStore.open(tmp_path / "a.db") as store:
        async with AuditWriter(store, clock=clock, max_delay_s=0, export=broken) as writer:
            with caplog.at_level(logging.ERROR, logger="portcullis.audit.writer"):
                record = await writer.record("decision", "req-1", {})
        assert [r.hash for r in await store.read(0, 10)] == [record.hash]
    assert "audit export hook raised" in caplog.text
