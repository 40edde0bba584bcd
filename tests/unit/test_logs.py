"""The JSON log writer: one line per record, batched off the event loop, nothing lost at stop."""

from __future__ import annotations

import io
import json
import logging

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
