"""What the transport needs to stream a ``tools/call``: who wants which notifications, and SSE framing.

A ``tools/call`` is answered as ``text/event-stream`` only when the caller accepts it *and* a
notification for it is relayed before the result; otherwise it gets today's one
``application/json`` body. A 2026-07-28 request opts in per request (``_meta.progressToken``,
``_meta["io.modelcontextprotocol/logLevel"]``); a 2025-era session gets progress for its token and
log messages at the level it set with ``logging/setLevel`` (every level until it sets one, as an
MCP server without a set level may send any).

``logging/setLevel`` (2025-era only: 2026-07-28 removed it, a request there gets 404 Method not
found) is the caller's own: :class:`LogLevels` keeps it per session and principal, in memory on
this replica, bounded (the oldest entry goes first). It is never forwarded upstream, where it would
be one global setting shared by every caller of the service.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import orjson

from portcullis.errors import InvalidParams
from portcullis.notifications import LEVELS, level_rank

LOG_LEVEL_META = "io.modelcontextprotocol/logLevel"
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store"),
               (b"x-accel-buffering", b"no")]
DEFAULT_LEGACY_LEVEL = LEVELS[0]


def accepts_sse(accept: str | None) -> bool:
    """Whether an ``Accept`` header names ``text/event-stream`` (a media range with q=0 does not)."""
    if not accept or "text/event-stream" not in accept.lower():
        return False
    for item in accept.lower().split(","):
        kind, _, rest = item.partition(";")
        if kind.strip() == "text/event-stream":
            return not any(p.strip().replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in rest.split(";"))
    return False


def sse_event(message: Any) -> bytes:
    """One SSE ``message`` event carrying a JSON-RPC message (JSON never holds a raw newline)."""
    return b"event: message\ndata: " + orjson.dumps(message) + b"\n\n"


def sse_raw(encoded: bytes) -> bytes:
    return b"event: message\ndata: " + encoded + b"\n\n"


class LogLevels:
    """Per-caller ``logging/setLevel``: session (or principal) key -> least severe level relayed."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._levels: OrderedDict[str, str] = OrderedDict()
        self._max = max_entries

    @staticmethod
    def key(session: str | None, principal_key: str) -> str:
        return hashlib.sha256(f"{session or ''}\x1f{principal_key}".encode()).hexdigest()

    def set(self, key: str, params: Any) -> dict[str, Any]:
        level = params.get("level") if isinstance(params, dict) else None
        if not isinstance(level, str) or level_rank(level) is None:
            raise InvalidParams("Invalid params: 'level' must be one of " + ", ".join(LEVELS))
        self._levels[key] = level
        self._levels.move_to_end(key)
        while len(self._levels) > self._max:
            self._levels.popitem(last=False)
        return {}

    def get(self, key: str) -> str | None:
        return self._levels.get(key)


def wanted(params: Any, *, modern: bool, stored: str | None) -> tuple[Any, str | None]:
    """(progress token, least severe log level) the caller asked for on this call; (None, None): nothing."""
    meta = params.get("_meta") if isinstance(params, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    token = meta.get("progressToken")
    if not isinstance(token, (str, int)) or isinstance(token, bool) or (isinstance(token, str) and len(token) > 256):
        token = None
    level: str | None
    if modern:
        asked = meta.get(LOG_LEVEL_META)
        level = asked if level_rank(asked) is not None else stored
    else:
        level = stored or DEFAULT_LEGACY_LEVEL
    return token, level
