"""The Rego worker processes: one *zygote* per policy version, and the workers it forks.

Run by :class:`~portcullis.policy.rego_pool.RegoWorkers` as ``python -m
portcullis.policy.rego_worker <control fd>``; never by hand. The contract, in order:

1. The zygote reads one setup frame from the control socket (the modules, the query slots, the
   CPU budget and the memory allowance), compiles the modules (it never evaluates: only a worker
   runs under a budget) and answers ``ready`` (or ``error: …`` and exits). It imports the
   standard library, regopy and :mod:`.rego_runtime` only, so it starts in well under a second.
2. Then it obeys control frames: ``S`` carries one socket (``SCM_RIGHTS``): fork a worker that
   talks over it; ``K`` + 8-byte pid: kill that worker (only a child it has not reaped, so the pid
   cannot have been reused). At the end of the control stream (the gateway closed it, or died)
   it kills its workers and exits.
3. A worker says hello (``{"pid": …}``), then answers frames one at a time: an input document
   (JSON) in, ``{"f": [[effect, id, reason], …], "o": [[kind, pointer], …]}`` or ``{"e": error}``
   out. Around each evaluation an ``ITIMER_PROF`` timer with the budget runs, and ``SIGPROF``
   keeps its default action: a worker that uses its budget of CPU time (user + system, so a busy
   machine that preempts it does not count) is **terminated by the kernel**, mid-evaluation,
   wherever rego-cpp is. The gateway sees the socket close and denies the call (``policy_error``).
   Its address space is capped at what it had at fork plus the allowance (``RLIMIT_AS``), so a
   runaway allocation fails in the worker, not in the gateway.
4. A worker exits at the end of its socket (the gateway closed it or died).

Frames: a 4-byte big-endian length, then that many bytes.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import socket
import struct
import sys
import time
from typing import Any

_HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 64 * 1024 * 1024  # an input document is capped far below this by the gateway's body limit


# ----------------------------------------------------------------------------- framing (blocking side)


class _Reader:
    """Reads frames (and any file descriptors passed along) from a blocking stream socket."""

    def __init__(self, sock: socket.socket, *, with_fds: bool = False) -> None:
        self._sock, self._with_fds = sock, with_fds
        self._buffer = bytearray()
        self.fds: collections.deque[int] = collections.deque()

    def frame(self) -> bytes | None:
        """The next frame, or None at the end of the stream."""
        while True:
            if len(self._buffer) >= _HEADER.size:
                (size,) = _HEADER.unpack_from(self._buffer)
                if size > MAX_FRAME_BYTES:
                    return None  # not our peer: stop
                if len(self._buffer) >= _HEADER.size + size:
                    data = bytes(self._buffer[_HEADER.size:_HEADER.size + size])
                    del self._buffer[:_HEADER.size + size]
                    return data
            if self._with_fds:
                chunk, fds, _flags, _addr = socket.recv_fds(self._sock, 65536, 4)
                self.fds.extend(fds)
            else:
                chunk = self._sock.recv(65536)
            if not chunk:
                return None
            self._buffer += chunk


def _send(sock: socket.socket, data: bytes) -> None:
    sock.sendall(_HEADER.pack(len(data)) + data)


# ----------------------------------------------------------------------------- the zygote


def zygote(control: socket.socket) -> int:
    """Steps 1, 2 and 4 of the module docstring; returns the exit status."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the gateway decides
    reader = _Reader(control, with_fds=True)
    setup_frame = reader.frame()
    if setup_frame is None:
        return 1
    try:
        setup = json.loads(setup_frame)
        from portcullis.policy.rego_runtime import Runtime

        slots = tuple((str(package), str(key)) for package, key in setup["slots"])
        # no warm-up evaluation here: nothing would stop it (a worker's first one costs ~0.6 ms more)
        runtime = Runtime.build(setup["modules"], slots)
        budget_s, allowance = float(setup["budget_s"]), int(setup["memory_bytes"])
    except Exception as exc:  # the gateway compiled the same modules; this is a broken install or a bug
        _send(control, f"error: {type(exc).__name__}: {str(exc)[:200]}".encode())
        return 1
    _send(control, b"ready")
    children: set[int] = set()
    while True:
        command = reader.frame()
        _reap(children)
        if command is None:
            break
        if command == b"S" and reader.fds:
            channel = socket.socket(fileno=reader.fds.popleft())
            pid = os.fork()
            if pid == 0:  # the worker
                status = 1
                try:
                    control.close()
                    for fd in reader.fds:
                        os.close(fd)
                    status = _worker(channel, runtime, slots, budget_s, allowance)
                finally:
                    os._exit(status)
            children.add(pid)
            channel.close()
        elif command[:1] == b"K" and len(command) == 9:
            victim = int.from_bytes(command[1:], "big")
            if victim in children:  # not reaped yet: the pid is still this child's
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    return 0


def _reap(children: set[int]) -> None:
    while children:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            children.clear()
            return
        if pid == 0:
            return
        children.discard(pid)


# ----------------------------------------------------------------------------- a worker


def _worker(channel: socket.socket, runtime: Any, slots: tuple[tuple[str, str], ...], budget_s: float,
            allowance: int) -> int:
    """Step 3 of the module docstring."""
    from portcullis.policy.rego_runtime import EvalError, decode

    signal.signal(signal.SIGPROF, signal.SIG_DFL)  # over budget: the kernel terminates this process
    _cap_memory(allowance)
    _send(channel, json.dumps({"pid": os.getpid()}).encode())
    reader = _Reader(channel)
    budget_ns = round(budget_s * 1e9)
    while (frame := reader.frame()) is not None:
        started = time.thread_time_ns()
        signal.setitimer(signal.ITIMER_PROF, max(budget_s, 1e-6))
        try:
            findings, obligations = decode(runtime.evaluate(json.loads(frame)), slots)
            reply: dict[str, Any] = {
                "f": [[f.effect, f.rule_id, f.reason] for f in findings],
                "o": [[o.kind, o.pointer] for o in obligations]}
        except EvalError as exc:
            reply = {"e": str(exc)}
        except Exception as exc:  # fail closed: the gateway denies
            reply = {"e": f"internal: {type(exc).__name__}"}
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
        if time.thread_time_ns() - started > budget_ns:  # finished before the timer's next tick fired
            reply = {"e": "timeout"}
        _send(channel, json.dumps(reply).encode())
    return 0


def _cap_memory(allowance: int) -> None:
    """Cap the address space at its current size plus ``allowance`` bytes (Linux; elsewhere a no-op)."""
    try:
        import resource

        with open("/proc/self/status", encoding="ascii") as status:
            size_kb = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
        limit = size_kb * 1024 + allowance
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, OSError, StopIteration, ValueError):
        pass


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m portcullis.policy.rego_worker <control fd> (started by the gateway)", file=sys.stderr)
        return 2
    with socket.socket(fileno=int(argv[1])) as control:
        return zygote(control)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
