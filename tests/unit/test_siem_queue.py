"""The export queue: never blocks the caller, batches in order, retries with backoff, counts every drop."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from portcullis.audit.record import GENESIS_HASH, make_record
from portcullis.audit.siem import (
    ExporterStats,
    ExportFailed,
    ExportQueue,
    FailingExporter,
    RecordingExporter,
)
from portcullis.audit.siem.queue import total


def make_records(n: int) -> list[dict[str, Any]]:
    out, prev = [], GENESIS_HASH
    for i in range(n):
        record = make_record(i, 1_800_000_000.0 + i, f"req-{i}", "decision", {"decision": {"effect": "allow"}}, prev)
        out.append(record.to_json())
        prev = record.hash
    return out


class FakeSleep:
    """Records each backoff and returns at once (or waits on ``gate`` if one is set)."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.gate: anyio.Event | None = None

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if self.gate is not None:
            await self.gate.wait()
        await anyio.lowlevel.checkpoint()


async def until(condition: Callable[[], bool]) -> None:
    """Yield to other tasks until ``condition`` holds (no wall-clock sleeping)."""
    with anyio.fail_after(5):
        while not condition():
            await anyio.sleep(0)


def no_jitter() -> float:
    return 0.0


async def test_records_offered_before_start_are_delivered_in_order_and_in_batches() -> None:
    """Offers made before the queue runs are kept, sent in offer order, at most max_batch at a time."""
    exporter = RecordingExporter()
    queue = ExportQueue([exporter], max_batch=3)
    records = make_records(7)
    assert all(queue.offer(r) for r in records)
    async with queue:
        await until(lambda: len(exporter.records) == 7)
    assert exporter.records == records
    assert [len(b) for b in exporter.batches] == [3, 3, 1]
    assert queue.stats() == {"recording": ExporterStats(sent=7, dropped=0, failed_attempts=0, depth=0)}
    assert exporter.closed


async def test_full_buffer_refuses_and_counts_without_blocking() -> None:
    """When an exporter's buffer is full, offer returns False at once and the drop is counted."""
    exporter = RecordingExporter()
    exporter.gate = anyio.Event()
    async with ExportQueue([exporter], max_pending=4, max_batch=2) as queue:
        records = make_records(10)
        queue.offer(records[0])
        await exporter.wait_entered()  # one record is now in flight, held on the gate
        results = [queue.offer(r) for r in records[1:]]  # plain calls: offer is synchronous
        assert results == [True, True, True] + [False] * 6
        assert queue.stats()["recording"] == ExporterStats(sent=0, dropped=6, failed_attempts=0, depth=4)
        exporter.gate.set()
    assert exporter.records == records[:4]
    assert queue.stats()["recording"] == ExporterStats(sent=4, dropped=6, failed_attempts=0, depth=0)


async def test_full_buffer_logs_once_per_overflow_not_per_record(caplog: pytest.LogCaptureFixture) -> None:
    """A burst of drops produces one warning, so a flood cannot flood the log too."""
    exporter = RecordingExporter()
    queue = ExportQueue([exporter], max_pending=1)
    with caplog.at_level(logging.WARNING, logger="portcullis.audit.siem"):
        for record in make_records(50):
            queue.offer(record)
    assert [r.getMessage() for r in caplog.records] == ["audit export buffer full; dropping records"]
    assert queue.stats()["recording"].dropped == 49


async def test_failing_batch_is_retried_with_capped_exponential_backoff_then_dropped() -> None:
    """A batch that keeps failing is tried max_attempts times, with doubling capped waits, then counted."""
    exporter, sleep = FailingExporter(), FakeSleep()
    async with ExportQueue([exporter], max_attempts=5, retry_initial_s=0.5, retry_max_s=1.5, sleep=sleep,
                           jitter=no_jitter) as queue:
        for record in make_records(3):
            queue.offer(record)
        await until(lambda: queue.stats()["failing"].dropped == 3)
    assert exporter.attempts == 5
    assert sleep.delays == [0.25, 0.5, 0.75, 0.75]  # 0.5, 1, 1.5 (cap), 1.5, each halved by zero jitter
    assert queue.stats()["failing"] == ExporterStats(sent=0, dropped=3, failed_attempts=5, depth=0)


def test_backoff_jitter_stays_between_half_and_the_full_delay() -> None:
    """Jitter spreads retries over [delay/2, delay), and the cap holds at any attempt number."""
    low = ExportQueue([RecordingExporter()], retry_initial_s=1, retry_max_s=30, jitter=lambda: 0.0)
    high = ExportQueue([RecordingExporter()], retry_initial_s=1, retry_max_s=30, jitter=lambda: 0.999)
    assert [low.backoff_s(n) for n in (1, 2, 3, 6, 1000)] == [0.5, 1, 2, 15, 15]
    assert high.backoff_s(1) == pytest.approx(0.9995)
    assert high.backoff_s(1000) == pytest.approx(29.985)


async def test_transient_failure_is_retried_and_then_counted_as_sent() -> None:
    """Two failed attempts then success: the batch arrives once, and both failures are counted."""
    exporter, sleep = RecordingExporter(), FakeSleep()
    exporter.fail_next = 2
    async with ExportQueue([exporter], sleep=sleep, jitter=no_jitter) as queue:
        records = make_records(4)
        for record in records:
            queue.offer(record)
        await until(lambda: len(exporter.records) == 4)
    assert exporter.records == records
    assert len(sleep.delays) == 2
    assert queue.stats()["recording"] == ExporterStats(sent=4, dropped=0, failed_attempts=2, depth=0)


async def test_permanent_failure_drops_the_batch_without_retrying() -> None:
    """A permanent ExportFailed (say HTTP 400) is not retried: the batch is dropped and counted at once."""
    exporter, sleep = FailingExporter(permanent=True), FakeSleep()
    async with ExportQueue([exporter], sleep=sleep) as queue:
        for record in make_records(2):
            queue.offer(record)
        await until(lambda: queue.stats()["failing"].dropped == 2)
    assert exporter.attempts == 1 and sleep.delays == []


async def test_a_dead_exporter_does_not_hold_up_the_others() -> None:
    """While one exporter is stuck in backoff, another still receives every record."""
    dead, live, sleep = FailingExporter("dead"), RecordingExporter("live"), FakeSleep()
    sleep.gate = anyio.Event()  # the dead exporter's backoff never ends during the test
    queue = ExportQueue([dead, live], max_pending=100, max_batch=10, sleep=sleep, flush_timeout_s=0.01)
    records = make_records(30)
    async with queue:
        for record in records:
            assert queue.offer(record)
        await until(lambda: len(live.records) == 30)
        assert queue.stats()["dead"].depth == 30
    assert live.records == records
    stats = queue.stats()
    assert stats["live"] == ExporterStats(sent=30, dropped=0, failed_attempts=0, depth=0)
    assert stats["dead"] == ExporterStats(sent=0, dropped=30, failed_attempts=1, depth=0)  # left at shutdown
    assert total(stats) == ExporterStats(sent=30, dropped=30, failed_attempts=1, depth=0)
    assert dead.closed and live.closed


async def test_shutdown_flushes_what_it_can_within_the_deadline() -> None:
    """Leaving the queue drains buffered records; what a stuck exporter still holds is counted as dropped."""
    exporter = RecordingExporter()
    exporter.gate = anyio.Event()
    queue = ExportQueue([exporter], flush_timeout_s=0.01)
    async with queue:
        for record in make_records(5):
            queue.offer(record)
    assert queue.stats()["recording"] == ExporterStats(sent=0, dropped=5, failed_attempts=0, depth=0)
    assert exporter.closed


async def test_shutdown_by_cancellation_still_flushes() -> None:
    """A cancelled gateway still gets its bounded flush: buffered records reach the exporter."""
    exporter = RecordingExporter()
    exporter.gate = anyio.Event()
    queue = ExportQueue([exporter], flush_timeout_s=5)
    with anyio.CancelScope() as scope:
        async with queue:
            for record in make_records(3):
                queue.offer(record)
            await exporter.wait_entered()
            scope.cancel()
            exporter.gate.set()
            await anyio.sleep(0)  # the cancellation lands here
    assert len(exporter.records) == 3
    assert queue.stats()["recording"].sent == 3


async def test_offers_after_shutdown_are_refused_and_counted() -> None:
    """A record offered once the queue has stopped is refused and counted, not silently kept."""
    queue = ExportQueue([RecordingExporter()])
    async with queue:
        pass
    assert queue.offer(make_records(1)[0]) is False
    assert queue.stats()["recording"].dropped == 1
    with pytest.raises(RuntimeError):
        async with queue:
            pass


async def test_an_attempt_with_no_answer_times_out_and_counts_as_failed() -> None:
    """A send that hangs past send_timeout_s is a failed attempt; after max_attempts the batch is dropped."""
    exporter, sleep = RecordingExporter(), FakeSleep()
    exporter.gate = anyio.Event()  # never set: every attempt hangs
    async with ExportQueue([exporter], send_timeout_s=0.005, max_attempts=2, sleep=sleep) as queue:
        queue.offer(make_records(1)[0])
        await until(lambda: queue.stats()["recording"].dropped == 1)
    assert queue.stats()["recording"].failed_attempts == 2


class RaisingExporter:
    """Breaks the contract: raises a foreign exception once, then works."""

    name = "raising"

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.raised = False

    async def send(self, batch: Sequence[dict[str, Any]]) -> int:
        if not self.raised:
            self.raised = True
            raise RuntimeError("bug")
        self.batches.append(list(batch))
        return 0

    async def aclose(self) -> None:
        raise RuntimeError("close bug")


async def test_a_foreign_exception_is_retried_and_does_not_kill_the_lane(caplog: pytest.LogCaptureFixture) -> None:
    """An exporter bug (not ExportFailed) is logged and retried; a failing aclose does not break shutdown."""
    exporter = RaisingExporter()
    with caplog.at_level(logging.ERROR, logger="portcullis.audit.siem"):
        async with ExportQueue([exporter], sleep=FakeSleep()) as queue:
            queue.offer(make_records(1)[0])
            await until(lambda: bool(exporter.batches))
    assert queue.stats()["raising"] == ExporterStats(sent=1, dropped=0, failed_attempts=1, depth=0)
    assert {r.getMessage() for r in caplog.records} == {"audit exporter raised a foreign exception",
                                                        "audit exporter failed to close"}


class RefusingExporter:
    """Delivers a batch but refuses one record of it (as UDP syslog does with an oversized message)."""

    name = "refusing"

    async def send(self, batch: Sequence[dict[str, Any]]) -> int:
        return 1

    async def aclose(self) -> None:
        return None


async def test_records_an_exporter_refuses_are_counted_as_dropped() -> None:
    """The count ``send`` returns moves records from sent to dropped."""
    async with ExportQueue([RefusingExporter()]) as queue:
        for record in make_records(3):
            queue.offer(record)
    assert queue.stats()["refusing"] == ExporterStats(sent=2, dropped=1, failed_attempts=0, depth=0)


@pytest.mark.parametrize(("exporters", "kwargs"), [
    ([], {}),
    ([RecordingExporter("a"), RecordingExporter("a")], {}),
    ([RecordingExporter()], {"max_pending": 0}),
    ([RecordingExporter()], {"max_attempts": 0}),
    ([RecordingExporter()], {"retry_initial_s": 5, "retry_max_s": 1}),
])
def test_bad_queue_settings_are_refused(exporters: list[RecordingExporter], kwargs: dict[str, Any]) -> None:
    """No exporters, duplicate names and nonsensical limits are errors, not silent no-ops."""
    with pytest.raises(ValueError):
        ExportQueue(exporters, **kwargs)


def test_export_failed_keeps_detail_and_permanence() -> None:
    """ExportFailed carries operator detail and whether a retry can help; its message is fixed."""
    exc = ExportFailed("webhook answered HTTP 400", permanent=True)
    assert exc.permanent and exc.detail == "webhook answered HTTP 400" and str(exc) == "audit export failed"
