"""Spec to command line: pure functions, no file system, no processes (but :func:`options_fd`).

:func:`bwrap_options` gives bwrap's options for one child: namespaces, binds, the environment
(``--clearenv``, then ``--setenv`` for each declared variable), the seccomp descriptor. They never
go on a command line, which every local user can read (``/proc/<pid>/cmdline``, ``ps``) for as long
as bwrap lives, and bwrap lives as long as the child: :func:`options_fd` puts them in an in-memory
file that :func:`build_argv`'s command line names with ``--args FD``. What stays on the command line
is bwrap, the descriptor number, prlimit's limits and the child's own argv (visible on the child
anyway), never an environment value. bwrap is not given the child's environment either: it runs
outside the sandbox, so a declared ``LD_PRELOAD`` or ``LD_LIBRARY_PATH`` (pointing into a writable
path, say) must reach only the confined child, never bwrap itself.

Inside the sandbox, util-linux ``prlimit`` sets the rlimits and then execs the child's own argv,
so the limits bind the child and everything it forks while bwrap itself (outside) runs unlimited.
``RLIMIT_NPROC`` is set *after* bwrap has made the user namespace, so it counts the processes of
that namespace only (kernel ucounts, Linux 5.14+) and concurrent sandboxes do not share one budget.

:func:`launch_argv` wraps the command line for spawners that cannot pass file descriptors or
switch users: ``/bin/sh`` opens the compiled seccomp filter on a fixed descriptor and ``setpriv``
drops to the unprivileged host id before bwrap runs. With no descriptor for the options it takes
only a spec without environment (its options are on its command line).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from portcullis.kits.sandbox.errors import SandboxSpecError
from portcullis.kits.sandbox.memfd import memory_fd
from portcullis.kits.sandbox.spec import SCRATCH_DEST, SHM_DEST, TMP_DEST, Limits, SandboxHost, SandboxSpec

LAUNCH_SECCOMP_FD = 9  # the descriptor launch_argv's shell opens the filter file on


def limit_args(limits: Limits) -> list[str]:
    """prlimit options for ``limits`` (the CPU hard limit is one second past the soft one)."""
    return [
        f"--cpu={limits.cpu_s}:{limits.cpu_s + 1}",
        f"--as={limits.memory_bytes}",
        f"--nproc={limits.max_processes}",
        f"--nofile={limits.max_open_files}",
        f"--fsize={limits.max_file_bytes}",
        "--core=0",
    ]


def bwrap_options(spec: SandboxSpec, host: SandboxHost, *, seccomp_fd: int,
                  status_fd: int | None = None) -> list[str]:
    """bwrap's options for ``spec`` (filter already open on ``seccomp_fd``), for :func:`options_fd`."""
    options = ["--unshare-all", "--unshare-user"]
    if spec.network == "shared":
        options.append("--share-net")
    options += [
        "--disable-userns",  # no further user namespaces inside (seccomp also refuses them)
        "--die-with-parent",
        "--new-session",  # no TIOCSTI into the caller's terminal
        "--clearenv",
        "--cap-drop", "ALL",
        "--uid", str(host.sandbox_uid),
        "--gid", str(host.sandbox_gid),
    ]
    for path in host.system_ro:
        options += ["--ro-bind", path, path]
    for target, link in host.symlinks:
        options += ["--symlink", target, link]
    size = str(spec.limits.tmp_bytes)
    # /tmp and /dev/shm are the only writable places besides declared binds: each a tmpfs of tmp_bytes.
    # bwrap's own root and /dev are tmpfs too, unbounded: they are remounted read-only at the end.
    options += ["--proc", "/proc", "--dev", "/dev", "--size", size, "--tmpfs", SHM_DEST,
                "--size", size, "--tmpfs", TMP_DEST]
    for bind in spec.ro_binds:
        options += ["--ro-bind", bind.source, bind.dest]
    for bind in spec.rw_binds:
        options += ["--bind", bind.source, bind.dest]
    if spec.scratch is not None:
        options += ["--bind", spec.scratch, SCRATCH_DEST, "--chdir", SCRATCH_DEST]
    else:
        options += ["--chdir", TMP_DEST]
    options += ["--remount-ro", "/dev", "--remount-ro", "/"]
    for name, value in spec.env:
        options += ["--setenv", name, value]
    options += ["--seccomp", str(seccomp_fd)]
    if status_fd is not None:
        options += ["--json-status-fd", str(status_fd)]
    return options


def options_fd(options: Sequence[str]) -> int:
    """An in-memory file holding ``options`` NUL-separated, for ``bwrap --args FD`` (the caller closes it)."""
    if any("\x00" in option for option in options):  # the spec refuses NUL already; never split an option
        raise SandboxSpecError(detail="NUL byte in a bwrap option")
    return memory_fd("portcullis-bwrap-args", b"".join(os.fsencode(option) + b"\x00" for option in options))


def _command(spec: SandboxSpec, host: SandboxHost) -> list[str]:
    return ["--", host.prlimit, *limit_args(spec.limits), "--", *spec.argv]


def build_argv(spec: SandboxSpec, host: SandboxHost, *, args_fd: int) -> list[str]:
    """The bwrap command line that runs ``spec``, its options read from ``args_fd`` (:func:`options_fd`)."""
    return [host.bwrap, "--args", str(args_fd), *_command(spec, host)]


def launch_argv(spec: SandboxSpec, host: SandboxHost, *, seccomp_file: str, as_root: bool) -> list[str]:
    """A self-contained command line: opens ``seccomp_file`` itself and drops root first.

    A spec with an environment is refused: its values would be on the command line."""
    if spec.env:
        raise SandboxSpecError(detail="launch_argv cannot keep an environment off the command line")
    inner = [host.bwrap, *bwrap_options(spec, host, seccomp_fd=LAUNCH_SECCOMP_FD), *_command(spec, host)]
    if as_root and host.host_uid is not None:
        gid = host.host_gid if host.host_gid is not None else host.host_uid
        inner = ["/usr/bin/setpriv", f"--reuid={host.host_uid}", f"--regid={gid}", "--clear-groups",
                 "--inh-caps=-all", "--", *inner]
    # "$0" is the filter file; the rest is the command, exec'd with the filter open on fd 9.
    return ["/bin/sh", "-c", f'exec "$@" {LAUNCH_SECCOMP_FD}<"$0"', seccomp_file, *inner]
