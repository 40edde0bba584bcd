"""The code kit's runner, executed *inside* the sandbox as ``python3 -I -S -c <this file's text>``.

Standard library only (the package is not visible in the sandbox). In order:

1. Landlock, best effort: when the kernel has it, restrict the process to reading ``/usr``, ``/proc`` and
   ``/dev``, writing the device nodes, and full use of ``/scratch``, ``/tmp`` and ``/dev/shm``; deny all
   TCP bind/connect (ABI 4+), abstract unix sockets and signals outside the sandbox (ABI 6+). A second
   layer under bwrap's mount view; skipped silently where the kernel lacks it (docs/sandbox.md).
2. Read the source from stdin, run it as ``__main__``.
3. Map ``MemoryError`` to status 121 and a refused fork or thread (``EAGAIN``) to 122.
"""

from __future__ import annotations

import ctypes
import os
import sys

MEMORY_EXIT = 121
PROCESSES_EXIT = 122

_READ = 1 | 4 | 8  # EXECUTE, READ_FILE, READ_DIR
_WRITE_FILE = 2
_V1_ALL = (1 << 13) - 1
_FS_ALL_BY_ABI = {1: _V1_ALL, 2: _V1_ALL | 1 << 13, 3: _V1_ALL | 3 << 13, 4: _V1_ALL | 3 << 13}  # REFER, TRUNCATE
_RULES = (("/usr", _READ), ("/proc", _READ), ("/dev", _READ | _WRITE_FILE))
_OPEN = ("/scratch", "/tmp", "/dev/shm")  # noqa: S108 - the sandbox's own private mounts


def landlock() -> int:
    """Restrict this process with Landlock; the ABI used, 0 when the kernel has none."""
    libc = ctypes.CDLL(None, use_errno=True)
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    abi = int(syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1)))
    if abi < 1:
        return 0
    handled_fs = _FS_ALL_BY_ABI.get(abi, _V1_ALL | 7 << 13)  # ABI 5+: + IOCTL_DEV
    fields = [handled_fs] + ([3] if abi >= 4 else []) + ([3] if abi >= 6 else [])  # TCP; unix+signal scope
    attr = (ctypes.c_uint64 * len(fields))(*fields)
    ruleset = int(syscall(444, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0)))
    if ruleset < 0:
        return 0
    try:
        for path, access in (*_RULES, *((p, handled_fs) for p in _OPEN)):
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            rule = ctypes.create_string_buffer((access & handled_fs).to_bytes(8, "little")
                                               + fd.to_bytes(4, "little", signed=True), 12)
            syscall(445, ruleset, 1, rule, ctypes.c_uint32(0))
            os.close(fd)
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS (bwrap has set it already)
        if syscall(446, ruleset, ctypes.c_uint32(0)) != 0:
            return 0
    finally:
        os.close(ruleset)
    return abi


def _exit(code: int) -> None:
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def main() -> None:
    """Confine further, then run the source from stdin; see the module docstring."""
    try:
        landlock()
    except (OSError, AttributeError, ValueError):
        pass  # best effort: bwrap and seccomp still hold
    source = sys.stdin.buffer.read()
    try:
        exec(compile(source, "<code>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})  # noqa: S102
    except MemoryError:
        sys.stderr.write("MemoryError: memory limit\n")
        _exit(MEMORY_EXIT)
    except BlockingIOError:
        sys.stderr.write("BlockingIOError: process limit\n")
        _exit(PROCESSES_EXIT)
    except RuntimeError as exc:
        if "new thread" not in str(exc):
            raise
        sys.stderr.write("RuntimeError: process limit\n")
        _exit(PROCESSES_EXIT)
