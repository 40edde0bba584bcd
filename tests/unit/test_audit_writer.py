"""The group-commit writer: write-ahead results, batching, backpressure and failing closed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portcullis.audit import (
    AuditRecord,
    AuditUnavailable,
    AuditWriter,
    Checkpoint,
    SqliteAuditStore,
    verify_store,
)


def clock() -> float:
    return 1_800_000_000.0


class GatedStore:
    """Wraps a real store: counts appends, can hold the next append on a gate, or fail appends."""

    def __init__(self, inner: SqliteAuditStore) -> None:
        self.inner = inner
        self.appends: list[int] = []
        self.gate: anyio.Event | None = None
        self.entered = anyio.Event()
        self.fail_next = 0

    async def append(self, batch: Sequence[AuditRecord]) -> None:
        self.entered.set()
        if self.gate is not None:
            gate, self.gate = self.gate, None
            await gate.wait()
        if self.fail_next:
            self.fail_next -= 1
            raise OSError("disk full")
        await self.inner.append(batch)
        self.appends.append(len(batch))

    async def head(self) -> tuple[int, str] | None:
        return await self.inner.head()

    async def read(self, from_index: int, limit: int) -> list[AuditRecord]:
        return await self.inner.read(from_index, limit)

    async def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        await self.inner.add_checkpoint(checkpoint)

    async def checkpoints(self) -> list[Checkpoint]:
        return await self.inner.checkpoints()


async def run_concurrently(writer: AuditWriter, n: int, results: dict[int, object]) -> None:
    async def one(i: int) -> None:
        try:
            results[i] = await writer.record("decision", f"req-{i}", {"i": i})
        except AuditUnavailable as exc:
            results[i] = exc

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)


async def test_record_returns_the_durable_chained_record(tmp_path: Path) -> None:
    """The record a caller gets back is already in the store, chained to the one before."""
    async with await SqliteAuditStore.open(tmp_path / "a.db") as store:
        async with AuditWriter(store, clock=clock, max_delay_s=0) as writer:
            first = await writer.record("decision", "r1", {"tool": "refund"})
            second = await writer.record("outcome", "r1", {"duration_ms": 3})
            assert await store.read(0, 10) == [first, second]
        assert second.prev_hash == first.hash and first.ts == clock()


async def test_concurrent_records_share_few_transactions(tmp_path: Path) -> None:
    """600 concurrent callers are committed in at most 4 transactions, none over max_batch."""
    async with await SqliteAuditStore.open(tmp_path / "a.db") as inner:
        store = GatedStore(inner)
        gate = store.gate = anyio.Event()
        results: dict[int, object] = {}
        async with AuditWriter(store, clock=clock, max_delay_s=0, max_batch=256) as writer:
            async with anyio.create_task_group() as tg:
                tg.start_soon(run_concurrently, writer, 600, results)
                await store.entered.wait()
                await anyio.wait_all_tasks_blocked()
                gate.set()
        assert sum(store.appends) == 600 and len(store.appends) <= 4 and max(store.appends) <= 256
        assert all(isinstance(r, AuditRecord) for r in results.values())
        assert sorted(r.index for r in results.values()) == list(range(600))
        report = await verify_store(inner, Ed25519PrivateKey.generate().public_key())
        assert (report.ok, report.records_checked) == (True, 600)


async def test_failed_append_fails_every_waiting_caller_and_writes_nothing(tmp_path: Path) -> None:
    """When the store raises, every caller in that batch gets AuditUnavailable and no row is written."""
    async with await SqliteAuditStore.open(tmp_path / "a.db") as inner:
        store = GatedStore(inner)
        async with AuditWriter(store, clock=clock, max_delay_s=0) as writer:
            await writer.record("decision", "before", {})
            gate = store.gate = anyio.Event()
            store.fail_next = 10**6
            store.entered = anyio.Event()
            results: dict[int, object] = {}
            async with anyio.create_task_group() as tg:
                tg.start_soon(run_concurrently, writer, 50, results)
                await store.entered.wait()
                await anyio.wait_all_tasks_blocked()
                gate.set()
            store.fail_next = 0
            assert len(results) == 50 and all(isinstance(r, AuditUnavailable) for r in results.values())
            assert all("disk full" not in r.message for r in results.values())  # type: ignore[union-attr]
            assert await inner.head() == (0, (await inner.read(0, 1))[0].hash)
            after = await writer.record("decision", "after", {})  # head re-read; chain continues
        assert after.index == 1


async def test_chain_continues_after_another_writer_moved_the_head(tmp_path: Path) -> None:
    """A stale head is refused by the store, that batch fails closed, and the next batch re-reads the head."""
    async with await SqliteAuditStore.open(tmp_path / "a.db") as store:
        async with AuditWriter(store, clock=clock, max_delay_s=0) as a, AuditWriter(store, clock=clock) as b:
            await a.record("decision", "a1", {})
            await b.record("decision", "b1", {})
            with pytest.raises(AuditUnavailable):
                await a.record("decision", "a2", {})  # a's cached head is stale
            assert (await a.record("decision", "a3", {})).index == 2
        report = await verify_store(store, Ed25519PrivateKey.generate().public_key())
        assert (report.ok, report.records_checked) == (True, 3)


async def test_full_queue_makes_callers_wait(tmp_path: Path) -> None:
    """With max_pending reached, further callers block in record() instead of growing the queue."""
    async with await SqliteAuditStore.open(tmp_path / "a.db") as inner:
        store = GatedStore(inner)
        gate = store.gate = anyio.Event()
        results: dict[int, object] = {}
        async with AuditWriter(store, clock=clock, max_delay_s=0, max_batch=1, max_pending=4) as writer:
            async with anyio.create_task_group() as tg:
                tg.start_soon(run_concurrently, writer, 20, results)
                await store.entered.wait()
                await anyio.wait_all_tasks_blocked()
                assert writer._send.statistics().current_buffer_used == 4
                assert writer._send.statistics().tasks_waiting_send == 15
                gate.set()
        assert len(results) == 20 and all(isinstance(r, AuditRecord) for r in results.values())


@pytest.mark.parametrize(("kind", "fields"), [("decision", {"x": float("nan")}), ("approved", {})])
async def test_bad_record_fails_only_its_caller(tmp_path: Path, kind: str, fields: dict) -> None:
    """An unknown kind or non-JSON fields raise ValueError to that caller before anything is queued."""
    async with await SqliteAuditStore.open(tmp_path / "a.db") as store:
        async with AuditWriter(store, clock=clock, max_delay_s=0) as writer:
            with pytest.raises(ValueError):
                await writer.record(kind, "r", fields)
            assert (await writer.record("decision", "r", {})).index == 0


async def test_closed_writer_refuses_records(tmp_path: Path) -> None:
    """After the writer is closed, record() fails closed with AuditUnavailable."""
    async with await SqliteAuditStore.open(tmp_path / "a.db") as store:
        async with AuditWriter(store, clock=clock) as writer:
            pass
        with pytest.raises(AuditUnavailable):
            await writer.record("decision", "r", {})
