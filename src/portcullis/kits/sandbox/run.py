"""Run one spec to completion: spawn, drain with a hard cap, kill on the wall clock, classify.

Steps, in order:

1. Refuse unless bwrap is an executable file (fail closed: never run unconfined).
2. Compile the seccomp filter into an in-memory file; open a pipe for bwrap's JSON status.
3. Spawn bwrap in a new session, with an empty environment, as the unprivileged host id when the
   gateway is root (``user=``/``group=`` are applied by the C spawn code, not a ``preexec_fn``).
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

from portcullis.kits.sandbox.argv import build_argv
from portcullis.kits.sandbox.errors import SandboxUnavailable
from portcullis.kits.sandbox.seccomp import filter_fd
from portcullis.kits.sandbox.spec import SandboxHost, SandboxSpec

LimitHit = Literal["cpu", "wall", "memory", "processes", "output"]
_CHUNK = 65536
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


def _kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL bwrap's process group, only while bwrap is unreaped (after that its pid may be reused)."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


async def run(spec: SandboxSpec, host: SandboxHost, *, stdin: bytes = b"") -> SandboxResult:
    """Run ``spec`` confined and wait for it; see the module docstring for the steps."""
    if not (os.path.isfile(host.bwrap) and os.access(host.bwrap, os.X_OK)):
        raise SandboxUnavailable(detail="bwrap not found")
    identity = spawn_identity(host)
    bpf = filter_fd(spec.network)
    status_r, status_w = os.pipe()
    try:
        argv = build_argv(spec, host, seccomp_fd=bpf, status_fd=status_w)
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env={}, cwd="/", pass_fds=(bpf, status_w),
            start_new_session=True, user=identity[0] if identity else None,
            group=identity[1] if identity else None, extra_groups=[] if identity else None,
        )
    except OSError as exc:
        os.close(status_r)
        raise SandboxUnavailable(detail="bwrap could not be started") from exc
    finally:
        os.close(bpf)
        os.close(status_w)
    try:
        return await _supervise(proc, spec, stdin, status_r, started)
    finally:
        _kill(proc)  # a cancelled or failed supervision still takes the child down
        os.close(status_r)


async def _supervise(
    proc: asyncio.subprocess.Process, spec: SandboxSpec, stdin: bytes, status_r: int, started: float
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
            _kill(proc)
        await proc.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drains, timeout=5)  # the pipes close once the pid namespace is gone
    finally:
        waiter.cancel()
        finished.cancel()
    exit_code = parse_status(_read_all(status_r))
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


def _read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, _CHUNK):
            chunks.append(chunk)
    return b"".join(chunks)
