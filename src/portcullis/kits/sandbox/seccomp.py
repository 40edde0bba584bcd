"""The seccomp filter every sandboxed child runs under, compiled to BPF with libseccomp.

A deny list on top of what namespaces and dropped capabilities already forbid, so that a kernel bug
behind one of these calls is out of reach. Denied calls fail with ``EPERM`` rather than killing the
child: the code sees an ordinary error and the result stays readable; nothing is reachable either
way. ``clone3`` answers ``ENOSYS`` (its flags sit behind a pointer seccomp cannot read), so the C
library falls back to ``clone``, whose namespace flags are checked. Syscalls of other ABIs (i386,
x32) are killed by libseccomp's bad-architecture default.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import socket
from typing import Any

from portcullis.kits.sandbox.errors import SandboxUnavailable
from portcullis.kits.sandbox.memfd import memory_fd
from portcullis.kits.sandbox.spec import Network

DENIED = (
    # debugging and reading other processes' memory
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
    # kernel code and the machine itself
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot",
    "swapon", "swapoff", "acct", "syslog", "iopl", "ioperm", "quotactl", "lookup_dcookie",
    # mounts, roots and namespaces
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "unshare", "setns",
    # kernel keyrings, eBPF, perf, userfaultfd, io_uring, personality
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd", "personality",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    # file handles that bypass path checks, clocks, NUMA placement of other processes
    "open_by_handle_at", "name_to_handle_at", "settimeofday", "clock_settime", "clock_adjtime",
    "adjtimex", "move_pages", "migrate_pages", "vhangup", "uselib",
)

_CLONE_NAMESPACE_FLAGS = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
    0x00000080,  # CLONE_NEWTIME
)
_SHARED_NET_FAMILIES = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK)
_AF_MAX = 64


def _library() -> Any:
    try:
        import pyseccomp
    except (ImportError, OSError) as exc:  # the module or libseccomp.so.2 is missing
        raise SandboxUnavailable(detail="libseccomp unavailable") from exc
    return pyseccomp


@functools.lru_cache(maxsize=2)
def compile_filter(network: Network) -> bytes:
    """The BPF program for ``network`` (``none``: only ``AF_UNIX`` sockets may be created)."""
    sc = _library()
    deny = sc.ERRNO(errno.EPERM)
    try:
        flt = sc.SyscallFilter(sc.ALLOW)
        for name in DENIED:
            flt.add_rule(deny, name)
        flt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
        for flag in _CLONE_NAMESPACE_FLAGS:
            flt.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
        for call in ("socket", "socketpair"):
            if network == "none":
                flt.add_rule(deny, call, sc.Arg(0, sc.NE, socket.AF_UNIX))
            else:
                for family in range(_AF_MAX):
                    if family not in _SHARED_NET_FAMILIES:
                        flt.add_rule(deny, call, sc.Arg(0, sc.EQ, family))
                flt.add_rule(deny, call, sc.Arg(0, sc.GE, _AF_MAX))
        with os.fdopen(os.memfd_create("portcullis-bpf", os.MFD_CLOEXEC), "w+b") as sink:
            flt.export_bpf(sink)
            sink.seek(0)
            program = sink.read()
    except (OSError, ValueError, RuntimeError) as exc:
        raise SandboxUnavailable(detail="seccomp filter could not be compiled") from exc
    if not program or len(program) % 8:
        raise SandboxUnavailable(detail="seccomp filter is empty")
    return program


def filter_fd(network: Network) -> int:
    """An in-memory file holding the filter, positioned at 0, for ``bwrap --seccomp FD``."""
    return memory_fd("portcullis-seccomp", compile_filter(network))


def filter_file(directory: str, network: Network) -> str:
    """The filter written to ``directory`` (named by its hash, mode 0644) for :func:`launch_argv`."""
    program = compile_filter(network)
    path = os.path.join(directory, f"seccomp-{hashlib.sha256(program).hexdigest()[:16]}.bpf")
    if not os.path.exists(path):
        partial = f"{path}.{os.getpid()}.tmp"
        with open(partial, "wb") as fh:
            fh.write(program)
        os.chmod(partial, 0o644)
        os.replace(partial, path)
    return path
