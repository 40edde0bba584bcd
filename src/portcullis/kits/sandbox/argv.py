"""Spec to command line: pure functions, no file system, no processes.

:func:`build_argv` gives the bwrap command line for one child. Inside the sandbox, util-linux
``prlimit`` sets the rlimits and then execs the child's own argv, so the limits bind the child and
everything it forks while bwrap itself (outside) runs unlimited. ``RLIMIT_NPROC`` is set *after*
bwrap has made the user namespace, so it counts the processes of that namespace only (kernel
ucounts, Linux 5.14+) and concurrent sandboxes do not share one budget.

:func:`launch_argv` wraps that command line for spawners that cannot pass file descriptors or
switch users (the MCP SDK's stdio client): ``/bin/sh`` opens the compiled seccomp filter on a
fixed descriptor and ``setpriv`` drops to the unprivileged host id before bwrap runs.
"""

from __future__ import annotations

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


def build_argv(spec: SandboxSpec, host: SandboxHost, *, seccomp_fd: int, status_fd: int | None = None) -> list[str]:
    """The bwrap command line that runs ``spec`` (filter already open on ``seccomp_fd``)."""
    argv = [host.bwrap, "--unshare-all", "--unshare-user"]
    if spec.network == "shared":
        argv.append("--share-net")
    argv += [
        "--disable-userns",  # no further user namespaces inside (seccomp also refuses them)
        "--die-with-parent",
        "--new-session",  # no TIOCSTI into the caller's terminal
        "--clearenv",
        "--cap-drop", "ALL",
        "--uid", str(host.sandbox_uid),
        "--gid", str(host.sandbox_gid),
    ]
    for path in host.system_ro:
        argv += ["--ro-bind", path, path]
    for target, link in host.symlinks:
        argv += ["--symlink", target, link]
    size = str(spec.limits.tmp_bytes)
    # /tmp and /dev/shm are the only writable places besides declared binds: each a tmpfs of tmp_bytes.
    # bwrap's own root and /dev are tmpfs too, unbounded: they are remounted read-only at the end.
    argv += ["--proc", "/proc", "--dev", "/dev", "--size", size, "--tmpfs", SHM_DEST,
             "--size", size, "--tmpfs", TMP_DEST]
    for bind in spec.ro_binds:
        argv += ["--ro-bind", bind.source, bind.dest]
    for bind in spec.rw_binds:
        argv += ["--bind", bind.source, bind.dest]
    if spec.scratch is not None:
        argv += ["--bind", spec.scratch, SCRATCH_DEST, "--chdir", SCRATCH_DEST]
    else:
        argv += ["--chdir", TMP_DEST]
    argv += ["--remount-ro", "/dev", "--remount-ro", "/"]
    for name, value in spec.env:
        argv += ["--setenv", name, value]
    argv += ["--seccomp", str(seccomp_fd)]
    if status_fd is not None:
        argv += ["--json-status-fd", str(status_fd)]
    argv += ["--", host.prlimit, *limit_args(spec.limits), "--", *spec.argv]
    return argv


def launch_argv(spec: SandboxSpec, host: SandboxHost, *, seccomp_file: str, as_root: bool) -> list[str]:
    """A self-contained command line: opens ``seccomp_file`` itself and drops root first."""
    inner = build_argv(spec, host, seccomp_fd=LAUNCH_SECCOMP_FD)
    if as_root and host.host_uid is not None:
        gid = host.host_gid if host.host_gid is not None else host.host_uid
        inner = ["/usr/bin/setpriv", f"--reuid={host.host_uid}", f"--regid={gid}", "--clear-groups",
                 "--inh-caps=-all", "--", *inner]
    # "$0" is the filter file; the rest is the command, exec'd with the filter open on fd 9.
    return ["/bin/sh", "-c", f'exec "$@" {LAUNCH_SECCOMP_FD}<"$0"', seccomp_file, *inner]
