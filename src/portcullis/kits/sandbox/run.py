"""Run one spec to completion: spawn, drain with a hard cap, kill on the wall clock, classify.

Steps, in order:

1. Refuse unless bwrap is an executable file (fail closed: never run unconfined).
2. Compile the seccomp filter into an in-memory file; open a pipe for bwrap's JSON status.
3. Spawn bwrap in a new session, with an empty environment and its options (the child's environment
   among them) in an in-memory file it reads with ``--args``, never on its command line, as the
   unprivileged host id when the gateway is root (``user=``/``group=`` are applied by the C spawn
   code, not a ``preexec_fn``).
4. Drain stdout and stderr concurrently, keeping at most ``max_output_bytes`` of each; past that,
   or past ``wall_s``, kill bwrap's process group. bwrap's init is pid 1 of the child's pid
   namespace and dies with its parent, so the kernel kills every process the child started.
5. Read bwrap's status: no ``exit-code`` record and no kill of ours means bwrap could not set the
   sandbox up (missing namespace, seccomp or bind support): refuse with :class:`SandboxUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Literal

from portcullis.kits.sandbox.argv import build_argv, bwrap_options, options_fd
from portcullis.kits.sandbox.errors import SandboxUnavailable
from portcullis.kits.sandbox.seccomp import filter_fd
from portcullis.kits.sandbox.spec import SandboxHost, SandboxSpec

LimitHit = Literal["cpu", "wall", "memory", "processes", "output"]
_CHUNK = 65536
_REAP_GRACE_S = 2.0  # after its init is killed, bwrap exits by itself well within this
_CPU_SIGNALS = (signal.SIGXCPU, signal.SIGKILL)  # soft RLIMIT_CPU, then the hard one


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """What a confined child did. ``exit_code`` is None when the sandbox killed it."""

    exit_code: int | None
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    limit: LimitHit | None
    duration_s: float


def classify(exit_code: int | None, killed_for: LimitHit | None) -> LimitHit | None:
    """The limit a finished child hit: our own kill first, then the CPU rlimit's signals."""
    if killed_for is not None:
        return killed_for
    if exit_code is not None and exit_code - 128 in _CPU_SIGNALS:
        return "cpu"
    return None


def parse_status(raw: bytes) -> int | None:
    """The child's exit code from bwrap's ``--json-status-fd`` records, None when absent."""
    for line in raw.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("exit-code"), int):
            return int(record["exit-code"])
    return None


class _Drain:
    """Reads one pipe to its end, keeping at most ``cap`` bytes; sets ``over`` once past it."""

    def __init__(self, cap: int, over: asyncio.Event) -> None:
        self.cap, self.over = cap, over
        self.data = bytearray()
        self.truncated = False

    async def run(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(_CHUNK):
            room = self.cap - len(self.data)
            if len(chunk) > room:  # keep reading to the end (the kill closes it) but keep nothing more
                self.data += chunk[:room]
                self.truncated = True
                self.over.set()
            else:
                self.data += chunk


def spawn_identity(host: SandboxHost) -> tuple[int, int] | None:
    """(uid, gid) to spawn bwrap as: the unprivileged host id when the gateway is root, else None."""
    if os.geteuid() != 0:
        return None
    if host.host_uid is None:
        raise SandboxUnavailable(detail="gateway is root and no unprivileged host uid is configured")
    return host.host_uid, host.host_gid if host.host_gid is not None else host.host_uid


class _Status:
    """bwrap's ``--json-status-fd`` pipe, read as it fills: its first record names the sandbox's init."""

    def __init__(self, fd: int) -> None:
        self.fd, self.raw = fd, b""
        os.set_blocking(fd, False)

    def read(self) -> bytes:
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.fd, _CHUNK):
                self.raw += chunk
        return self.raw

    def child_pid(self) -> int | None:
        for line in self.read().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and isinstance(record.get("child-pid"), int) and record["child-pid"] > 1:
                    return int(record["child-pid"])
        return None


def _kill(proc: asyncio.subprocess.Process, status: _Status, *, outer: bool) -> None:
    """SIGKILL the sandbox's init (pid 1 of its namespace: the kernel takes every process in it down and
    bwrap reaps it, so nothing is left for the host's init to reap), and with ``outer`` bwrap's own process
    group too. Only while bwrap is unreaped: after that, pids may be reused."""
    if proc.returncode is None:
        inner = status.child_pid()
        if inner is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(inner, signal.SIGKILL)
        if outer or inner is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)


async def run(spec: SandboxSpec, host: SandboxHost, *, stdin: bytes = b"") -> SandboxResult:
    """Run ``spec`` confined and wait for it; see the module docstring for the steps."""
    if not (os.path.isfile(host.bwrap) and os.access(host.bwrap, os.X_OK)):
        raise SandboxUnavailable(detail="bwrap not found")
    identity = spawn_identity(host)
    bpf = filter_fd(spec.network)
    status_r, status_w = os.pipe()
    opened = [bpf, status_w]
    try:
        options = options_fd(bwrap_options(spec, host, seccomp_fd=bpf, status_fd=status_w))
        opened.append(options)
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *build_argv(spec, host, args_fd=options), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env={}, cwd="/", pass_fds=tuple(opened),
            start_new_session=True, user=identity[0] if identity else None,
            group=identity[1] if identity else None, extra_groups=[] if identity else None,
        )
    except OSError as exc:
        os.close(status_r)
        raise SandboxUnavailable(detail="bwrap could not be started") from exc
    except BaseException:
        os.close(status_r)
        raise
    finally:
        for fd in opened:
            os.close(fd)
    status = _Status(status_r)
    try:
        return await _supervise(proc, spec, stdin, status, started)
    finally:
        _kill(proc, status, outer=True)  # a cancelled or failed supervision still takes the child down
        os.close(status_r)


async def _supervise(
    proc: asyncio.subprocess.Process, spec: SandboxSpec, stdin: bytes, status: _Status, started: float
) -> SandboxResult:
    over = asyncio.Event()
    out, err = _Drain(spec.limits.max_output_bytes, over), _Drain(spec.limits.max_output_bytes, over)
    if proc.stdout is None or proc.stderr is None or proc.stdin is None:
        raise SandboxUnavailable(detail="bwrap pipes missing")
    drains: asyncio.Future[Any] = asyncio.gather(out.run(proc.stdout), err.run(proc.stderr), _feed(proc.stdin, stdin))
    waiter: asyncio.Future[Any] = asyncio.ensure_future(over.wait())
    # finished: the child exited *and* closed its output (a child that closes both and sleeps is caught too)
    finished: asyncio.Future[Any] = asyncio.gather(drains, proc.wait())
    killed_for: LimitHit | None = None
    try:
        done, _ = await asyncio.wait({finished, waiter}, timeout=spec.limits.wall_s,
                                     return_when=asyncio.FIRST_COMPLETED)
        if waiter in done:
            killed_for = "output"
        elif not done:
            killed_for = "wall"
        if killed_for is not None:
            _kill(proc, status, outer=False)
            try:  # bwrap reaps its init and exits by itself; past a grace period its group goes too
                await asyncio.wait_for(asyncio.shield(proc.wait()), timeout=_REAP_GRACE_S)
            except TimeoutError:
                _kill(proc, status, outer=True)
        await proc.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drains, timeout=5)  # the pipes close once the pid namespace is gone
    finally:
        waiter.cancel()
        finished.cancel()
    exit_code = parse_status(status.read())
    if exit_code is None and killed_for is None:
        raise SandboxUnavailable(detail="bwrap refused to set the sandbox up")
    return SandboxResult(
        exit_code=None if killed_for else exit_code, stdout=bytes(out.data), stderr=bytes(err.data),
        stdout_truncated=out.truncated, stderr_truncated=err.truncated,
        limit=classify(exit_code if not killed_for else None, killed_for),
        duration_s=time.monotonic() - started,
    )


async def _feed(sink: asyncio.StreamWriter, data: bytes) -> None:
    with contextlib.suppress(ConnectionError, BrokenPipeError):
        if data:
            sink.write(data)
            await sink.drain()
        sink.close()
