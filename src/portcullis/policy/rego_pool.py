"""Rego evaluation that cannot block the gateway: a small pool of worker processes per policy version.

rego-cpp runs to completion once called (its only limit, a statement count, is not in the C
API, and one built-in call can run for seconds or allocate gigabytes), and a thread cannot be
stopped. So a decision that misses the cache is evaluated in a worker *process*
(:mod:`.rego_worker`), which the kernel terminates when it has used its CPU budget. The pool's
contract, in order:

1. :meth:`RegoWorkers.evaluate` takes the input document as JSON (the exact bytes the decision
   cache keys on) and returns a :class:`~portcullis.policy.rego.RegoResult`. It never raises
   (except when the caller is cancelled): every failure is a result with ``error`` set, which the
   engine turns into a deny with ``policy_error`` (fail closed).
2. It waits for an idle worker at most ``max_wait_s`` (and with at most ``max_waiters`` others);
   a pool that is saturated or not (yet) running answers ``error="rego workers busy"``. So slow
   evaluations hold at most ``size`` workers and never the event loop, and an overload is a fast
   deny, never a queue that grows.
3. A worker that dies during an evaluation (its CPU budget, a memory cap, a crash) answers
   ``error="timeout"``; one that does not answer within ``wall_s`` (a backstop: it stopped using
   CPU) is killed and answers the same; a caller cancelled mid-evaluation kills its worker, whose
   state is then unknown. A lost worker is replaced in the background (a fork of the zygote:
   a few milliseconds).
4. The zygote is supervised: if it dies it is started again, with backoff; meanwhile every
   evaluation waits its ``max_wait_s`` and fails closed.

Everything here runs on the event loop; the only blocking call is the zygote's spawn
(``fork``/``exec``, a few milliseconds, at start and after a zygote crash).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import socket
import struct
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import orjson

from portcullis.policy.decision import Obligation
from portcullis.policy.rego_runtime import POINTER, REASON, RULE_ID, RegoFinding

if TYPE_CHECKING:
    from portcullis.policy.rego import RegoResult

log = logging.getLogger("portcullis.policy")
_HEADER = struct.Struct(">I")
MAX_REPLY_BYTES = 1024 * 1024
BUSY = "rego workers busy"
TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """How many workers, and what each evaluation may use.

    Fields:
        size: worker processes (evaluations that can run at the same time).
        budget_s: CPU seconds per evaluation; the kernel terminates a worker that uses more.
        memory_bytes: address space a worker may add to what it had when forked.
        max_wait_s: how long an evaluation waits for an idle worker before it is denied.
        max_waiters: how many evaluations may wait at once; more are denied at once.
        wall_s: wall-clock backstop per evaluation (a worker that stopped using CPU).
        spawn_timeout_s: how long a new worker (or the zygote) may take to be ready.
    """

    size: int = 2
    budget_s: float = 0.02
    memory_bytes: int = 512 * 1024 * 1024
    max_wait_s: float = 1.0
    max_waiters: int = 1024
    wall_s: float = 2.0
    spawn_timeout_s: float = 30.0


class _Channel(asyncio.Protocol):
    """One worker's socket: frames in, at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[bytes] | None = None
        self._early: collections.deque[bytes] = collections.deque()
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buffer)
            if size > MAX_REPLY_BYTES:
                self.close()
                return
            if len(self._buffer) < _HEADER.size + size:
                return
            frame = bytes(self._buffer[_HEADER.size:_HEADER.size + size])
            del self._buffer[:_HEADER.size + size]
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(frame)
            else:
                self._early.append(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(EOFError("worker gone"))

    async def receive(self, timeout_s: float) -> bytes:
        if self._early:
            return self._early.popleft()
        if self.lost:
            raise EOFError("worker gone")
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout_s):
                return await self._waiter
        finally:
            self._waiter = None

    def send(self, frame: bytes) -> None:
        if self.transport is None or self.lost:
            raise EOFError("worker gone")
        self.transport.write(_HEADER.pack(len(frame)) + frame)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass(slots=True)
class _Worker:
    pid: int
    channel: _Channel
    generation: int  # of the zygote that forked it


class RegoWorkers:
    """The worker pool of one policy version (see the module docstring)."""

    def __init__(self, modules: Mapping[str, str], slots: tuple[tuple[str, str], ...],
                 settings: PoolSettings = PoolSettings()) -> None:
        self._modules, self._slots, self.settings = dict(modules), slots, settings
        self._idle: collections.deque[_Worker] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[_Worker | None]] = collections.deque()
        self._live = 0  # workers alive or being started
        self._control: socket.socket | None = None
        self._zygote: asyncio.subprocess.Process | None = None
        self._wake = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._start_lock = asyncio.Lock()
        self._closing = False
        self._generation = 0
        self._watcher: asyncio.Task[None] | None = None
        self.ready = False  # the zygote runs and at least one worker was started
        self.lost_workers = 0  # died or were killed during an evaluation

    # ------------------------------------------------------------------ lifetime

    async def start(self) -> None:
        """Start the supervisor (idempotent): the zygote, then ``size`` workers, in the background."""
        async with self._start_lock:
            if self._supervisor is None and not self._closing:
                self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def run(self) -> None:
        """Run until cancelled (a gateway background task), then shut everything down."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            with anyio.move_on_after(10, shield=True):  # a cancelled task group must still stop the processes
                await self.aclose()

    async def aclose(self) -> None:
        self._closing = True
        self.ready = False
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(BaseException):
                await self._supervisor
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        while self._idle:
            self._idle.popleft().channel.close()
        await self._stop_zygote()

    async def __aenter__(self) -> RegoWorkers:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def wait_ready(self, timeout_s: float) -> bool:
        """Whether the pool became ready within ``timeout_s`` (for start-up and tests)."""
        await self.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self.ready and loop.time() < deadline:
            await asyncio.sleep(0.01)
        return self.ready

    # ------------------------------------------------------------------ evaluating

    async def evaluate(self, payload: bytes) -> RegoResult:
        """Evaluate the modules over ``payload`` (an input document as JSON). Never raises."""
        from portcullis.policy.rego import RegoResult

        if self._supervisor is None:
            await self.start()
        worker = await self._acquire()
        if worker is None:
            return RegoResult(error=BUSY)
        try:
            worker.channel.send(payload)
            reply = await worker.channel.receive(self.settings.wall_s)
        except TimeoutError:
            self._lose(worker, kill=True)
            log.warning("Rego evaluation stopped at the wall-clock backstop", extra={"fields": {"pid": worker.pid}})
            return RegoResult(error=TIMEOUT)
        except (EOFError, ConnectionError, OSError):
            self._lose(worker, kill=False)
            log.warning("Rego worker stopped during an evaluation (CPU budget, memory cap or crash)",
                        extra={"fields": {"pid": worker.pid}})
            return RegoResult(error=TIMEOUT)
        except BaseException:  # cancelled mid-evaluation: the worker's state is unknown
            self._lose(worker, kill=True)
            raise
        self._release(worker)
        return _result(reply)

    async def _acquire(self) -> _Worker | None:
        while self._idle:
            worker = self._idle.pop()
            if not worker.channel.lost:
                return worker
            self._lose(worker, kill=False)  # died while idle (killed from outside, a crash)
        if len(self._waiters) >= self.settings.max_waiters or self._closing:
            return None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[_Worker | None] = loop.create_future()
        self._waiters.append(waiter)
        expire = loop.call_later(self.settings.max_wait_s, _settle, waiter, None)
        try:
            return await waiter
        except BaseException:
            handed = waiter.result() if waiter.done() and not waiter.cancelled() else None
            if handed is not None:
                self._release(handed)  # handed over just as the caller went away
            raise
        finally:
            expire.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def _release(self, worker: _Worker) -> None:
        if worker.generation != self._generation:  # its zygote is gone (and has killed it)
            worker.channel.close()
            return
        if worker.channel.lost:
            self._lose(worker, kill=False)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(worker)
                return
        self._idle.append(worker)

    def _lose(self, worker: _Worker, *, kill: bool) -> None:
        worker.channel.close()
        if worker.generation != self._generation:
            return  # counted out when its zygote stopped
        self.lost_workers += 1
        self._live -= 1
        if kill:
            self._command(b"K" + worker.pid.to_bytes(8, "big"))
        self._wake.set()

    # ------------------------------------------------------------------ the zygote and its workers

    async def _supervise(self) -> None:
        backoff = 0.05
        while not self._closing:
            try:
                if self._zygote is None or self._zygote.returncode is not None:
                    await self._stop_zygote()  # a zygote that died: forget it and its idle workers
                    await self._start_zygote()
                while self._live < self.settings.size and not self._closing:
                    await self._spawn_worker()
                    self.ready = True
                backoff = 0.05
            except Exception as exc:
                self.ready = False
                log.warning("Rego workers unavailable: evaluations are denied until they are back",
                            extra={"fields": {"error": f"{type(exc).__name__}: {exc}"[:300]}})
                await self._stop_zygote()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            self._wake.clear()
            await self._wake.wait()

    async def _start_zygote(self) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._zygote = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "portcullis.policy.rego_worker", str(theirs.fileno()),
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                env=_worker_env())
        finally:
            theirs.close()
        ours.setblocking(False)
        self._control = ours
        setup = json.dumps({"modules": self._modules, "slots": [list(s) for s in self._slots],
                            "budget_s": self.settings.budget_s, "memory_bytes": self.settings.memory_bytes})
        await loop.sock_sendall(ours, _frame(setup.encode()))
        async with asyncio.timeout(self.settings.spawn_timeout_s):
            answer = await _read_frame(loop, ours)
        if answer != b"ready":
            raise RuntimeError(f"Rego zygote failed: {answer[:300]!r}")
        self._live = 0
        self._generation += 1
        self._watcher = loop.create_task(self._watch(self._zygote))

    async def _watch(self, zygote: asyncio.subprocess.Process) -> None:
        await zygote.wait()
        if zygote is self._zygote and not self._closing:
            log.warning("Rego zygote exited; restarting it", extra={"fields": {"status": zygote.returncode}})
            self.ready = False
            self._wake.set()

    async def _spawn_worker(self) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if self._control is None:
                raise RuntimeError("no zygote")
            socket.send_fds(self._control, [_frame(b"S")], [theirs.fileno()])
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._live += 1
        generation = self._generation
        try:
            _transport, channel = await loop.create_unix_connection(_Channel, sock=ours)
            hello = json.loads(await channel.receive(self.settings.spawn_timeout_s))
            pid = int(hello["pid"])
        except BaseException:
            if generation == self._generation:
                self._live -= 1
            ours.close()
            raise
        self._release(_Worker(pid, channel, generation))

    def _command(self, frame: bytes) -> None:
        if self._control is not None:
            with contextlib.suppress(OSError):
                self._control.send(_frame(frame))

    async def _stop_zygote(self) -> None:
        zygote, control = self._zygote, self._control
        self._zygote, self._control, self._live = None, None, 0
        self._generation += 1  # workers still busy are counted out (their zygote kills them)
        while self._idle:
            self._idle.popleft().channel.close()
        if control is not None:
            control.close()  # the zygote kills its workers and exits at the end of its control stream
        if zygote is not None and zygote.returncode is None:
            try:
                async with asyncio.timeout(5):
                    await zygote.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    zygote.kill()
                await zygote.wait()


_ENV_KEPT = ("PATH", "PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH", "VIRTUAL_ENV", "LANG", "LC_ALL", "TMPDIR")


def _worker_env() -> dict[str, str]:
    """Only what a Python interpreter needs to find its modules: none of the gateway's secrets
    (an ``opa.runtime()`` in a module, or a compromised worker, sees nothing else)."""
    return {name: os.environ[name] for name in _ENV_KEPT if name in os.environ}


def _settle(waiter: asyncio.Future[Any], value: Any) -> None:
    if not waiter.done():
        waiter.set_result(value)


def _frame(data: bytes) -> bytes:
    return _HEADER.pack(len(data)) + data


async def _read_frame(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    buffer = b""
    while len(buffer) < _HEADER.size or len(buffer) < _HEADER.size + _HEADER.unpack_from(buffer)[0]:
        chunk = await loop.sock_recv(sock, 65536)
        if not chunk:
            raise EOFError("zygote gone")
        buffer += chunk
        if len(buffer) >= _HEADER.size and _HEADER.unpack_from(buffer)[0] > MAX_REPLY_BYTES:
            raise EOFError("zygote sent an oversized frame")
    return buffer[_HEADER.size:_HEADER.size + _HEADER.unpack_from(buffer)[0]]


def _result(reply: bytes) -> RegoResult:
    """A worker's answer, checked again here (a worker is our code, but its memory is rego-cpp's)."""
    from portcullis.policy.rego import RegoResult

    try:
        data = orjson.loads(reply)
        if "e" in data:
            error = data["e"]
            return RegoResult(error=error[:200] if isinstance(error, str) and error else "worker error")
        findings = tuple(_finding(item) for item in data["f"])
        obligations = tuple(_obligation(item) for item in data["o"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return RegoResult(error="output: malformed worker reply")
    return RegoResult(findings=findings, obligations=obligations)


def _finding(item: Any) -> RegoFinding:
    effect, rule_id, reason = item
    if (effect not in ("deny", "require_approval") or not isinstance(rule_id, str) or not RULE_ID.fullmatch(rule_id)
            or not isinstance(reason, str) or not REASON.fullmatch(reason)):
        raise ValueError("bad finding")
    return RegoFinding(effect, rule_id, reason)


def _obligation(item: Any) -> Obligation:
    kind, pointer = item
    if kind == "audit" and pointer is None:
        return Obligation("audit")
    if kind == "redact" and isinstance(pointer, str) and len(pointer) <= 512 and POINTER.fullmatch(pointer):
        return Obligation("redact", pointer)
    raise ValueError("bad obligation")
