"""The SQLite audit store: durable settings, fork refusal, all-or-nothing batches, paging."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

from portcullis.audit import GENESIS_HASH, AuditStore, AuditUnavailable, ChainConflict, SqliteAuditStore, make_record


def records(start: int, n: int, prev: str) -> list:
    out = []
    for i in range(start, start + n):
        out.append(make_record(i, float(i), f"r{i}", "decision", {"i": i}, prev))
        prev = out[-1].hash
    return out


async def test_store_uses_wal_and_full_sync_and_satisfies_the_protocol(tmp_path: Path) -> None:
    """The store opens in WAL mode with synchronous=FULL and implements the AuditStore seam."""
    async with await SqliteAuditStore.open(tmp_path / "a.db") as store:
        assert isinstance(store, AuditStore)
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2


async def test_appended_records_read_back_equal_and_head_advances(tmp_path: Path) -> None:
    """Records read back equal to what was appended, in pages, and head names the last one."""
    async with await SqliteAuditStore.open(tmp_path / "a.db") as store:
        assert await store.head() is None
        batch = records(0, 5, GENESIS_HASH)
        await store.append(batch)
        assert await store.head() == (4, batch[-1].hash)
        assert await store.read(0, 3) == batch[:3]
        assert await store.read(3, 10) == batch[3:]


@pytest.mark.parametrize("case", ["stale-prev-hash", "index-gap", "replay-genesis", "broken-inner-link", "empty"])
async def test_append_not_continuing_the_head_is_refused_and_writes_nothing(tmp_path: Path, case: str) -> None:
    """A batch that would fork the chain is refused whole with ChainConflict."""
    async with await SqliteAuditStore.open(tmp_path / "a.db") as store:
        first = records(0, 3, GENESIS_HASH)
        await store.append(first)
        good = records(3, 3, first[-1].hash)
        bad = {
            "stale-prev-hash": records(3, 3, first[1].hash),
            "index-gap": records(4, 3, first[-1].hash),
            "replay-genesis": records(0, 3, GENESIS_HASH),
            "broken-inner-link": [good[0], records(4, 1, first[0].hash)[0]],
            "empty": [],
        }[case]
        with pytest.raises(ChainConflict):
            await store.append(bad)
        assert await store.head() == (2, first[-1].hash)
        await store.append(good)  # the store is still usable after a refusal
        assert await store.head() == (5, good[-1].hash)


async def test_driver_errors_become_audit_unavailable_without_partial_rows(tmp_path: Path) -> None:
    """A database failure mid-batch surfaces as AuditUnavailable and rolls back the whole batch."""
    db = tmp_path / "a.db"
    async with await SqliteAuditStore.open(db) as store:
        first = records(0, 2, GENESIS_HASH)
        await store.append(first)
        batch = records(2, 3, first[-1].hash)
        side = sqlite3.connect(db)
        side.execute("CREATE TRIGGER boom BEFORE INSERT ON audit_record WHEN NEW.idx = 3 "
                     "BEGIN SELECT RAISE(ABORT, 'boom'); END")
        side.commit()
        side.close()
        with pytest.raises(AuditUnavailable) as info:
            await store.append(batch)
        assert not isinstance(info.value, ChainConflict)
        assert "boom" in info.value.detail
        assert [r.index for r in await store.read(0, 10)] == [0, 1]


async def test_unopenable_path_is_audit_unavailable(tmp_path: Path) -> None:
    """A store path that cannot be opened fails closed with AuditUnavailable."""
    with pytest.raises(AuditUnavailable):
        await SqliteAuditStore.open(tmp_path / "missing-dir" / "a.db")


async def test_the_store_file_is_created_owner_only(tmp_path: Path) -> None:
    """The chain, its write-ahead log and its lock file are readable by the gateway's user only."""
    store = await SqliteAuditStore.open(tmp_path / "audit.sqlite3", durability="process")
    try:
        await store.append(records(0, 3, GENESIS_HASH))
        for name in ("audit.sqlite3", "audit.sqlite3-wal", "audit.sqlite3.lock"):
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
    finally:
        await store.aclose()


async def test_a_second_writer_on_one_chain_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    first = await SqliteAuditStore.open(path)
    try:
        with pytest.raises(AuditUnavailable) as refused:
            SqliteAuditStore.open_sync(path)
        assert "in use by another gateway process" in refused.value.detail
        with pytest.raises(AuditUnavailable):
            await SqliteAuditStore.open(path, durability="process")
    finally:
        await first.aclose()
    second = SqliteAuditStore.open_sync(path)  # the lock went with the first store
    await second.aclose()


async def test_periodic_wal_checkpoints_keep_the_wal_from_growing(tmp_path: Path) -> None:
    """Checkpoints taken while appends keep coming still complete, so the WAL starts over
    instead of growing (a checkpoint on a second connection never catches up under load)."""
    path = tmp_path / "audit.sqlite3"
    store = await SqliteAuditStore.open(path, durability="process")
    chain = records(0, 3000, GENESIS_HASH)
    sizes: list[int] = []
    try:
        async with anyio.create_task_group() as tg:
            async def checkpoints() -> None:
                while True:
                    await store.checkpoint_wal()
                    sizes.append((tmp_path / "audit.sqlite3-wal").stat().st_size)
                    await anyio.sleep(0.005)

            tg.start_soon(checkpoints)
            for record in chain:
                await store.append([record])
                await anyio.sleep(0)  # let the checkpoint thread's result in, as a busy gateway does
            tg.cancel_scope.cancel()
        assert await store.head() == (2999, chain[-1].hash)
    finally:
        await store.aclose()
    # 3000 single-record commits write ~25 MB of WAL frames; completed checkpoints keep the file
    # near the journal_size_limit (4 MiB) instead
    assert len(sizes) > 3 and sizes[-1] <= 8 * 1024 * 1024, sizes
