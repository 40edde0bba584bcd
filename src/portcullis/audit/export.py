"""JSON-lines export of an audit trail, and the strict reader that ``verify_export`` uses.

Format: UTF-8, one canonical JSON object per line — every record in index order as
``{"type": "record", ...AuditRecord.to_json()}``, then every checkpoint as
``{"type": "checkpoint", ...Checkpoint.to_json()}``. The file is written to a temporary name
and renamed into place, so a reader never sees half an export. The reader refuses anything
else (:class:`MalformedExport` with the 1-based line number): unknown types or keys, duplicate
keys, wrong types.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import anyio

from portcullis.audit.record import (
    AuditRecord,
    Checkpoint,
    canonical_bytes,
    checkpoint_from_json,
    record_from_json,
)
from portcullis.audit.store import AuditStore

PAGE = 1000


class MalformedExport(ValueError):
    def __init__(self, line: int, reason: str) -> None:
        self.line = line
        super().__init__(f"line {line}: {reason}")


def export_lines(records: Iterable[AuditRecord], checkpoints: Iterable[Checkpoint]) -> Iterator[bytes]:
    """The export's lines (each ending in ``\\n``), records first."""
    for record in records:
        yield canonical_bytes({"type": "record", **record.to_json()}) + b"\n"
    for checkpoint in checkpoints:
        yield canonical_bytes({"type": "checkpoint", **checkpoint.to_json()}) + b"\n"


async def iter_store(store: AuditStore, *, page: int = PAGE) -> AsyncIterator[AuditRecord]:
    """Every record of ``store`` in index order, read ``page`` at a time."""
    next_index = 0
    while True:
        chunk = await store.read(next_index, page)
        for record in chunk:
            yield record
        if len(chunk) < page:
            return
        next_index = chunk[-1].index + 1


async def export_jsonl(store: AuditStore, path: str | Path) -> int:
    """Write ``store`` to ``path`` as JSON lines; returns the number of records written."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    count = 0
    async with await anyio.open_file(tmp, "wb") as out:
        async for record in iter_store(store):
            await out.write(next(export_lines([record], [])))
            count += 1
        for line in export_lines([], await store.checkpoints()):
            await out.write(line)
        await out.flush()
        await anyio.to_thread.run_sync(os.fsync, out.wrapped.fileno())
    await anyio.Path(tmp).replace(target)
    return count


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError("duplicate key")
        out[key] = value
    return out


def _parse(line_no: int, line: bytes) -> tuple[str, AuditRecord | Checkpoint]:
    try:
        obj = json.loads(line, object_pairs_hook=_no_duplicates)
        if not isinstance(obj, dict):
            raise ValueError("not an object")
        kind = obj.pop("type", None)
        if kind == "record":
            return kind, record_from_json(obj)
        if kind == "checkpoint":
            return kind, checkpoint_from_json(obj)
        raise ValueError("unknown line type")
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        syntax = isinstance(exc, json.JSONDecodeError | UnicodeDecodeError)
        raise MalformedExport(line_no, type(exc).__name__ if syntax else str(exc)) from None


def read_export(path: str | Path, kind: str) -> Iterator[Any]:
    """Stream the records (``kind="record"``) or checkpoints (``"checkpoint"``) of an export file."""
    with open(path, "rb") as lines:
        for line_no, line in enumerate(lines, 1):
            line_kind, item = _parse(line_no, line)
            if line_kind == kind:
                yield item
