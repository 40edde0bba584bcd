"""Where console sessions and started logins live: an interface, in memory, and in Redis.

Records are small JSON objects under keys the caller derives from a secret with :func:`key_of`
(a SHA-256, so the store never holds a session id or a login's ``state`` in the clear). Every record
has a TTL. :meth:`ConsoleStore.take` reads and deletes in one step (a started login is used once).
A store that cannot answer raises :class:`ConsoleStoreUnavailable`: the console fails closed (the
login page with an error, never a session assumed).

With ``storage.redis`` configured the records live in Redis under ``<key_prefix>console:`` so any
replica serves any console session; otherwise in this process (a restart logs everyone out).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from portcullis.errors import PortcullisError

MAX_RECORDS = 20_000  # in memory: past it, expired records go first, then the oldest anonymous ones (pre-login
# records and started logins, which anyone can make by opening the login page), and only a store full of
# sessions refuses: a flood of login-page visits can never lock people out or end a session


class ConsoleStoreUnavailable(PortcullisError):
    """The session store did not answer (or is full): nobody is logged in until it does."""

    message = "console session store unavailable"


def key_of(kind: str, *secrets: str) -> str:
    """The store key for a record of ``kind`` named by ``secrets`` (hashed; never stored in the clear)."""
    digest = hashlib.sha256("\x00".join(secrets).encode()).hexdigest()
    return f"{kind}:{digest}"


class ConsoleStore(Protocol):
    async def put(self, key: str, record: dict[str, Any], ttl_s: float) -> None: ...

    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def take(self, key: str) -> dict[str, Any] | None: ...

    async def delete(self, key: str) -> None: ...


class MemoryConsoleStore:
    """In this process; bounded (:data:`MAX_RECORDS`). ``clock``: monotonic seconds."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_records: int = MAX_RECORDS) -> None:
        self._records: dict[str, tuple[float, str]] = {}
        self._clock, self._max = clock, max_records

    async def put(self, key: str, record: dict[str, Any], ttl_s: float) -> None:
        now = self._clock()
        if key not in self._records and len(self._records) >= self._max:
            for old in [k for k, (until, _) in self._records.items() if until <= now]:
                del self._records[old]
            if len(self._records) >= self._max:  # oldest first (insertion order); a session is never evicted
                anonymous = (k for k in self._records if not k.startswith("session:"))
                for old in [k for k, _ in zip(anonymous, range(len(self._records) - self._max + 1), strict=False)]:
                    del self._records[old]
            if len(self._records) >= self._max:
                raise ConsoleStoreUnavailable(detail="in-memory console store is full")
        self._records[key] = (now + ttl_s, json.dumps(record))

    async def get(self, key: str) -> dict[str, Any] | None:
        entry = self._records.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            self._records.pop(key, None)
            return None
        loaded: dict[str, Any] = json.loads(entry[1])
        return loaded

    async def take(self, key: str) -> dict[str, Any] | None:
        record = await self.get(key)
        self._records.pop(key, None)
        return record

    async def delete(self, key: str) -> None:
        self._records.pop(key, None)


class RedisConsoleStore:
    """In Redis under ``<key_prefix>console:``, each record a string with a server-side TTL."""

    def __init__(self, client: aioredis.Redis, *, key_prefix: str, op_timeout_s: float) -> None:
        self._client, self._prefix, self._timeout = client, f"{key_prefix}console:", op_timeout_s

    @classmethod
    def from_url(cls, url: str, *, key_prefix: str, connect_timeout_s: float, op_timeout_s: float,
                 max_connections: int = 16) -> RedisConsoleStore:
        """A store on its own small pool (connects lazily; an unreachable server fails each operation)."""
        try:
            pool = aioredis.BlockingConnectionPool.from_url(
                url, max_connections=max_connections, timeout=op_timeout_s + connect_timeout_s,
                socket_timeout=op_timeout_s, socket_connect_timeout=connect_timeout_s,
                retry=Retry(NoBackoff(), 0), health_check_interval=0)
        except (ValueError, RedisError) as exc:
            raise ConsoleStoreUnavailable(detail=f"redis url not usable: {type(exc).__name__}") from None
        return cls(aioredis.Redis(connection_pool=pool), key_prefix=key_prefix,
                   op_timeout_s=op_timeout_s + connect_timeout_s)

    async def _run(self, op: str, call: Any) -> Any:
        try:
            return await asyncio.wait_for(call, self._timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            raise ConsoleStoreUnavailable(detail=f"console store {op} failed: {type(exc).__name__}") from None

    async def put(self, key: str, record: dict[str, Any], ttl_s: float) -> None:
        await self._run("put", self._client.set(self._prefix + key, json.dumps(record),
                                                px=max(1, int(ttl_s * 1000))))

    async def get(self, key: str) -> dict[str, Any] | None:
        return _loaded(await self._run("get", self._client.get(self._prefix + key)))

    async def take(self, key: str) -> dict[str, Any] | None:
        return _loaded(await self._run("take", self._client.getdel(self._prefix + key)))

    async def delete(self, key: str) -> None:
        await self._run("delete", self._client.delete(self._prefix + key))

    async def aclose(self) -> None:
        await self._client.aclose()


def _loaded(raw: bytes | str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        raise ConsoleStoreUnavailable(detail="console store holds a malformed record") from None
    if not isinstance(value, dict):
        raise ConsoleStoreUnavailable(detail="console store holds a malformed record")
    return value
