"""The file kit: reads, writes and listings confined to one directory, with no way out through a link.

A :class:`FileKit` holds an open descriptor of its root and answers every request in numbered steps:

1. The caller's path is judged as text by :func:`portcullis.policy.paths.canonical_segments` — the
   same function behind the gateway's ``within_root`` policy — so encodings, absolute paths,
   ``~``, drive letters, NUL and lookalike characters are refused before any system call.
2. The canonical segments must pass :class:`FileRules`: an allow-list of glob patterns for reads
   and one for writes (writes are refused unless allowed), and a deny-list that wins over both.
3. The file is opened *relative to the root's descriptor* without following a link at any
   component: ``openat2`` with ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS``
   where the kernel has it, else a component-by-component ``O_NOFOLLOW`` walk
   (:mod:`portcullis.kits._openat`). No path is ever resolved to a string and then opened, so a
   link swapped in between a check and the use is refused, never followed.
4. What was opened is judged by its descriptor (``fstat``): reads take only regular files with a
   single link (a hard link to a file outside the root looks like any other file, so a file with
   ``st_nlink > 1`` is refused) within the size limit, opened with ``O_NONBLOCK`` so that a FIFO or
   device cannot hang the call.
5. Writes create a fresh temporary file (``O_CREAT | O_EXCL | O_NOFOLLOW``) in the parent's
   descriptor and ``rename`` it into place: the target is replaced atomically and never written
   through, even if it was swapped for a link after the check.

Every failure is a :class:`FileKitError` (:mod:`._file_errors`) with a reason from a closed set and
a fixed short message that never names the root or echoes the caller's path.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from portcullis.kits._file_errors import (
    REASONS,
    FileKitError,
    FileRefused,
    FileUnavailable,
    Reason,
    error,
    os_error,
    path_error,
)
from portcullis.kits._file_rules import FileRules
from portcullis.kits._openat import Resolver, best_resolver, open_beneath, openat2_available, walk_supported
from portcullis.policy.paths import PathRefused, canonical_segments

__all__ = ["REASONS", "Entry", "FileKit", "FileKitError", "FileRefused", "FileRules", "FileUnavailable", "Listing",
           "Reason", "canonical"]

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | _CLOEXEC
_TEMP_PREFIX = ".portcullis-"
MAX_SCAN = 100_000  # directory entries looked at per listing, however many there are


@dataclass(frozen=True)
class Entry:
    """One entry of a listing: a regular file (with its size) or a directory. Links are never listed."""

    name: str
    kind: Literal["file", "dir"]
    size: int | None


@dataclass(frozen=True)
class Listing:
    """A directory's visible entries sorted by name, at most ``max_entries`` of them."""

    path: str
    entries: tuple[Entry, ...]
    truncated: bool


def canonical(path: object) -> tuple[str, ...]:
    """The canonical segments of a caller's ``path``, or a :class:`FileRefused` with a fixed message."""
    try:
        return canonical_segments(path)
    except PathRefused as refused:
        raise path_error(refused.reason) from None


class FileKit:
    """Root-confined file access. Use as a context manager, or call :meth:`close`."""

    def __init__(self, root: str | os.PathLike[str], rules: FileRules | None = None, *,
                 resolver: Literal["auto", "openat2", "walk"] = "auto") -> None:
        """Open ``root`` (the operator's path: it may itself be reached through links); refuse if no resolver fits."""
        chosen: Resolver | None
        if resolver == "auto":
            chosen = best_resolver()
        elif resolver == "openat2":
            chosen = "openat2" if openat2_available() else None
        elif resolver == "walk":
            chosen = "walk" if walk_supported() else None
        else:
            raise ValueError("resolver is 'auto', 'openat2' or 'walk'")
        if chosen is None:
            raise error("unavailable")
        self.rules = rules or FileRules()
        self.resolver: Resolver = chosen
        self._lock = threading.Lock()
        self._users = 0
        self._closing = False
        try:
            self._root = os.open(root, _DIR_FLAGS | _CLOEXEC)
        except (OSError, ValueError):
            raise error("unavailable") from None

    def __enter__(self) -> FileKit:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the root's descriptor (idempotent), once no request is still opening beneath it."""
        with self._lock:
            self._closing = True
            self._release_root()

    def _release_root(self) -> None:
        # Closing while another thread opens beneath the root would let the descriptor number be
        # reused for some other directory, and the open would resolve there: wait for the last user.
        if self._closing and self._users == 0 and self._root >= 0:
            os.close(self._root)
            self._root = -1

    def _open(self, segments: tuple[str, ...], flags: int) -> int:
        with self._lock:
            if self._closing:
                raise error("unavailable")
            self._users += 1
        try:
            return open_beneath(self._root, segments, flags, self.resolver)
        except OSError as exc:
            raise os_error(exc) from None
        finally:
            with self._lock:
                self._users -= 1
                self._release_root()

    def read_bytes(self, path: str) -> bytes:
        """The bytes of the regular file at ``path`` (at most ``rules.max_read_bytes``)."""
        segments = canonical(path)
        if not segments:
            raise error("not_regular")
        if not self.rules.may_read(segments):
            raise error("not_allowed")
        limit = self.rules.max_read_bytes
        fd = self._open(segments, _READ_FLAGS)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise error("not_regular")
            if info.st_nlink > 1:
                raise error("hard_link")
            if info.st_size > limit:
                raise error("too_large")
            chunks: list[bytes] = []
            size = 0
            while size <= limit and (chunk := os.read(fd, min(limit + 1 - size, 1 << 20))):
                chunks.append(chunk)
                size += len(chunk)
        except OSError as exc:
            raise os_error(exc) from None
        finally:
            os.close(fd)
        if size > limit:  # the file grew after fstat
            raise error("too_large")
        return b"".join(chunks)

    def read_text(self, path: str) -> str:
        """The UTF-8 text of the regular file at ``path``."""
        try:
            return self.read_bytes(path).decode("utf-8", errors="strict")
        except UnicodeDecodeError:
            raise error("not_text") from None

    def list_dir(self, path: str = ".") -> Listing:
        """The directory at ``path``: the regular files and directories the rules let a caller see."""
        segments = canonical(path)
        if not self.rules.may_list(segments):
            raise error("not_allowed")
        entries: list[Entry] = []
        fd = self._open(segments, _DIR_FLAGS)
        try:
            with os.scandir(fd) as scan:
                for seen, item in enumerate(scan):
                    if seen >= MAX_SCAN:
                        break
                    entry = self._entry(segments, item)
                    if entry is not None:
                        entries.append(entry)
        except OSError as exc:
            raise os_error(exc) from None
        finally:
            os.close(fd)
        entries.sort(key=lambda e: e.name)
        limit = self.rules.max_entries
        return Listing("/".join(segments) or ".", tuple(entries[:limit]), len(entries) > limit)

    def _entry(self, parent: tuple[str, ...], item: os.DirEntry[str]) -> Entry | None:
        name = item.name
        try:
            if name.startswith(_TEMP_PREFIX) or canonical_segments(name) != (name,) or item.is_symlink():
                return None
            child = (*parent, name)
            if item.is_dir(follow_symlinks=False):
                return Entry(name, "dir", None) if self.rules.may_list(child) else None
            info = item.stat(follow_symlinks=False)
        except (OSError, PathRefused):
            return None
        if stat.S_ISREG(info.st_mode) and info.st_nlink == 1 and self.rules.may_read(child):
            return Entry(name, "file", info.st_size)
        return None

    def write_bytes(self, path: str, data: bytes, *, replace: bool = True) -> str:
        """Write ``data`` to ``path`` atomically (never through a link); the canonical path written."""
        segments = canonical(path)
        if not segments:
            raise error("not_regular")
        if not self.rules.may_write(segments):
            raise error("not_allowed")
        if len(data) > self.rules.max_write_bytes:
            raise error("too_large")
        parent = self._open(segments[:-1], _DIR_FLAGS)
        try:
            _write_in(parent, segments[-1], data, replace, self.rules.file_mode)
        except OSError as exc:
            raise os_error(exc) from None
        finally:
            os.close(parent)
        return "/".join(segments)

    def write_text(self, path: str, text: str, *, replace: bool = True) -> str:
        """Write ``text`` as UTF-8 to ``path`` atomically; the canonical path written."""
        return self.write_bytes(path, text.encode("utf-8"), replace=replace)


def _write_in(parent: int, name: str, data: bytes, replace: bool, mode: int) -> None:
    """Create a temporary file in ``parent``, fill it, and rename it to ``name`` (``link`` if not replacing)."""
    with contextlib.suppress(FileNotFoundError):
        existing = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if stat.S_ISLNK(existing.st_mode):
            raise error("link")
        if not stat.S_ISREG(existing.st_mode):
            raise error("not_regular")
        if not replace:
            raise error("exists")
    temp = f"{_TEMP_PREFIX}{secrets.token_hex(8)}.tmp"
    fd = os.open(temp, _CREATE_FLAGS, mode, dir_fd=parent)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:  # rename replaces the name itself: whatever it was (even a link swapped in), it is not written
            os.rename(temp, name, src_dir_fd=parent, dst_dir_fd=parent)
        else:  # link fails with EEXIST if the name appeared meanwhile
            os.link(temp, name, src_dir_fd=parent, dst_dir_fd=parent, follow_symlinks=False)
        os.fsync(parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp, dir_fd=parent)
