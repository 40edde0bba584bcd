"""The bounded retry queue between the audit pipeline and the SIEM exporters.

Contract:

* ``offer(record_json)`` is synchronous and O(1) in the number of records: it appends to each
  exporter's own buffer and returns. It never awaits, never blocks and never raises. A buffer
  that already holds ``max_pending`` records (queued plus in flight) refuses the record, and
  that exporter's ``dropped`` counter goes up; ``offer`` then returns False.
* Each exporter has its own buffer and its own worker task, so a dead webhook does not hold up
  syslog. The worker sends up to ``max_batch`` records at a time, in offer order.
* A batch that fails (:class:`ExportFailed`, or no answer within ``send_timeout_s``) is sent
  again after a capped exponential backoff with jitter: ``retry_initial_s * 2**(n-1)`` capped
  at ``retry_max_s``, times a random factor in [0.5, 1). After ``max_attempts`` attempts, or at
  once if the failure is ``permanent``, the batch is given up and counted as dropped.
* Records an exporter refuses individually (``send`` returns a count) are counted as dropped.
* Shutdown (leaving ``async with``) stops accepting records, lets every worker drain its buffer
  for up to ``flush_timeout_s`` (even if the surrounding scope is being cancelled), then counts
  whatever is left as dropped and closes the exporters.
* :meth:`ExportQueue.stats` is a snapshot of the per-exporter counters, for the metrics module.
* ``sleep`` and ``jitter`` are injected, so tests need no real waiting.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import anyio
from anyio.abc import TaskGroup

from portcullis.audit.siem.interface import Exporter, ExportFailed, Record

log = logging.getLogger("portcullis.audit.siem")


@dataclass(frozen=True, slots=True)
class ExporterStats:
    """One exporter's counters at one moment. ``sent`` and ``dropped`` count records."""

    sent: int
    dropped: int
    failed_attempts: int  # sends that failed, retried or not
    depth: int  # records queued or in flight


@dataclass(slots=True)
class _Lane:
    exporter: Exporter
    pending: deque[Record] = field(default_factory=deque)  # the head batch is the one in flight
    sent: int = 0
    dropped: int = 0
    failed_attempts: int = 0
    overflowing: bool = False  # logs once per overflow episode, not once per dropped record
    wake: anyio.Event | None = None
    done: anyio.Event | None = None


def _jitter() -> float:
    return random.random()  # noqa: S311 - spreads retries out; not a security decision


class ExportQueue:
    """Fans audit records out to exporters without ever blocking the caller. Use as ``async with``."""

    def __init__(self, exporters: Sequence[Exporter], *, max_pending: int = 10_000, max_batch: int = 256,
                 max_attempts: int = 8, retry_initial_s: float = 0.5, retry_max_s: float = 30.0,
                 send_timeout_s: float = 30.0, flush_timeout_s: float = 5.0,
                 sleep: Callable[[float], Awaitable[Any]] = anyio.sleep,
                 jitter: Callable[[], float] = _jitter) -> None:
        if not exporters:
            raise ValueError("an export queue needs at least one exporter")
        names = [e.name for e in exporters]
        if len(set(names)) != len(names):
            raise ValueError("exporter names must be unique")
        if max_pending < 1 or max_batch < 1 or max_attempts < 1:
            raise ValueError("max_pending, max_batch and max_attempts must be >= 1")
        if retry_initial_s < 0 or retry_max_s < retry_initial_s or send_timeout_s <= 0 or flush_timeout_s < 0:
            raise ValueError("need 0 <= retry_initial_s <= retry_max_s, send_timeout_s > 0, flush_timeout_s >= 0")
        self._lanes = {e.name: _Lane(e) for e in exporters}
        self._max_pending, self._max_batch, self._max_attempts = max_pending, max_batch, max_attempts
        self._retry_initial_s, self._retry_max_s = retry_initial_s, retry_max_s
        self._send_timeout_s, self._flush_timeout_s = send_timeout_s, flush_timeout_s
        self._sleep, self._jitter = sleep, jitter
        self._closing = False
        self._task_group: TaskGroup | None = None

    # ------------------------------------------------------------------ the request path

    def offer(self, record_json: Record) -> bool:
        """Queue one record for every exporter; False if any exporter's buffer refused it."""
        accepted = True
        for lane in self._lanes.values():
            if self._closing or len(lane.pending) >= self._max_pending:
                lane.dropped += 1
                accepted = False
                if not lane.overflowing and not self._closing:
                    lane.overflowing = True
                    log.warning("audit export buffer full; dropping records",
                                extra={"fields": {"exporter": lane.exporter.name, "max_pending": self._max_pending}})
                continue
            lane.pending.append(record_json)
            if lane.wake is not None:
                lane.wake.set()
        return accepted

    def stats(self) -> dict[str, ExporterStats]:
        """Counters per exporter name."""
        return {name: ExporterStats(lane.sent, lane.dropped, lane.failed_attempts, len(lane.pending))
                for name, lane in self._lanes.items()}

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> ExportQueue:
        if self._task_group is not None or self._closing:
            raise RuntimeError("an export queue runs once")
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        for lane in self._lanes.values():
            lane.done = anyio.Event()
            self._task_group.start_soon(self._run, lane, name=f"audit-export-{lane.exporter.name}")
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        self._closing = True
        task_group, self._task_group = self._task_group, None
        if task_group is None:  # pragma: no cover - __aexit__ without __aenter__
            return None
        lanes = list(self._lanes.values())
        for lane in lanes:
            if lane.wake is not None:
                lane.wake.set()
        # Shielded: a gateway shut down by cancellation still gets its bounded flush.
        with anyio.move_on_after(self._flush_timeout_s, shield=True):
            for lane in lanes:
                if lane.done is not None:
                    await lane.done.wait()
            # Workers cancelled from outside (the gateway's scope) left their records: drain them here.
            if any(lane.pending for lane in lanes):
                async with anyio.create_task_group() as flush:
                    for lane in lanes:
                        if lane.pending:
                            flush.start_soon(self._run, lane)
        task_group.cancel_scope.cancel()
        result = await task_group.__aexit__(*exc_info)
        with anyio.CancelScope(shield=True):
            for lane in lanes:
                left = len(lane.pending)
                if left:
                    lane.dropped += left
                    lane.pending.clear()
                    log.warning("audit export flush timed out; records dropped",
                                extra={"fields": {"exporter": lane.exporter.name, "records": left}})
                await _close(lane.exporter)
        return result

    # ------------------------------------------------------------------ the workers

    async def _run(self, lane: _Lane) -> None:
        try:
            while True:
                if not lane.pending:
                    if self._closing:
                        return
                    lane.wake = anyio.Event()  # no await between the check and this: no lost wake-up
                    await lane.wake.wait()
                    continue
                # The batch stays at the head of ``pending`` until it is settled, so a worker cancelled
                # mid-send leaves it for the shutdown flush (at-least-once) and stats() counts it in depth.
                take = min(len(lane.pending), self._max_batch)
                await self._deliver(lane, list(islice(lane.pending, take)))
                for _ in range(take):
                    lane.pending.popleft()
                if lane.overflowing and len(lane.pending) < self._max_pending:
                    lane.overflowing = False
        finally:
            if lane.done is not None:
                lane.done.set()

    async def _deliver(self, lane: _Lane, batch: list[Record]) -> None:
        """Send one batch until it is delivered, permanently refused, or out of attempts."""
        name = lane.exporter.name
        for attempt in range(1, self._max_attempts + 1):
            try:
                with anyio.fail_after(self._send_timeout_s):
                    refused = await lane.exporter.send(batch)
            except ExportFailed as exc:
                lane.failed_attempts += 1
                permanent, why = exc.permanent, exc.detail or exc.message
            except TimeoutError:
                lane.failed_attempts += 1
                permanent, why = False, f"no answer within {self._send_timeout_s}s"
            except Exception as exc:  # an exporter that broke its contract must not kill its lane
                lane.failed_attempts += 1
                permanent, why = False, f"exporter raised {type(exc).__name__} (a bug: expected ExportFailed)"
                log.error("audit exporter raised a foreign exception", exc_info=True,
                          extra={"fields": {"exporter": name}})
            else:
                refused = min(max(int(refused or 0), 0), len(batch))
                lane.sent += len(batch) - refused
                lane.dropped += refused
                return
            if permanent or attempt == self._max_attempts:
                lane.dropped += len(batch)
                log.warning("audit export gave up a batch", extra={"fields": {
                    "exporter": name, "records": len(batch), "attempts": attempt, "permanent": permanent,
                    "error": why}})
                return
            await self._sleep(self.backoff_s(attempt))

    def backoff_s(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1-based)."""
        capped: float = min(self._retry_max_s, self._retry_initial_s * float(2 ** min(attempt - 1, 62)))
        return capped * (0.5 + 0.5 * min(max(self._jitter(), 0.0), 1.0))


async def _close(exporter: Exporter) -> None:
    try:
        await exporter.aclose()
    except Exception:  # aclose must not raise; one that does must not stop the others closing
        log.error("audit exporter failed to close", exc_info=True, extra={"fields": {"exporter": exporter.name}})


def total(stats: Mapping[str, ExporterStats]) -> ExporterStats:
    """The sum over every exporter (depth included)."""
    values = list(stats.values())
    return ExporterStats(sum(s.sent for s in values), sum(s.dropped for s in values),
                         sum(s.failed_attempts for s in values), sum(s.depth for s in values))
