"""JSON-lines export: one canonical record per line, private files, rotation that loses nothing."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest

from portcullis.audit.record import GENESIS_HASH, canonical_bytes, make_record, record_from_json, record_hash_ok
from portcullis.audit.siem import ExportFailed, ExportQueue, JsonlExporter


def make_records(n: int, *, pad: int = 0) -> list[dict[str, Any]]:
    out, prev = [], GENESIS_HASH
    for i in range(n):
        record = make_record(i, 1_800_000_000.0 + i, f"req-{i}", "outcome", {"outcome": "ok", "pad": "x" * pad}, prev)
        out.append(record.to_json())
        prev = record.hash
    return out


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def all_files(path: Path) -> list[Path]:
    """The backups oldest first, then the live file."""
    backups = sorted(path.parent.glob(path.name + ".*"), key=lambda p: int(p.suffix[1:]), reverse=True)
    return [*backups, path]


async def test_each_record_is_one_canonical_line_in_a_private_file(tmp_path: Path) -> None:
    """Lines are the records' canonical JSON, in order; the file is created 0600; hashes still verify."""
    path = tmp_path / "audit.jsonl"
    exporter = JsonlExporter(path)
    records = make_records(5)
    assert await exporter.send(records[:2]) == 0
    assert await exporter.send(records[2:]) == 0
    await exporter.aclose()
    assert path.read_bytes() == b"".join(canonical_bytes(r) + b"\n" for r in records)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert all(record_hash_ok(record_from_json(line)) for line in read_lines(path))


async def test_an_existing_file_is_appended_to_and_made_private(tmp_path: Path) -> None:
    """A restart appends after what is there, and tightens a world-readable file to 0600."""
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"earlier":true}\n')
    path.chmod(0o644)
    exporter = JsonlExporter(path, fsync=False)
    await exporter.send(make_records(1))
    await exporter.aclose()
    assert read_lines(path)[0] == {"earlier": True} and len(read_lines(path)) == 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_rotation_keeps_every_record_across_files_and_caps_sizes(tmp_path: Path) -> None:
    """Writing well past max_bytes rotates into name.1..name.N; no record is lost, split or reordered."""
    path = tmp_path / "audit.jsonl"
    records = make_records(40, pad=100)
    line_bytes = len(canonical_bytes(records[0])) + 1
    exporter = JsonlExporter(path, max_bytes=line_bytes * 4 + 10, backups=20)
    for start in range(0, 40, 7):  # batches that straddle rotation points
        await exporter.send(records[start:start + 7])
    await exporter.aclose()
    files = all_files(path)
    assert len(files) == 10  # 4 lines fit per file
    assert all(f.stat().st_size <= line_bytes * 4 + 10 for f in files)
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert [line for f in files for line in read_lines(f)] == records


async def test_rotation_discards_the_oldest_beyond_the_backup_count(tmp_path: Path) -> None:
    """With backups=2 only the newest two rotated files survive, and the newest records are all kept."""
    path = tmp_path / "audit.jsonl"
    records = make_records(10)
    line_bytes = len(canonical_bytes(records[0])) + 1
    exporter = JsonlExporter(path, max_bytes=line_bytes * 2, backups=2)
    await exporter.send(records)
    await exporter.aclose()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    assert [line for f in all_files(path) for line in read_lines(f)] == records[4:]


async def test_zero_backups_truncates_on_rotation(tmp_path: Path) -> None:
    """backups=0 keeps no old file: the live file starts again."""
    path = tmp_path / "audit.jsonl"
    records = make_records(3)
    exporter = JsonlExporter(path, max_bytes=len(canonical_bytes(records[0])) + 1, backups=0)
    await exporter.send(records)
    await exporter.aclose()
    assert [p.name for p in tmp_path.iterdir()] == ["audit.jsonl"]
    assert read_lines(path) == records[2:]


async def test_a_line_longer_than_max_bytes_gets_a_file_of_its_own(tmp_path: Path) -> None:
    """An oversized record is written whole, never split across files."""
    path = tmp_path / "audit.jsonl"
    small, big = make_records(1)[0], make_records(1, pad=5000)[0]
    exporter = JsonlExporter(path, max_bytes=4096, backups=3)
    await exporter.send([small, big, small])
    await exporter.aclose()
    assert [read_lines(f) for f in all_files(path)] == [[small], [big], [small]]


def test_the_directory_must_exist(tmp_path: Path) -> None:
    """A missing directory is a construction error, not a silent mkdir at the first record."""
    with pytest.raises(ValueError, match="does not exist"):
        JsonlExporter(tmp_path / "missing" / "audit.jsonl")


async def test_a_symlinked_file_is_refused_as_an_export_failure(tmp_path: Path) -> None:
    """The file is never opened through a symlink; the OSError surfaces as ExportFailed."""
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    path = tmp_path / "audit.jsonl"
    os.symlink(target, path)
    exporter = JsonlExporter(path)
    with pytest.raises(ExportFailed) as caught:
        await exporter.send(make_records(1))
    assert not caught.value.permanent
    assert target.read_bytes() == b""


async def test_an_unwritable_file_fails_and_a_later_retry_succeeds(tmp_path: Path) -> None:
    """Write errors are retryable: once the cause is gone the same batch goes through."""
    path = tmp_path / "audit.jsonl"
    path.mkdir()  # a directory where the file should be: every open fails, even as root
    exporter = JsonlExporter(path)
    with pytest.raises(ExportFailed) as caught:
        await exporter.send(make_records(1))
    assert not caught.value.permanent and "IsADirectoryError" in caught.value.detail
    path.rmdir()
    await exporter.send(make_records(1))
    await exporter.aclose()
    assert read_lines(path) == make_records(1)


async def test_the_queue_writes_through_the_jsonl_exporter(tmp_path: Path) -> None:
    """End to end: offers become lines after the queue has flushed."""
    path = tmp_path / "audit.jsonl"
    records = make_records(25)
    async with ExportQueue([JsonlExporter(path, max_bytes=4096, backups=50)], max_batch=4) as queue:
        for record in records:
            queue.offer(record)
    assert queue.stats()["jsonl"].sent == 25
    assert [line for f in all_files(path) for line in read_lines(f)] == records


async def test_a_record_that_is_not_json_is_refused_and_the_rest_written(tmp_path: Path) -> None:
    """One unserialisable record does not cost its batch: it is refused (counted as dropped), the rest land."""
    path = tmp_path / "audit.jsonl"
    good = make_records(2)
    exporter = JsonlExporter(path)
    assert await exporter.send([good[0], {"fields": {1, 2}}, good[1]]) == 1
    await exporter.aclose()
    assert read_lines(path) == good
