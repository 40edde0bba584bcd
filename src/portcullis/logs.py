"""Structured JSON logging that never blocks the event loop.

Records are put on an in-memory queue by the request path and written by a background thread
(:class:`logging.handlers.QueueListener`). Each line is one JSON object: time, level, logger,
event, and the record's ``fields`` (passed as ``extra={"fields": {...}}``). Exception tracebacks
go to the operator log only, never to a client.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import logging.handlers
import queue
import sys
from typing import Any, TextIO

import orjson

_listener: logging.handlers.QueueListener | None = None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update({k: v for k, v in fields.items() if v is not None})
        if record.exc_text:
            line["exception"] = record.exc_text
        # orjson escapes control characters as JSON requires, so a hostile value cannot forge a line
        return orjson.dumps(line, default=str).decode()


class _QueueHandler(logging.handlers.QueueHandler):
    """Hands records to the writer thread as they are: the stdlib copies and pre-formats each one on
    the caller's thread, which is the event loop here. Tracebacks are rendered to text first."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return record


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at emit time (it may be replaced, e.g. under test capture)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Route every ``portcullis.*`` logger through one queue to ``stream`` (stderr by default)."""
    global _listener
    if _listener is not None:
        _listener.stop()
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else _CurrentStderr()
    handler.setFormatter(JsonFormatter())
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    root = logging.getLogger("portcullis")
    root.handlers[:] = [_QueueHandler(q)]
    root.setLevel(level)
    root.propagate = False
    _listener = logging.handlers.QueueListener(q, handler)
    _listener.start()
    atexit.register(_stop)


def _stop() -> None:
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None
