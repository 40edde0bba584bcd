"""The cluster state store: the same bucketed windows as the embedded stores, shared by replicas in Redis.

:class:`RedisStateStore` implements :class:`~portcullis.state.interface.StateStore` with the semantics
of :mod:`portcullis.state.interface` and the buckets of :mod:`portcullis.state.buckets` (a bucket's
expiry is computed here by the same :func:`~portcullis.state.buckets.bucket_expiry`):

- A window is one Redis hash, ``<prefix>w:<key>``: field = a bucket's expiry (Python ``repr``), value
  = its total as a scaled integer (the amount times 10^18, decimal digits). ``window_add`` is one Lua
  script (:mod:`portcullis.state.redis_scripts`, run with EVALSHA and loaded again on NOSCRIPT), so
  check-and-add is atomic across every replica; its arithmetic is exact (limbs, never doubles).
- Values are strings ``<prefix>v:<key>`` holding ``<expires_at>|<value>``; the caller's ``now``
  decides expiry, as in every store.
- Bounds: the sorted sets ``<prefix>w#`` and ``<prefix>v#`` hold the live keys (score: their last
  expiry); a new key past ``max_keys`` first evicts expired keys, then raises
  :class:`~portcullis.state.interface.StateFull`. Every key has a Redis TTL of its last expiry plus
  60 s (computed from the caller's clock), so idle keys expire on the server.
- Failures: any driver error, a refused connection, or a command not answered within
  ``op_timeout_s`` is :class:`~portcullis.state.interface.StateUnavailable` with the fixed message
  and a detail naming only the operation and the error class (never the URL); ``on_error(op)``
  is called for each (the ``portcullis_state_store_errors_total`` metric). No retries: a timed-out
  ``window_add`` may or may not have counted, and counting it again would only make a limit stricter,
  but a retry would also double the time a caller waits for a deny.
- ``window_remove``: each entry at most once, as the interface says (the id is not remembered).
"""

from __future__ import annotations

import asyncio
import decimal
import inspect
import math
import secrets
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from portcullis.state.buckets import bucket_expiry
from portcullis.state.interface import MAX_AMOUNT_SCALE, Amount, StateFull, StateUnavailable, WindowResult
from portcullis.state.memory import check_add, check_amount, check_key, check_now
from portcullis.state.redis_scripts import VALUE_SET, WINDOW_ADD, WINDOW_REMOVE
from portcullis.state.values import check_value

_EXACT = decimal.Context(prec=60, traps=[decimal.InvalidOperation, decimal.Inexact, decimal.Overflow])
T = TypeVar("T")
MAX_CONNECTIONS = 64  # per store (per gateway process): a burst of calls queues instead of opening hundreds


def to_scaled(amount: Decimal) -> str:
    """An in-range amount as the digits of ``amount * 10**18`` (exact)."""
    return str(int(amount.scaleb(MAX_AMOUNT_SCALE, context=_EXACT)))


def from_scaled(digits: bytes | str) -> Decimal:
    """The Decimal a scaled-digits total stands for."""
    text = digits.decode() if isinstance(digits, bytes) else digits
    if not text.isdigit():
        raise StateUnavailable(detail="state store holds a malformed total")
    return Decimal(text).scaleb(-MAX_AMOUNT_SCALE, context=_EXACT).normalize(_EXACT)


class RedisStateStore:
    """A :class:`~portcullis.state.interface.StateStore` in Redis, shared by every replica (module docstring)."""

    def __init__(self, client: aioredis.Redis, *, key_prefix: str, op_timeout_s: float,
                 max_keys: int = 100_000, on_error: Callable[[str], None] | None = None) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._client = client
        self._prefix = key_prefix
        self._timeout = op_timeout_s
        self.max_keys = max_keys
        self._on_error = on_error
        self._closed = False
        self._windex, self._vindex = f"{key_prefix}w#", f"{key_prefix}v#"
        self._add = client.register_script(WINDOW_ADD)
        self._remove = client.register_script(WINDOW_REMOVE)
        self._set = client.register_script(VALUE_SET)

    @classmethod
    def from_url(cls, url: str, *, key_prefix: str, connect_timeout_s: float, op_timeout_s: float,
                 max_keys: int = 100_000, on_error: Callable[[str], None] | None = None,
                 max_connections: int = MAX_CONNECTIONS) -> RedisStateStore:
        """A store on a new pool of at most ``max_connections`` connections to ``url`` (connects lazily;
        nothing raised until first use). A call that finds every connection busy waits for one, within
        the same op timeout."""
        try:
            pool = aioredis.BlockingConnectionPool.from_url(
                url, max_connections=max_connections, timeout=op_timeout_s + connect_timeout_s,
                socket_timeout=op_timeout_s, socket_connect_timeout=connect_timeout_s,
                retry=Retry(NoBackoff(), 0), health_check_interval=0)
            client = aioredis.Redis(connection_pool=pool)
        except (ValueError, RedisError) as exc:
            raise StateUnavailable(detail=f"redis url not usable: {type(exc).__name__}") from None
        return cls(client, key_prefix=key_prefix, op_timeout_s=op_timeout_s + connect_timeout_s,
                   max_keys=max_keys, on_error=on_error)

    async def aclose(self) -> None:
        """Close the connection pool; later calls fail closed."""
        self._closed = True
        await self._client.aclose()

    def close(self) -> None:
        """Refuse later calls (fail closed), like the SQLite store's ``close``; the pool's sockets go with the
        process (:meth:`aclose` closes them from a coroutine)."""
        self._closed = True

    async def maintain(self, now: float) -> None:
        """Nothing to do: expired buckets are dropped by the scripts and idle keys by their server TTL. Here so
        the gateway's maintenance loop can call either store."""
        check_now(now)

    # ------------------------------------------------------------------------- windows

    async def window_add(self, key: str, amount: Amount, *, window_s: float, limit: Amount,
                         now: float) -> WindowResult:
        """Add ``amount`` to ``key`` if the live total plus it stays ``<= limit``; one atomic script."""
        amount_d, limit_d = check_add(key, amount, window_s, limit, now)
        expires_at = bucket_expiry(now, window_s)
        if not math.isfinite(expires_at):
            raise ValueError("now + window_s is not finite")
        reply = await self._run("window_add", self._add(
            keys=[self._wkey(key), self._windex],
            args=[repr(float(now)), repr(expires_at), to_scaled(amount_d), to_scaled(limit_d), self.max_keys]))
        code, before, after, field = _reply(reply)
        if code == -1:
            raise StateFull(detail=f"{self.max_keys} keys with live entries")
        if code == 0:
            return WindowResult(accepted=False, total_before=from_scaled(before), total_after=from_scaled(before))
        entry_id = f"{field}/{amount_d}/{secrets.token_hex(6)}"
        return WindowResult(accepted=True, total_before=from_scaled(before), total_after=from_scaled(after),
                            entry_id=entry_id)

    async def window_total(self, key: str, *, now: float) -> Decimal:
        """The sum of ``key``'s live buckets at ``now`` (one HGETALL; never creates a key)."""
        check_key(key)
        check_now(now)
        fields: dict[bytes | str, bytes | str] = await self._run("window_total", self._client.hgetall(self._wkey(key)))
        total = Decimal(0)
        for expiry, value in fields.items():
            if _float(expiry) > now:
                total = _EXACT.add(total, from_scaled(value))
        return total

    async def window_remove(self, key: str, entry_id: str) -> None:
        """Undo one add by its entry id; unknown keys and malformed ids are ignored."""
        check_key(key)
        try:
            expiry_text, amount_text, _ = entry_id.split("/")
            expiry = float(expiry_text)
            amount = check_amount(Decimal(amount_text), "amount")
        except (ValueError, decimal.DecimalException, AttributeError):
            return
        if not math.isfinite(expiry) or amount <= 0 or repr(expiry) != expiry_text:
            return
        await self._run("window_remove", self._remove(keys=[self._wkey(key), self._windex],
                                                      args=[expiry_text, to_scaled(amount)]))

    # ------------------------------------------------------------------------- values

    async def value_set(self, key: str, value: str, *, ttl_s: float, now: float) -> None:
        """Set an expiring value shared by every replica (:mod:`portcullis.state.values`)."""
        check_value(key, value, ttl_s, now)
        expires_at = float(now) + float(ttl_s)
        code = await self._run("value_set", self._set(
            keys=[self._vkey(key), self._vindex],
            args=[repr(float(now)), repr(expires_at), f"{expires_at!r}|{value}", self.max_keys]))
        if code == -1:
            raise StateFull(detail=f"state store holds {self.max_keys} live values")

    async def value_get(self, key: str, *, now: float) -> str | None:
        """The live value of ``key`` at ``now``, or None."""
        check_key(key)
        check_now(now)
        raw: bytes | str | None = await self._run("value_get", self._client.get(self._vkey(key)))
        if raw is None:
            return None
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        expiry, sep, value = text.partition("|")
        if not sep:
            raise StateUnavailable(detail="state store holds a malformed value")
        return value if _float(expiry) > now else None

    # ------------------------------------------------------------------------- for tests and tools

    async def key_count(self) -> int:
        """How many window keys the bounding index holds (the Redis ``len(store)``)."""
        count: int = await self._run("key_count", self._client.zcard(self._windex))
        return count

    async def bucket_count(self, key: str) -> int:
        """How many buckets ``key`` holds (at most 65 per window length)."""
        check_key(key)
        count: int = await self._run("bucket_count", self._client.hlen(self._wkey(key)))
        return count

    def _wkey(self, key: str) -> str:
        return f"{self._prefix}w:{key}"

    def _vkey(self, key: str) -> str:
        return f"{self._prefix}v:{key}"

    async def _run(self, op: str, call: Awaitable[T]) -> T:
        """Await one command within the op timeout; every failure becomes StateUnavailable (fixed text)."""
        if self._closed:
            if inspect.iscoroutine(call):
                call.close()
            raise StateUnavailable(detail="state store closed")
        try:
            async with asyncio.timeout(self._timeout):
                return await call
        except (RedisError, OSError, TimeoutError) as exc:
            if self._on_error is not None:
                self._on_error(op)
            raise StateUnavailable(detail=f"redis {op} failed: {type(exc).__name__}") from None


def _reply(reply: Any) -> tuple[int, str, str, str]:
    try:
        code, before, after, field = reply
        return int(code), _text(before), _text(after), _text(field)
    except (TypeError, ValueError, UnicodeDecodeError):
        raise StateUnavailable(detail="redis window_add: malformed reply") from None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _float(raw: bytes | str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise StateUnavailable(detail="state store holds a malformed expiry")
    return value
