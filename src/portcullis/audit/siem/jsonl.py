"""JSON-lines file export with size-based rotation.

Contract:

* One record per line: compact JSON with sorted keys (the record's canonical form, so a reader
  can recompute each ``hash``), UTF-8, ending in ``\\n``. Lines are appended in offer order.
* Before a line would take the file past ``max_bytes``, the file is rotated: ``name.N-1`` →
  ``name.N`` … ``name`` → ``name.1`` (at most ``backups`` old files; ``backups=0`` keeps none),
  and writing goes on in a fresh ``name``. A single line longer than ``max_bytes`` gets a file
  of its own. No line is split across files or lost in a rotation.
* Files are created with mode 0o600 (and an existing file is set to it), never through a
  symlink. The directory must already exist: checked when the exporter is made.
* With ``fsync=True`` each batch (and each rotation's rename) is flushed to disk before ``send``
  returns. File work runs in a worker thread, never on the event loop.
* Any ``OSError`` becomes a retryable :class:`ExportFailed`; a batch that failed half way is
  written again whole (at-least-once). A record that is not JSON is skipped and reported as
  refused (the queue counts it as dropped); the rest of its batch is written.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import anyio
import orjson

from portcullis.audit.siem.interface import ExportFailed, Record

_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
FILE_MODE = 0o600


class JsonlExporter:
    """Appends records to ``path`` as JSON lines, rotating by size."""

    def __init__(self, path: Path, *, max_bytes: int = 100 * 1024 * 1024, backups: int = 5, fsync: bool = True,
                 name: str = "jsonl") -> None:
        if max_bytes < 1 or backups < 0:
            raise ValueError("max_bytes must be >= 1 and backups >= 0")
        if not path.parent.is_dir():
            raise ValueError(f"directory {path.parent} does not exist")
        self.name = name
        self.path = path
        self._max_bytes, self._backups, self._fsync = max_bytes, backups, fsync
        self._fd: int | None = None
        self._size = 0
        self._lock = threading.Lock()  # send and aclose never overlap, but a thread may outlive a cancel

    async def send(self, batch: Sequence[Record]) -> int:
        try:
            return await anyio.to_thread.run_sync(self._write_batch, batch)
        except OSError as exc:
            self._close_quietly()
            raise ExportFailed(f"jsonl write to {self.path.name} failed: {type(exc).__name__} "
                               f"({exc.strerror or 'no detail'})") from None

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self._close_quietly)

    # ------------------------------------------------------------------ worker thread

    def _write_batch(self, batch: Sequence[Record]) -> int:
        """Write the batch; return how many records were refused as not JSON."""
        lines = [line for line in map(_line, batch) if line is not None]
        with self._lock:
            fd = self._open()
            chunk: list[bytes] = []
            chunk_size = 0
            for line in lines:
                if self._size + chunk_size > 0 and self._size + chunk_size + len(line) > self._max_bytes:
                    _write_all(fd, b"".join(chunk))
                    self._size += chunk_size
                    chunk, chunk_size = [], 0
                    fd = self._rotate()
                chunk.append(line)
                chunk_size += len(line)
            _write_all(fd, b"".join(chunk))
            self._size += chunk_size
            if self._fsync:
                os.fsync(fd)
        return len(batch) - len(lines)

    def _open(self) -> int:
        if self._fd is None:
            fd = os.open(self.path, _OPEN_FLAGS, FILE_MODE)
            try:
                os.fchmod(fd, FILE_MODE)
                self._size = os.fstat(fd).st_size
            except OSError:
                os.close(fd)
                raise
            self._fd = fd
        return self._fd

    def _rotate(self) -> int:
        """Close the current file, shift the backups along, and open a fresh one."""
        if self._fd is not None:
            if self._fsync:
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        if self._backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for n in range(self._backups - 1, 0, -1):
                older = self._backup(n)
                if older.exists():
                    os.replace(older, self._backup(n + 1))
            if self.path.exists():
                os.replace(self.path, self._backup(1))
        if self._fsync:
            _fsync_dir(self.path.parent)
        return self._open()

    def _backup(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}")

    def _close_quietly(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:  # already gone; the next send reopens
                    pass


def _line(record: Record) -> bytes | None:
    try:
        return orjson.dumps(record, option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE)
    except (TypeError, orjson.JSONEncodeError):
        return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
