"""Open a name beneath a directory descriptor without following any link: the file kit's resolver.

Two resolvers give the same answer, and both take *canonical* segments only (no ``.``, ``..`` or
empty segment, no ``/`` inside one: :func:`portcullis.policy.paths.canonical_segments` made them):

``openat2``
    One ``openat2(2)`` call (Linux 5.6+) relative to the root's descriptor with
    ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`` and ``O_NOFOLLOW``: the kernel
    refuses any link at any component, and anything that would leave the root, atomically.
    Python has no wrapper, so it is called through ``ctypes`` (syscall 437 on x86_64 and aarch64).
``walk``
    The equivalent on any POSIX kernel: each directory opened relative to its parent's descriptor
    with ``O_DIRECTORY | O_NOFOLLOW``, the last component with ``O_NOFOLLOW``. A link swapped in at
    any moment is met by ``O_NOFOLLOW`` at the component it replaced, so it is refused, never followed.

Neither ever resolves a path to a string and opens that (realpath-then-open races a swap). Errors
are the kernel's ``OSError``; the caller maps the errno to its own refusal. ``ELOOP`` (and ``EXDEV``
from ``RESOLVE_BENEATH``) mean a link or an escape.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
import stat
from collections.abc import Sequence
from typing import Any, Literal

Resolver = Literal["openat2", "walk"]

_SYS_OPENAT2 = {"x86_64": 437, "amd64": 437, "aarch64": 437, "arm64": 437}
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
_RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
# A directory we only pass through needs search permission, not read: O_PATH where the kernel has it.
_PASS_THROUGH = (getattr(os, "O_PATH", 0) or os.O_RDONLY) | _DIRECTORY | _NOFOLLOW | _CLOEXEC
_EAGAIN_RETRIES = 4


class _OpenHow(ctypes.Structure):
    _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64))


def walk_supported() -> bool:
    """True if the component walk can run here (descriptor-relative open, ``O_NOFOLLOW``, ``O_DIRECTORY``)."""
    return os.open in os.supports_dir_fd and bool(_NOFOLLOW) and bool(_DIRECTORY)


@functools.cache
def _syscall() -> tuple[Any, int] | None:
    number = _SYS_OPENAT2.get(platform.machine().lower())
    if number is None or platform.system() != "Linux":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.syscall
    except (OSError, AttributeError):
        return None
    function.restype = ctypes.c_long
    function.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_OpenHow), ctypes.c_size_t)
    return function, number


def _openat2(dir_fd: int, path: str, flags: int) -> int:
    found = _syscall()
    if found is None:
        raise OSError(errno.ENOSYS, "openat2 unavailable")
    function, number = found
    how = _OpenHow(flags=flags | _NOFOLLOW | _CLOEXEC, mode=0, resolve=_RESOLVE)
    encoded = os.fsencode(path)
    for _ in range(_EAGAIN_RETRIES):  # EAGAIN: a concurrent rename during a scoped lookup; try again
        fd = int(function(number, dir_fd, encoded, ctypes.byref(how), ctypes.sizeof(how)))
        if fd >= 0:
            return fd
        code = ctypes.get_errno()
        if code not in (errno.EAGAIN, errno.EINTR):
            raise OSError(code, os.strerror(code))
    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))


@functools.cache
def openat2_available() -> bool:
    """True if this kernel answers ``openat2`` with the resolve flags the kit needs (probed once)."""
    probe = os.open("/", os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    try:
        os.close(_openat2(probe, ".", os.O_RDONLY | _DIRECTORY))
    except OSError:  # ENOSYS (old kernel), EPERM (a seccomp filter), EINVAL (unknown resolve flag)
        return False
    finally:
        os.close(probe)
    return True


def best_resolver() -> Resolver | None:
    """``openat2`` when the kernel has it, else ``walk`` when the platform can, else ``None`` (refuse)."""
    if openat2_available():
        return "openat2"
    return "walk" if walk_supported() else None


def open_beneath(root_fd: int, segments: Sequence[str], flags: int, resolver: Resolver) -> int:
    """A new descriptor for ``root/segments`` opened with ``flags``, no link followed anywhere (``()`` is the root)."""
    if resolver == "openat2":
        path = "/".join(segments) or "."
        try:
            return _openat2(root_fd, path, flags)
        except NotADirectoryError:
            if _trailing_link(root_fd, path):
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP)) from None
            raise
    fd = root_fd
    try:
        for name in segments[:-1]:
            child = _step(name, _PASS_THROUGH, fd)
            if fd != root_fd:
                os.close(fd)
            fd = child
        last = segments[-1] if segments else "."
        return _step(last, flags | _NOFOLLOW | _CLOEXEC, fd)
    finally:
        if fd != root_fd:
            os.close(fd)


def _step(name: str, flags: int, dir_fd: int) -> int:
    """Open ``name`` under ``dir_fd``; a link met as a directory is ``ELOOP`` (as ``openat2`` says)."""
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except NotADirectoryError:
        if _is_link(name, dir_fd):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP)) from None
        raise


def _trailing_link(root_fd: int, path: str) -> bool:
    """Only to word the refusal: is the last component a link? (``O_PATH`` opens the link itself.)"""
    try:
        fd = _openat2(root_fd, path, getattr(os, "O_PATH", 0))
    except OSError:
        return False
    try:
        return stat.S_ISLNK(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def _is_link(name: str, dir_fd: int) -> bool:
    """Only to word the refusal: the open already failed, whatever this answers."""
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False
