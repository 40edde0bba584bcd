"""Run the file kit in a process whose kernel answers ``openat2`` with ENOSYS, as a pre-5.6 kernel does.

``python -m tests.security.no_openat2 ROOT`` installs a seccomp filter (a six-instruction BPF
program: syscall 437 on this architecture gets ``ENOSYS``, everything else is allowed), then
reports as JSON what the file kit chose and answered under ``ROOT``. The kernel does the refusing:
nothing in the kit is patched.
"""

from __future__ import annotations

import ctypes
import errno
import json
import platform
import sys

_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}  # AUDIT_ARCH_X86_64, AUDIT_ARCH_AARCH64
_SYS_OPENAT2 = 437
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2
_RET_ALLOW, _RET_ERRNO = 0x7FFF0000, 0x00050000
_LD_ABS_W, _JEQ_K, _RET_K = 0x20, 0x15, 0x06


class _Filter(ctypes.Structure):
    _fields_ = (("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32))


class _Program(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Filter)))


def deny_openat2() -> None:
    """Make every later ``openat2`` in this process fail with ENOSYS."""
    instructions = [
        (_LD_ABS_W, 0, 0, 4),  # seccomp_data.arch
        (_JEQ_K, 0, 3, _ARCH[platform.machine()]),  # another architecture: allow
        (_LD_ABS_W, 0, 0, 0),  # seccomp_data.nr
        (_JEQ_K, 0, 1, _SYS_OPENAT2),
        (_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS),
        (_RET_K, 0, 0, _RET_ALLOW),
    ]
    table = (_Filter * len(instructions))(*[_Filter(*i) for i in instructions])
    program = _Program(len(instructions), table)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


def main(root: str) -> None:
    """Print what the kit does under ``root`` once openat2 is gone."""
    deny_openat2()
    from portcullis.kits._openat import openat2_available
    from portcullis.kits.files import FileKit, FileKitError

    report: dict[str, object] = {"openat2_available": openat2_available()}
    try:
        FileKit(root, resolver="openat2")
        report["forced_openat2"] = "opened"
    except FileKitError as refused:
        report["forced_openat2"] = refused.reason
    with FileKit(root) as kit:
        report["auto"] = kit.resolver
        report["read"] = kit.read_text("dir/inner.txt")
        for path in ("link.txt", "out/inner.txt"):
            try:
                kit.read_bytes(path)
                report[path] = "read"
            except FileKitError as refused:
                report[path] = refused.reason
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
