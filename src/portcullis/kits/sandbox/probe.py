"""What this host offers for confinement: read once, reported, never assumed.

:func:`detect_host` builds the :class:`SandboxHost` for this machine's layout (merged ``/usr`` or
not, the gateway's own uid). :func:`capabilities` reports the optional pieces: a stronger backend
(gVisor ``runsc``, ``nsjail``) when installed, the Landlock ABI version, and whether a cgroup v2
hierarchy is writable. Only bwrap is used today; the others are a documented seam
(docs/sandbox.md, "Stronger backends").
"""

from __future__ import annotations

import ctypes
import os
import shutil
from dataclasses import dataclass

from portcullis.kits.sandbox.spec import SandboxHost

_SYSTEM_DIRS = ("bin", "lib", "lib64", "sbin", "lib32", "libx32")
_SYS_LANDLOCK_CREATE_RULESET = 444  # same number on every architecture
_LANDLOCK_CREATE_RULESET_VERSION = 1


def detect_host(bwrap: str = "/usr/bin/bwrap", root: str = "/") -> SandboxHost:
    """This machine's layout: each of /bin, /lib... is a symlink into /usr (merged) or bound as is."""
    symlinks: list[tuple[str, str]] = []
    system_ro = ["/usr"]
    for name in _SYSTEM_DIRS:
        path = os.path.join(root, name)
        if os.path.islink(path):
            target = os.readlink(path)
            if target.lstrip("/").startswith("usr/"):
                symlinks.append((target.lstrip("/"), "/" + name))
        elif os.path.isdir(path):
            system_ro.append("/" + name)
    as_root = os.geteuid() == 0
    defaults = SandboxHost()
    return SandboxHost(
        bwrap=bwrap,
        host_uid=defaults.host_uid if as_root else None,
        host_gid=defaults.host_gid if as_root else None,
        system_ro=tuple(system_ro),
        symlinks=tuple(symlinks),
    )


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when absent or disabled."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        version = int(libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, None, 0, _LANDLOCK_CREATE_RULESET_VERSION))
    except (OSError, AttributeError):
        return 0
    return max(version, 0)


def cgroup2_writable(mount: str = "/sys/fs/cgroup") -> bool:
    """Whether a cgroup v2 hierarchy with the pids and memory controllers can be written here."""
    try:
        with open(os.path.join(mount, "cgroup.controllers"), encoding="ascii") as fh:
            controllers = fh.read().split()
    except OSError:
        return False
    return {"pids", "memory"} <= set(controllers) and os.access(mount, os.W_OK)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """Optional confinement this host offers beyond bwrap (reported, not all used)."""

    bwrap: str | None
    runsc: str | None
    nsjail: str | None
    landlock_abi: int
    cgroup2_writable: bool


def capabilities() -> Capabilities:
    """Look for the backends and kernel features once (no process is started)."""
    return Capabilities(
        bwrap=shutil.which("bwrap"),
        runsc=shutil.which("runsc"),
        nsjail=shutil.which("nsjail"),
        landlock_abi=landlock_abi(),
        cgroup2_writable=cgroup2_writable(),
    )
