"""What the transport needs to stream a ``tools/call``: who wants which notifications, and SSE framing.

A ``tools/call`` is answered as ``text/event-stream`` only when the caller accepts it *and* a
notification for it is relayed before the result; otherwise it gets today's one
``application/json`` body. A 2026-07-28 request opts in per request (``_meta.progressToken``,
``_meta["io.modelcontextprotocol/logLevel"]``); a 2025-era session gets progress for its token and
log messages at the level it set with ``logging/setLevel`` (every level until it sets one, as an
MCP server without a set level may send any).

``logging/setLevel`` (2025-era only: 2026-07-28 removed it, a request there gets 404 Method not
found) is the caller's own: :class:`LogLevels` keeps it per session and principal in the gateway's
state store, so every replica sharing the store sees it, for the session's lifetime, bounded. It is
never forwarded upstream, where it would be one global setting shared by every caller of the service.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from portcullis.errors import InvalidParams
from portcullis.notifications import LEVELS, level_rank
from portcullis.state.interface import StateStore
from portcullis.state.memory import InMemoryStateStore
from portcullis.state.values import MAX_TTL_S

log = logging.getLogger("portcullis.transport")

LOG_LEVEL_META = "io.modelcontextprotocol/logLevel"
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store"),
               (b"x-accel-buffering", b"no")]
DEFAULT_LEGACY_LEVEL = LEVELS[0]
LEVEL_OFF = "off"  # the stored level could not be read: relay no log message (fail safe)


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
    """Per-caller ``logging/setLevel`` in the gateway's :class:`~portcullis.state.interface.StateStore`.

    Keyed by session and principal (:meth:`key`), so every replica sharing the store relays the same log
    messages to a caller; the level expires with the session (the TTL is the session's remaining lifetime).
    Bounded by the store (a full store refuses the set: ``-32603``, the level stays as it was). A store that
    cannot be read fails safe: :meth:`get` answers :data:`LEVEL_OFF` and no log message of that call is
    relayed (fewer messages, never another caller's or more than asked); progress still is.
    """

    def __init__(self, store: StateStore | None = None, clock: Callable[[], float] = time.time) -> None:
        self._store: StateStore = store if store is not None else InMemoryStateStore(max_keys=10_000)
        self._clock = clock

    @staticmethod
    def key(session: str | None, principal_key: str) -> str:
        return "loglevel/" + hashlib.sha256(f"{session or ''}\x1f{principal_key}".encode()).hexdigest()

    async def set(self, key: str, params: Any, *, expires_at: float) -> dict[str, Any]:
        level = params.get("level") if isinstance(params, dict) else None
        if not isinstance(level, str) or level_rank(level) is None:
            raise InvalidParams("Invalid params: 'level' must be one of " + ", ".join(LEVELS))
        now = self._clock()
        await self._store.value_set(key, level, ttl_s=min(max(expires_at - now, 1.0), MAX_TTL_S), now=now)
        return {}

    async def get(self, key: str) -> str | None:
        """The level the caller set, None if it set none, :data:`LEVEL_OFF` if the store cannot tell."""
        try:
            level = await self._store.value_get(key, now=self._clock())
        except Exception as exc:  # fail safe: relay no log message rather than guess a level
            log.warning("log level unreadable: no log messages relayed for this call",
                        extra={"fields": {"error": type(exc).__name__}})
            return LEVEL_OFF
        return level if level is None or level_rank(level) is not None else LEVEL_OFF


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
        level = None if stored == LEVEL_OFF else stored or DEFAULT_LEGACY_LEVEL
    return token, level
