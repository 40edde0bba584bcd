"""A stdio service's child started inside the sandbox (:mod:`portcullis.kits.sandbox`).

:class:`StdioSandbox` is made once per gateway; :meth:`StdioSandbox.launch` turns one
:class:`~portcullis.upstream.confinement.Confinement` into the command that starts the child:

1. The spec: the child's argv (run through ``env -u PWD``, and ``-C <cwd>`` when the service has a
   ``cwd``; else it starts in its private ``/tmp``), its whole environment (nothing inherited; given to
   bwrap in its options descriptor, never on a command line nor as bwrap's own environment), the view bound at
   the same places (paths inside the system view, ``/usr`` and the like, are visible already and
   left out), the network mode (``none``: a network namespace of its own with no interface but
   loopback, and a seccomp filter that refuses every socket but ``AF_UNIX``), and the limits.
2. The seccomp filter compiled for that mode, and bwrap's options (the environment among them,
   :func:`~portcullis.kits.sandbox.options_fd`), each in an in-memory file bwrap reads on a passed
   descriptor: bwrap's command line, which any local user can read for the child's whole life, holds
   no value of the environment.
3. When the gateway runs as root, a ``pids`` cgroup for this spawn (:mod:`.pids_cgroup`), joined
   by a ``/bin/sh`` launcher before it execs bwrap; otherwise ``RLIMIT_NPROC`` bounds the
   processes (set by ``prlimit`` inside the sandbox, with the other rlimits).
4. bwrap runs as the gateway's own user (the view must be readable by it).

Fail closed: bwrap missing or not executable, no seccomp, a root gateway without a writable pids
hierarchy, or a spec the sandbox refuses: :class:`~portcullis.kits.sandbox.SandboxUnavailable`
(or ``SandboxSpecError``), and nothing runs. There is no fallback to an unconfined child.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from portcullis.kits.sandbox import (
    Bind,
    Limits,
    SandboxHost,
    SandboxSpec,
    SandboxUnavailable,
    build_argv,
    bwrap_options,
    compile_filter,
    detect_host,
    filter_fd,
    options_fd,
)
from portcullis.upstream.confinement import Confinement
from portcullis.upstream.pids_cgroup import PidsCgroups, find_pids_root

DEFAULT_BWRAP = "/usr/bin/bwrap"
BWRAP_ENV = "PORTCULLIS_BWRAP"  # where bwrap is, when not at DEFAULT_BWRAP
_NO_CPU_LIMIT_S = 10_000_000  # "unset": about 115 days of CPU (a service is long-lived)
_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Launch:
    """How to start one confined child: ``argv`` with ``pass_fds`` open, then ``cleanup()`` once it is gone."""

    argv: list[str]
    pass_fds: tuple[int, ...]
    cleanup: Callable[[], None] = field(default=lambda: None)


def _covered(path: str, host: SandboxHost) -> bool:
    """Whether ``path`` is already visible through the system view."""
    roots = (*host.system_ro, *(link for _, link in host.symlinks))
    return any(path == root or path.startswith(root + "/") for root in roots)


def sandbox_spec(c: Confinement, argv: Sequence[str], child_env: Mapping[str, str], cwd: str | None,
                 host: SandboxHost) -> SandboxSpec:
    """Step 1, pure: the spec for ``c`` running ``argv`` with exactly ``child_env``."""
    if c.limits is None:
        raise SandboxUnavailable(detail="no limits for a confined spawn")
    limits = c.limits
    view = [v for v in c.view if not _covered(v.path, host)]
    return SandboxSpec(
        # bwrap sets PWD (to where it starts the child); the child gets exactly its declared environment
        argv=("/usr/bin/env", "-u", "PWD", *(("-C", cwd) if cwd is not None else ()), *argv),
        env=tuple(sorted(child_env.items())),
        ro_binds=tuple(Bind(v.path, v.path) for v in view if not v.writable),
        rw_binds=tuple(Bind(v.path, v.path) for v in view if v.writable),
        network="shared" if c.network == "host" else "none",
        limits=Limits(cpu_s=limits.cpu_s or _NO_CPU_LIMIT_S, wall_s=24 * 3600.0,
                      memory_bytes=limits.memory_mb * _MIB, max_processes=limits.max_processes,
                      max_open_files=limits.max_open_files, max_file_bytes=limits.max_file_mb * _MIB,
                      tmp_bytes=limits.tmp_mb * _MIB))


class StdioSandbox:
    """The sandbox backend for stdio services: bwrap, this host's layout, and (as root) pids cgroups."""

    def __init__(self, bwrap: str = DEFAULT_BWRAP) -> None:
        self.bwrap = bwrap
        self.host = detect_host(bwrap)
        root = find_pids_root() if os.geteuid() == 0 else None
        self._cgroups = None if root is None else PidsCgroups(root)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> StdioSandbox:
        return cls(environ.get(BWRAP_ENV) or DEFAULT_BWRAP)

    def check(self) -> None:
        """Refuse now what would refuse every spawn: no bwrap, no seccomp, root without pids cgroups."""
        if not (os.path.isfile(self.bwrap) and os.access(self.bwrap, os.X_OK)):
            raise SandboxUnavailable(detail="bwrap not found or not executable")
        compile_filter("none")
        compile_filter("shared")
        if os.geteuid() == 0 and self._cgroups is None:
            raise SandboxUnavailable(detail="the gateway runs as root and no pids cgroup hierarchy is writable")

    def launch(self, c: Confinement, argv: Sequence[str], child_env: Mapping[str, str],
               cwd: str | None) -> Launch:
        """Steps 1-4 for one spawn (the caller starts ``Launch.argv`` and calls ``cleanup`` after)."""
        self.check()
        spec = sandbox_spec(c, argv, child_env, cwd, self.host)
        fds = [filter_fd(spec.network)]  # 2
        try:
            fds.append(options_fd(bwrap_options(spec, self.host, seccomp_fd=fds[0])))
            command = build_argv(spec, self.host, args_fd=fds[1])
            if self._cgroups is None:  # 4: RLIMIT_NPROC binds the gateway's (non-root) user
                return Launch(command, tuple(fds), lambda: _close(fds))
            cgroups = self._cgroups
            try:
                procs = cgroups.create(c.service, spec.limits.max_processes)  # 3
            except OSError as exc:
                raise SandboxUnavailable(detail="pids cgroup could not be made") from exc
        except BaseException:
            _close(fds)
            raise

        def cleanup() -> None:
            _close(fds)
            cgroups.remove(procs)

        # "$0" is the cgroup's procs file: the shell moves itself in, then becomes bwrap
        return Launch(["/bin/sh", "-c", 'echo "$$" > "$0" && exec "$@"', procs, *command], tuple(fds), cleanup)


def _close(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
