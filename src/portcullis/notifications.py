"""Streamed notifications of one ``tools/call``: bounded, filtered, matched to their caller.

When a caller's ``tools/call`` accepts ``text/event-stream``, the transport opens a
:class:`CallStream` for it and makes it current (:data:`CURRENT`) while the call runs. The
upstream connectors read :data:`CURRENT` when they send the call and bind their callbacks to that
object, so a notification can only reach the caller whose call it was sent for: the SDK client
matches progress by the progress token it issued for that call; log messages carry no request
reference over stdio or a legacy session, so a connection attributes one only while exactly one
call is in flight on it (else it is dropped and counted, see :mod:`~portcullis.upstream.sdk_client`);
the raw relay reads them from the call's own SSE answer.

:meth:`CallStream.offer` decides, synchronously, for each notification: closed (the call ended:
``after_end``), unsupported method, malformed, no progress token from the caller, below the
caller's log level, over the size / count / total-bytes bounds, no filter policy (fail closed),
withheld by the output filter (:func:`~portcullis.content.output_filter.filter_message`), or a
secret split across this notification and the ones before it
(:func:`~portcullis.content.joined.scan_parts` over the call's recent notification texts): each is
dropped and counted. Only the allow-listed fields are rebuilt (progress: ``progress``, ``total``,
``message``, with the caller's own token; message: ``level``, ``logger``, ``data``); the upstream's
``_meta`` never passes. What passes is queued (never blocking the connector) for the transport.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import orjson

from portcullis.content.joined import scan_parts
from portcullis.content.output_filter import FilterPolicy, filter_message

PROGRESS, MESSAGE = "notifications/progress", "notifications/message"
LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
_RANK = {level: rank for rank, level in enumerate(LEVELS)}
#: outcomes of one offered notification (the metric's closed label set)
OUTCOMES = frozenset({"relayed", "after_end", "unsupported", "malformed", "no_token", "below_level", "too_large",
                      "too_many", "too_many_bytes", "no_filter", "withheld", "split_secret", "backpressure",
                      "unattributed"})
#: outcomes of a caller's JSON-RPC response to a client request pushed on its call's stream
#: (:mod:`portcullis.transport.push`; here so that the metrics need no transport import)
ANSWER_OUTCOMES = frozenset({"matched", "unknown", "foreign_session", "foreign_principal", "duplicate", "late",
                             "too_large", "malformed", "caller_error"})
_TAIL_CHARS = 512  # how much of the call's earlier notification text a new one is scanned against
_TAIL_PARTS = 16

CURRENT: ContextVar[CallStream | None] = ContextVar("portcullis_call_stream", default=None)


@dataclass(frozen=True, slots=True)
class StreamBounds:
    """Per-call bounds on relayed notifications (the same kind of bounds as a result's)."""

    max_notification_bytes: int = 16 * 1024
    max_per_call: int = 256
    max_total_bytes: int = 1024 * 1024


def level_rank(level: Any) -> int | None:
    return _RANK.get(level) if isinstance(level, str) else None


class CallStream:
    """The notifications of one call on their way to its caller (see the module docstring).

    ``deliver`` takes a ready JSON-RPC notification and must not block (a bounded queue's
    ``send_nowait``); raising ``anyio.WouldBlock`` drops it (``backpressure``). ``progress_token``:
    the caller's own token (None: progress is not relayed); ``log_level``: the least severe level
    relayed (None: log messages are not relayed). ``counted(outcome)`` is told of every decision.
    """

    def __init__(self, deliver: Callable[[dict[str, Any]], None], *, progress_token: Any = None,
                 log_level: str | None = None, bounds: StreamBounds = StreamBounds(),
                 counted: Callable[[str], None] | None = None) -> None:
        self._deliver = deliver
        self.progress_token = progress_token
        self.log_level = log_level
        self._threshold = level_rank(log_level)
        self._bounds = bounds
        self._counted = counted
        self.policy: FilterPolicy | None = None  # set by the content stage for the call's tool and caller
        self.closed = False
        self.counts: dict[str, int] = {}
        self._accepted = 0
        self._bytes = 0
        self._tail: list[str] = []

    @property
    def wants_logs(self) -> bool:
        return self._threshold is not None

    def close(self) -> None:
        """The call ended: anything offered from now on is dropped (``after_end``)."""
        self.closed = True

    def reopen(self) -> None:
        """A bridged call's next round (:mod:`portcullis.transport.mrtr_bridge`) is the same call, for the same
        caller: its notifications are relayed again, within the same per-call bounds."""
        self.closed = False

    def summary(self) -> dict[str, int]:
        """Value-free counts by outcome, for the outcome record."""
        return dict(sorted(self.counts.items()))

    def offer(self, method: str, params: Any) -> str:
        """Decide on one upstream notification; returns its outcome (one of :data:`OUTCOMES`)."""
        outcome = self._decide(method, params)
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        if self._counted is not None:
            self._counted(outcome)
        return outcome

    def drop(self, outcome: str) -> None:
        """Count a notification the connector could not attribute to this call alone."""
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        if self._counted is not None:
            self._counted(outcome)

    def _decide(self, method: str, params: Any) -> str:
        if self.closed:
            return "after_end"
        if method not in (PROGRESS, MESSAGE):
            return "unsupported"
        kept = self._kept(method, params)
        if kept is None:
            return "malformed"
        if method == PROGRESS and self.progress_token is None:
            return "no_token"
        if method == MESSAGE:
            rank = level_rank(kept["level"])
            if self._threshold is None or rank is None or rank < self._threshold:
                return "below_level"
        try:
            size = len(orjson.dumps(kept))
        except TypeError:
            return "malformed"
        if size > self._bounds.max_notification_bytes:
            return "too_large"
        if self._accepted >= self._bounds.max_per_call:
            return "too_many"
        if self._bytes + size > self._bounds.max_total_bytes:
            return "too_many_bytes"
        policy = self.policy
        if policy is None:
            return "no_filter"  # fail closed: nothing unfiltered reaches the caller
        self._accepted += 1
        self._bytes += size
        text = _text(kept)
        if text and policy.detectors is not None and self._tail:
            scanned = scan_parts([*self._tail, text], policy.budget, policy.detectors, across_only=True)
            last = len(self._tail)
            if scanned.blocked or any(f.straddles and any(s.part == last for s in f.spans)
                                      for f in scanned.findings):
                self._remember(text)
                return "split_secret"
        if text:
            self._remember(text)
        outcome = filter_message(kept, method, policy)
        if outcome.blocked:
            return "withheld"
        value = dict(outcome.value)
        if method == PROGRESS:
            value["progressToken"] = self.progress_token
        try:
            self._deliver({"jsonrpc": "2.0", "method": method, "params": value})
        except Exception:  # a full or closed queue: the caller is gone or not reading
            return "backpressure"
        return "relayed"

    def _remember(self, text: str) -> None:
        self._tail.append(text)
        while len(self._tail) > _TAIL_PARTS or (len(self._tail) > 1 and sum(map(len, self._tail)) > _TAIL_CHARS):
            self._tail.pop(0)

    @staticmethod
    def _kept(method: str, params: Any) -> dict[str, Any] | None:
        if not isinstance(params, dict):
            return None
        if method == PROGRESS:
            progress, total, message = params.get("progress"), params.get("total"), params.get("message")
            if not _number(progress) or (total is not None and not _number(total)) or \
                    (message is not None and not isinstance(message, str)):
                return None
            kept: dict[str, Any] = {"progress": progress}
            if total is not None:
                kept["total"] = total
            if message is not None:
                kept["message"] = message
            return kept
        level, logger = params.get("level"), params.get("logger")
        if level_rank(level) is None or "data" not in params or (logger is not None and not isinstance(logger, str)):
            return None
        kept = {"level": level, "data": params["data"]}
        if logger is not None:
            kept["logger"] = logger
        return kept


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text(kept: dict[str, Any]) -> str:
    """The notification's free text, for the across-notifications scan."""
    if "progress" in kept:
        return str(kept.get("message") or "")
    data = kept.get("data")
    if isinstance(data, str):
        return data
    try:
        return orjson.dumps(data).decode()
    except TypeError:
        return ""
