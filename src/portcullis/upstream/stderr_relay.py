"""What a stdio child writes to stderr, relayed into the gateway's log as data, never as log lines.

A child inheriting the gateway's stderr could write lines that look like the gateway's own JSON
records, terminal escape sequences, or secrets, straight into the operator's log. So the child's
stderr is a pipe and :meth:`StderrRelay.pump` reads it:

1. Split into lines of at most ``max_line_bytes`` (a longer line is cut, marked ``truncated``,
   and the rest of it up to the next newline is skipped): memory per child is bounded.
2. Decoded as UTF-8 (invalid bytes replaced), then every control, format (bidi, zero-width),
   separator and other invisible character is shown as ``\\u{XXXX}`` — and backslashes doubled —
   so nothing in it can act on a terminal or pass for another line.
3. Secrets redacted: well-known token formats (the ones ``portcullis lint`` looks for),
   ``Bearer …`` credentials, JWTs, ``<secret-ish name>=<value>`` pairs, and the exact values of
   the child's own secret-named environment variables, and of those set from ``secret://``
   references, become ``[redacted]``.
4. Rate bounded: a token bucket (``lines_per_s``, ``burst``) on a monotonic clock; lines past it
   are read (so the child never blocks on a full pipe) but dropped and counted, and one record
   reports how many were dropped once lines are let through again.

The bounds are per service (``services.<name>.stderr``: ``max_line_bytes``, ``lines_per_s``,
``burst``); the ``DEFAULT_*`` values below are their defaults.

Each line becomes one gateway log record, ``"stdio service stderr"``, with fields ``service``
(the configured name), ``line`` (the escaped text) and ``truncated``: the JSON formatter escapes
it once more as a string field, so a child can never produce a record of its own.

A service that serves a tool whose data may not reach operator logs (``governance.sinks`` without
``logs`` for the tool's input or output class, :func:`portcullis.governance.sinks.values_in_logs`)
may echo that data to its stderr, and a line cannot be told apart by call. For such a service the
relay is made with ``withhold_key``: each record carries no text of the line, only ``chars`` (its
length), ``line_hmac`` (16 hex digits of an HMAC-SHA256 under that key, so repeated lines can be
correlated, not read), ``truncated`` and ``values: "withheld"``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import AsyncIterable, Callable, Collection, Mapping

from portcullis.config.secrets import KNOWN_FORMATS, SECRET_KEY_NAME
from portcullis.text import escape_invisible

log = logging.getLogger("portcullis.upstream.stderr")

DEFAULT_MAX_LINE_BYTES = 2048
DEFAULT_LINES_PER_S = 20.0
DEFAULT_BURST = 200
_MIN_SECRET_CHARS = 6  # shorter environment values would redact ordinary words
_GENERIC = (
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),  # a JWT
    re.compile(r"(?i)\b[\w.-]*(?:password|passwd|secret|token|api[_-]?key|private[_-]?key|credential)[\w.-]*"
               r"""\s*[=:]\s*("[^"]*"|'[^']*'|\S+)"""),
)


def escape_line(text: str) -> str:
    """``text`` with backslashes doubled and every control, format, separator or non-space
    whitespace character shown as ``\\u{XXXX}``."""
    return escape_invisible(text)


class StderrRelay:
    """Relays one child's stderr into the log (see the module docstring)."""

    def __init__(self, service: str, *, env: Mapping[str, str] | None = None, secret_keys: Collection[str] = (),
                 max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, lines_per_s: float = DEFAULT_LINES_PER_S,
                 burst: int = DEFAULT_BURST, clock: Callable[[], float] = time.monotonic,
                 logger: logging.Logger = log, withhold_key: bytes | None = None) -> None:
        if max_line_bytes < 1 or lines_per_s <= 0 or burst < 1:
            raise ValueError("stderr relay bounds must be positive")
        self.service = service
        self._secrets = sorted({v for k, v in (env or {}).items()  # secret_keys: set from secret:// references
                                if (k in secret_keys or SECRET_KEY_NAME.search(k)) and len(v) >= _MIN_SECRET_CHARS},
                               key=len, reverse=True)
        self._max, self._rate, self._burst, self._clock, self._log = max_line_bytes, lines_per_s, burst, clock, logger
        self._tokens, self._last = float(burst), clock()
        self.relayed = self.dropped = 0
        self._unreported = 0
        self._withhold_key = withhold_key

    def redact(self, text: str) -> str:
        """``text`` with every secret this relay recognises replaced by ``[redacted]``."""
        for value in self._secrets:
            text = text.replace(value, "[redacted]")
        for _kind, pattern in KNOWN_FORMATS:
            text = pattern.sub("[redacted]", text)
        for pattern in _GENERIC:
            text = pattern.sub(_keep_name, text)
        return text

    def line(self, raw: bytes, *, truncated: bool = False) -> None:
        """Relay one line (without its newline), or drop and count it past the rate."""
        now = self._clock()
        self._tokens = min(float(self._burst), self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1:
            self.dropped += 1
            self._unreported += 1
            return
        self._tokens -= 1
        if self._unreported:
            self._log.warning("stdio service stderr lines dropped", extra={"fields": {
                "service": self.service, "dropped": self._unreported, "lines_per_s": self._rate}})
            self._unreported = 0
        self.relayed += 1
        decoded = raw.decode("utf-8", "replace").rstrip("\r")
        if self._withhold_key is not None:  # the service serves data that may not reach logs
            digest = hmac.new(self._withhold_key, decoded.encode("utf-8", "surrogatepass"), hashlib.sha256)
            self._log.info("stdio service stderr", extra={"fields": {
                "service": self.service, "chars": len(decoded), "line_hmac": digest.hexdigest()[:16],
                "truncated": truncated, "values": "withheld"}})
            return
        self._log.info("stdio service stderr", extra={"fields": {
            "service": self.service, "line": escape_line(self.redact(decoded)), "truncated": truncated}})

    async def pump(self, stream: AsyncIterable[bytes]) -> None:
        """Read ``stream`` (an async byte stream) to its end, relaying line by line."""
        pending = bytearray()
        skipping = False  # inside the rest of a line already relayed cut
        async for chunk in stream:
            start = 0
            while (end := chunk.find(b"\n", start)) >= 0:
                if skipping:
                    skipping = False
                else:
                    pending += chunk[start:end]
                    self.line(bytes(pending[:self._max]), truncated=len(pending) > self._max)
                pending.clear()
                start = end + 1
            if not skipping:
                pending += chunk[start:]
                if len(pending) > self._max:
                    self.line(bytes(pending[:self._max]), truncated=True)
                    pending.clear()
                    skipping = True
        if pending and not skipping:
            self.line(bytes(pending))


def _keep_name(match: re.Match[str]) -> str:
    """A ``name=value`` match keeps its name; anything else is redacted whole."""
    if match.lastindex:
        return match.group(0)[: match.start(1) - match.start(0)] + "[redacted]"
    return "[redacted]"
