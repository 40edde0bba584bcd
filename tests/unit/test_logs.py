"""The JSON log writer: one line per record, batched off the event loop, nothing lost at stop."""

from __future__ import annotations

import io
import json
import logging
import threading

from portcullis import logs


def test_every_record_is_one_json_line_and_stop_drains_the_rest() -> None:
    buffer = io.StringIO()
    logs.configure("INFO", stream=buffer)
    log = logging.getLogger("portcullis.test")
    try:
        for i in range(500):
            log.info("event", extra={"fields": {"i": i, "hostile": "x\n{\"level\":\"error\"}\r\u2028"}})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
        log.debug("below the level")
    finally:
        logs._stop()  # drains what the writer thread had not written yet
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 501
    parsed = [json.loads(line) for line in lines]
    assert [p["i"] for p in parsed[:500]] == list(range(500))  # in order, none lost, none split
    assert parsed[0]["hostile"] == "x\n{\"level\":\"error\"}\r\u2028"
    assert parsed[-1]["level"] == "error" and "ValueError: boom" in parsed[-1]["exception"]


class _BlockingSink(io.StringIO):
    """A stream whose writes block until released, as a full pipe or a hung log shipper would."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.entered.set()
        assert self.release.wait(timeout=30), "test never released the sink"
        return super().write(text)


def test_a_blocked_sink_bounds_the_queue_drops_the_newest_and_counts_them() -> None:
    """With the writer stuck in a write, only max_queued_records wait; the rest are dropped, counted and marked."""
    sink = _BlockingSink()
    logs.configure("INFO", stream=sink, max_queued_records=10)
    log = logging.getLogger("portcullis.test")
    before = logs.dropped()
    try:
        log.info("first")
        assert sink.entered.wait(timeout=30)  # the writer holds "first" and is blocked in the sink
        for i in range(100):
            log.info("queued", extra={"fields": {"i": i}})
        assert logs.dropped() - before == 90
        sink.release.set()
    finally:
        sink.release.set()
        logs._stop()
    lines = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert lines[0]["event"] == "first"
    assert [line["i"] for line in lines[1:11]] == list(range(10))  # the oldest kept, in order
    assert lines[11]["event"].startswith("log records dropped") and lines[11]["dropped"] == 90
    assert len(lines) == 12


def test_dropped_log_records_are_exported_as_a_metric() -> None:
    """portcullis_log_records_dropped_total is in every scrape."""
    from portcullis.observability.metrics import GatewayMetrics

    body, _ = GatewayMetrics(process_metrics=False).render()
    assert b"portcullis_log_records_dropped_total " in body
