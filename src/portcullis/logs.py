"""Structured JSON logging that never blocks the event loop.

Records are appended to an in-memory deque by the request path and written by a background
thread that wakes every 10 ms and writes whatever accumulated in one go. There is no per-record
wake-up: a queue-based listener woke its thread for every line, and that futex and GIL hand-over
showed as ~14 % of the gateway's busy time per call (py-spy, c=1 benchmark). Each line is one
JSON object: time, level, logger, event, and the record's ``fields`` (passed as
``extra={"fields": {...}}``). Exception tracebacks go to the operator log only, never to a client.

The queue is bounded (``max_queued_records``, 10,000 by default). When the sink blocks (a full
pipe, a stalled terminal, a hung log shipper) and the queue fills, *new* records are dropped and
counted: the records already queued, which lead up to the stall, are kept in order; nothing the
request path does ever waits on the sink or grows memory past the bound. The writer then writes
one ``"log records dropped"`` line with the count where the gap is, and :func:`dropped` (exported
as ``portcullis_log_records_dropped_total``) counts every drop since the process started.
"""

from __future__ import annotations

import atexit
import collections
import datetime as dt
import logging
import sys
import threading
from typing import Any, TextIO

import orjson

_listener: _BatchWriter | None = None
DEFAULT_MAX_QUEUED_RECORDS = 10_000


class _Drops:
    """Records dropped since the process started (every handler adds to the same count)."""

    total = 0


def dropped() -> int:
    """Log records dropped because the queue was full, since the process started."""
    return _Drops.total


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
        text = orjson.dumps(line, default=str).decode()
        # U+2028 / U+2029 are valid in JSON strings but end lines for many readers (str.splitlines, JS)
        return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") if "\u2028" in text or (
            "\u2029" in text) else text


class _DequeHandler(logging.Handler):
    """Hands records to the writer thread as they are (no copy, no formatting on the event loop);
    tracebacks are rendered to text first, while the exception is still alive."""

    def __init__(self, items: collections.deque[logging.LogRecord], max_queued: int) -> None:
        super().__init__()
        self._items, self._max_queued = items, max_queued

    def emit(self, record: logging.LogRecord) -> None:
        if len(self._items) >= self._max_queued:  # the sink is behind: drop the newest, count it
            _Drops.total += 1
            return
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        self._items.append(record)  # deque.append is atomic; the writer thread pops from the left

    def handle(self, record: logging.LogRecord) -> bool:  # no handler lock: emit is one atomic append
        if self.filter(record):
            self.emit(record)
            return True
        return False


class _BatchWriter:
    """The writer thread: every ``interval_s`` it formats and writes what accumulated, in one write."""

    def __init__(self, items: collections.deque[logging.LogRecord], handler: logging.Handler,
                 interval_s: float = 0.01) -> None:
        self._items, self._handler, self._interval_s = items, handler, interval_s
        self._reported = _Drops.total  # drops already written as a gap line
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="portcullis-log-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        if not self._thread.is_alive():  # a thread stuck in a blocked write: do not hang exit on it too
            self.drain()  # whatever came in after the thread's last pass

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            self.drain()
        self.drain()

    def drain(self) -> None:
        items, handler = self._items, self._handler
        drops = _Drops.total - self._reported
        if not items and not drops:
            return
        lines: list[str] = []
        before_gap = len(items)  # queued before the drops were seen: they precede the gap
        while items:
            if drops and before_gap == 0:
                lines.append(self._gap_line(drops))
                drops = 0
            before_gap -= 1
            try:
                record = items.popleft()
            except IndexError:
                break
            try:
                lines.append(handler.format(record))
            except Exception:  # a record that cannot be formatted must not stop the writer
                lines.append(orjson.dumps({"level": "error", "logger": "portcullis.logs",
                                           "event": "log record could not be formatted"}).decode())
        if drops:
            lines.append(self._gap_line(drops))
        stream = handler.stream  # type: ignore[attr-defined]
        try:
            stream.write("\n".join(lines) + "\n")
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: the lines are lost, the gateway is not
            pass


    def _gap_line(self, count: int) -> str:
        self._reported += count
        return orjson.dumps({"ts": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"), "level": "error",
                             "logger": "portcullis.logs", "event": "log records dropped: the log sink is too slow",
                             "dropped": count}).decode()


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at emit time (it may be replaced, e.g. under test capture)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure(level: str = "INFO", stream: TextIO | None = None, *,
              max_queued_records: int = DEFAULT_MAX_QUEUED_RECORDS) -> None:
    """Route every ``portcullis.*`` logger through one bounded queue to ``stream`` (stderr by default)."""
    if max_queued_records < 1:
        raise ValueError("max_queued_records must be at least 1")
    global _listener
    if _listener is not None:
        _listener.stop()
    handler: logging.StreamHandler = (  # type: ignore[type-arg]
        logging.StreamHandler(stream) if stream is not None else _CurrentStderr())
    handler.setFormatter(JsonFormatter())
    items: collections.deque[logging.LogRecord] = collections.deque()
    root = logging.getLogger("portcullis")
    root.handlers[:] = [_DequeHandler(items, max_queued_records)]
    root.setLevel(level)
    root.propagate = False
    _listener = _BatchWriter(items, handler)
    _listener.start()
    atexit.register(_stop)


def _stop() -> None:
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None
