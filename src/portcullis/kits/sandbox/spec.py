"""What a confined child is allowed: frozen values, checked once when built.

A :class:`SandboxSpec` says what one child runs and sees (argv, an explicit environment, binds, a
scratch directory, network, limits). A :class:`SandboxHost` says how this host confines children
(where bwrap is, which unprivileged host id runs them, the system directories every child sees).
Both are plain values; :func:`portcullis.kits.sandbox.argv.build_argv` turns them into a command
line without touching the file system.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Literal

from portcullis.kits.sandbox.errors import SandboxSpecError

Network = Literal["none", "shared"]

# Where a spec may not put a bind: the system view the sandbox itself builds.
TMP_DEST = "/tmp"  # noqa: S108 - the child's own private tmpfs, never the host's /tmp
SHM_DEST = "/dev/shm"  # noqa: S108 - the child's own size-limited tmpfs
SCRATCH_DEST = "/scratch"
_RESERVED_DESTS = ("/usr", "/proc", "/dev", "/bin", "/lib", "/lib64", "/sbin", SCRATCH_DEST)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def _check_path(path: str, what: str) -> None:
    if not path.startswith("/") or "\x00" in path or posixpath.normpath(path) != path:
        raise SandboxSpecError(detail=f"{what} must be an absolute normalised path")


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits for one child; units are in the names."""

    cpu_s: int = 5  # RLIMIT_CPU soft limit (SIGXCPU); the hard limit is one second later
    wall_s: float = 10.0  # the whole process tree is killed after this
    memory_bytes: int = 512 * 1024 * 1024  # RLIMIT_AS per process
    max_processes: int = 32  # RLIMIT_NPROC, counted inside the child's own user namespace
    max_output_bytes: int = 1024 * 1024  # per stream (stdout, stderr); the child is killed past it
    max_open_files: int = 64  # RLIMIT_NOFILE
    max_file_bytes: int = 16 * 1024 * 1024  # RLIMIT_FSIZE: largest file the child may write
    tmp_bytes: int = 16 * 1024 * 1024  # size of the private tmpfs on /tmp

    def __post_init__(self) -> None:
        ints = (self.cpu_s, self.memory_bytes, self.max_processes, self.max_output_bytes,
                self.max_open_files, self.max_file_bytes, self.tmp_bytes)
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in ints):
            raise SandboxSpecError(detail="limits must be positive integers")
        if not 0 < self.wall_s <= 24 * 3600 or self.max_open_files < 8:
            raise SandboxSpecError(detail="wall_s or max_open_files out of range")


@dataclass(frozen=True, slots=True)
class Bind:
    """A host path shown inside the sandbox at ``dest``."""

    source: str
    dest: str

    def __post_init__(self) -> None:
        _check_path(self.source, "bind source")
        _check_path(self.dest, "bind destination")
        # /tmp itself is the private tmpfs; a bind below it is mounted on that tmpfs, after it (build_argv), as a
        # stdio service's cwd, deployment or writable path under the host's /tmp needs (docs/sandbox.md)
        reserved = any(self.dest == r or self.dest.startswith(r + "/") for r in _RESERVED_DESTS)
        if self.dest in ("/", TMP_DEST) or reserved:
            raise SandboxSpecError(detail="bind destination is reserved")


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    """One confined child: what it runs and everything it may see."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()  # the whole environment: nothing is inherited
    ro_binds: tuple[Bind, ...] = ()
    rw_binds: tuple[Bind, ...] = ()
    scratch: str | None = None  # host directory shown writable at /scratch (the working directory)
    network: Network = "none"
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if not self.argv or not self.argv[0].startswith("/"):
            raise SandboxSpecError(detail="argv[0] must be an absolute path")
        if any("\x00" in a for a in self.argv):
            raise SandboxSpecError(detail="NUL byte in argv")
        for name, value in self.env:
            if not _ENV_NAME.fullmatch(name) or "\x00" in value:
                raise SandboxSpecError(detail="bad environment entry")
        if len({name for name, _ in self.env}) != len(self.env):
            raise SandboxSpecError(detail="duplicate environment name")
        if self.scratch is not None:
            _check_path(self.scratch, "scratch")
        dests = [b.dest for b in (*self.ro_binds, *self.rw_binds)]
        if len(set(dests)) != len(dests):
            raise SandboxSpecError(detail="two binds share a destination")
        if self.network not in ("none", "shared"):
            raise SandboxSpecError(detail="network must be none or shared")


@dataclass(frozen=True, slots=True)
class SandboxHost:
    """How this host confines children (see :func:`portcullis.kits.sandbox.probe.detect_host`)."""

    bwrap: str = "/usr/bin/bwrap"
    prlimit: str = "/usr/bin/prlimit"  # util-linux: sets the rlimits inside the sandbox, then execs
    # Host uid/gid the child runs as when the gateway is root (RLIMIT_NPROC never binds uid 0);
    # None when the gateway is already unprivileged. 65533 is in Debian's reserved, never-allocated range.
    host_uid: int | None = 65533
    host_gid: int | None = 65533
    sandbox_uid: int = 65534  # the id the child sees inside its user namespace
    sandbox_gid: int = 65534
    system_ro: tuple[str, ...] = ("/usr",)  # read-only system runtime, each shown at its own path
    symlinks: tuple[tuple[str, str], ...] = (("usr/bin", "/bin"), ("usr/lib", "/lib"))  # (target, link)
