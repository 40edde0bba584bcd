"""``portcullis serve --workers N``: a supervisor that binds the sockets once and runs N gateway workers.

Decisions (docs/decisions.md, docs/cluster.md "Workers and replicas"):

1. The supervisor binds the MCP listener and the admin listener itself, once, and each worker serves
   the *same* inherited sockets (uvicorn ``sockets=``); the kernel hands each connection to whichever
   worker accepts first. Not ``SO_REUSEPORT``: there each worker owns an accept queue, and connections
   waiting in a dying worker's queue are reset; with one shared queue the other workers take them.
   A bind error is found once, before any worker starts.
2. Workers are fresh interpreters (``python -m portcullis.serving.worker``), not ``fork()`` copies: no
   thread, lock or event loop of the parent leaks into them, and a restarted worker is the same as the
   first. They run in their own session, so only the supervisor signals them.
3. Signals: SIGTERM and SIGINT start a graceful drain (each worker gets SIGTERM: uvicorn stops accepting,
   finishes open calls, then the gateway's background tasks flush the audit), SIGKILL for a worker
   still running ``drain_s`` later; SIGHUP is forwarded (each worker re-reads the deployment).
4. The supervisor never serves a request and never opens a store: it loads the configuration only to
   refuse it early (exit 2) and to learn what to bind.
5. A dead worker is restarted (:mod:`.restarts`); a slot that keeps failing at start stops everything,
   exit status 1.
6. ``/metrics`` reports the whole host: the supervisor makes one fresh private directory (mode 0700) for
   prometheus-client's multiprocess mode, names it in every worker's ``PROMETHEUS_MULTIPROC_DIR`` (over any
   inherited value: another program's files must not mix in), calls ``mark_process_dead`` for each worker it
   reaps and removes the directory when it exits (:mod:`portcullis.observability.multiprocess`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from prometheus_client.multiprocess import mark_process_dead

from portcullis.serving.restarts import RestartPolicy, SlotHistory, restart_policy

log = logging.getLogger("portcullis.supervisor")
WORKER_INDEX_ENV = "PORTCULLIS_WORKER_INDEX"
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client reads it when a worker imports it
_TICK_S = 0.05


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What every worker is told (JSON on its command line); file descriptors are inherited."""

    config: str
    host: str
    port: int
    log_level: str
    listen_fd: int
    admin_fd: int | None

    def argv(self, ready_fd: int) -> list[str]:
        body = {"config": self.config, "host": self.host, "port": self.port, "log_level": self.log_level,
                "listen_fd": self.listen_fd, "admin_fd": self.admin_fd, "ready_fd": ready_fd}
        return [sys.executable, "-m", "portcullis.serving.worker", json.dumps(body)]


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``, inheritable by the workers (OSError if it cannot bind)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


@dataclass(slots=True)
class _Slot:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    ready_fd: int | None = None
    spawned_at: float = 0.0
    started: bool = False
    history: SlotHistory = field(default_factory=SlotHistory)
    restart_at: float | None = 0.0  # spawn due at this time (0: at once); None: running or stopped


class Supervisor:
    """Runs ``workers`` worker processes until told to stop; :meth:`run` returns the exit status."""

    def __init__(self, spec: WorkerSpec, workers: int, *, policy: RestartPolicy | None = None,
                 drain_s: float = 30.0) -> None:
        self._spec, self._drain_s = spec, drain_s
        self._policy, self._policy_error = RestartPolicy(), None  # an invalid setting: run() refuses to start
        try:
            self._policy = policy or restart_policy(os.environ)
        except ValueError as exc:
            self._policy_error = str(exc)
        self._slots = [_Slot(i) for i in range(workers)]
        self._stop_signal: int | None = None
        self._hups = 0
        self.metrics_dir: str | None = None  # while running: the workers' shared metrics directory

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._hups += 1
        else:
            self._stop_signal = signum

    def run(self) -> int:
        if self._policy_error is not None:
            log.error("invalid worker restart setting", extra={"fields": {"error": self._policy_error}})
            return 2
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        try:
            self.metrics_dir = tempfile.mkdtemp(prefix="portcullis-metrics-")  # new, empty, 0700: nothing stale
        except OSError as exc:
            log.error("cannot create the workers' metrics directory (TMPDIR)",
                      extra={"fields": {"error": type(exc).__name__}})
            return 1
        try:
            return self._loop()
        finally:
            for slot in self._slots:  # also on an unexpected error here: no worker outlives its supervisor
                if slot.proc is not None and slot.proc.poll() is None:
                    slot.proc.kill()
                    slot.proc.wait()
                self._close_ready(slot)
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _loop(self) -> int:
        while self._stop_signal is None:
            now = time.monotonic()
            if self._hups:
                self._hups = 0
                self._signal_all(signal.SIGHUP, "reload")
            for slot in self._slots:
                self._read_ready(slot)
                if slot.proc is not None and slot.proc.poll() is not None:
                    if self._reap(slot, now):
                        log.error("workers keep failing at start: giving up",
                                  extra={"fields": {"worker": slot.index,
                                                    "start_failures": slot.history.start_failures}})
                        self._drain()
                        return 1
                if slot.proc is None and slot.restart_at is not None and now >= slot.restart_at:
                    self._spawn(slot, now)
            time.sleep(_TICK_S)
        log.info("draining workers", extra={"fields": {"signal": signal.Signals(self._stop_signal).name}})
        self._drain()
        return 0

    def _spawn(self, slot: _Slot, now: float) -> None:
        read_fd, write_fd = os.pipe()
        fds = [self._spec.listen_fd, write_fd] + ([] if self._spec.admin_fd is None else [self._spec.admin_fd])
        try:
            slot.proc = subprocess.Popen(self._spec.argv(write_fd), pass_fds=fds, start_new_session=True,  # noqa: S603
                                         env={**os.environ, WORKER_INDEX_ENV: str(slot.index),
                                              METRICS_DIR_ENV: str(self.metrics_dir)})
        finally:
            os.close(write_fd)
        os.set_blocking(read_fd, False)
        slot.ready_fd, slot.spawned_at, slot.started, slot.restart_at = read_fd, now, False, None
        log.info("worker started", extra={"fields": {"worker": slot.index, "pid": slot.proc.pid}})

    def _read_ready(self, slot: _Slot) -> None:
        if slot.ready_fd is None or slot.started:
            return
        with contextlib.suppress(BlockingIOError):
            if os.read(slot.ready_fd, 1):
                slot.started, slot.history = True, slot.history.started()
                log.info("worker serving", extra={"fields": {"worker": slot.index}})

    def _reap(self, slot: _Slot, now: float) -> bool:
        """Note a worker's death and schedule its restart; True when the supervisor should give up."""
        if slot.proc is None:
            return False
        code = slot.proc.returncode
        if self.metrics_dir is not None:  # its live gauges leave the sums; its counters stay in the totals
            mark_process_dead(slot.proc.pid, self.metrics_dir)  # type: ignore[no-untyped-call]
        self._read_ready(slot)  # it may have started just before it died
        slot.history = slot.history.died(started=slot.started, uptime_s=now - slot.spawned_at, policy=self._policy)
        slot.proc = None
        self._close_ready(slot)
        if slot.history.gives_up(self._policy):
            return True
        delay = self._policy.delay_s(slot.history.deaths)
        slot.restart_at = now + delay
        log.warning("worker exited; restarting", extra={"fields": {
            "worker": slot.index, "status": code, "started": slot.started, "restart_in_s": delay,
            "deaths_in_a_row": slot.history.deaths}})
        return False

    def _close_ready(self, slot: _Slot) -> None:
        if slot.ready_fd is not None:
            os.close(slot.ready_fd)
            slot.ready_fd = None

    def _signal_all(self, signum: int, why: str) -> None:
        for slot in self._slots:
            if slot.proc is not None and slot.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.send_signal(signum)
        log.info("signal forwarded to workers", extra={"fields": {"signal": signal.Signals(signum).name,
                                                                  "why": why}})

    def _drain(self) -> None:
        """SIGTERM to every worker, wait up to ``drain_s``, then SIGKILL what still runs."""
        self._signal_all(signal.SIGTERM, "drain")
        deadline = time.monotonic() + self._drain_s
        for slot in self._slots:
            if slot.proc is None:
                continue
            try:
                slot.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker did not drain in time: killed", extra={"fields": {"worker": slot.index}})
                slot.proc.kill()
                slot.proc.wait()


@dataclass(frozen=True, slots=True)
class Bound:
    """The supervisor's sockets and the spec its workers get."""

    spec: WorkerSpec
    sockets: tuple[socket.socket, ...]

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def bind_all(config: Path, *, host: str, port: int, admin_host: str, admin_port: int | None,
             log_level: str) -> Bound:
    """Bind the MCP listener and (unless off) the admin listener; OSError names neither secret nor input."""
    listen = bind(host, port)
    try:
        admin = None if admin_port is None else bind(admin_host, admin_port)
    except OSError:
        listen.close()
        raise
    spec = WorkerSpec(str(config), host, listen.getsockname()[1], log_level, listen.fileno(),
                      None if admin is None else admin.fileno())
    return Bound(spec, (listen,) if admin is None else (listen, admin))
