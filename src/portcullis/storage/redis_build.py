"""What the gateway's build calls to get its counters and its notice bus from the ``storage:`` section.

- :func:`build_state_store` — :class:`~portcullis.state.redis_store.RedisStateStore` when ``storage.redis``
  is set, else the embedded :class:`~portcullis.state.sqlite.SqliteStateStore` at ``sqlite_path``.
- :func:`build_notice_bus` — :class:`~portcullis.storage.bus.RedisNoticeBus` when ``storage.redis`` is set,
  else a :class:`~portcullis.storage.bus.LocalNoticeBus` (one process: nothing to carry).
- :func:`announce` — one notice from a short-lived process (the CLI after ``portcullis token revoke`` or
  ``portcullis kill set``), so running replicas refresh at once instead of at their next poll.

The URL is resolved from its ``secret://`` reference here and never logged nor put in an error: a
resolution failure is the secret module's ConfigError (it names the reference, not the value).
Wiring, for the integrator (gateway.py): build the store in place of ``SqliteStateStore.open``; build the bus,
run ``bus.run()`` in the gateway's task group, and ``connect(bus)`` the kill switches, the revocation list
and the policy reloader (and run ``reloader.follow()`` when the version store is shared).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from portcullis.config.secrets import resolve_secret
from portcullis.state.redis_store import RedisStateStore
from portcullis.state.sqlite import SqliteStateStore
from portcullis.storage.bus import LocalNoticeBus, NoticeBus, RedisNoticeBus
from portcullis.storage.config import RedisConfig, StorageConfig


def redis_url(redis: RedisConfig, *, origin: Path) -> str:
    """The ``redis://`` URL ``redis.url_ref`` points to (a secret: never log it)."""
    return resolve_secret(redis.url_ref, origin=origin)


def build_state_store(storage: StorageConfig, *, origin: Path, sqlite_path: Path, max_keys: int = 100_000,
                      on_error: Callable[[str], None] | None = None) -> SqliteStateStore | RedisStateStore:
    """The counters' store. ``on_error(op)`` counts Redis failures (``GatewayMetrics.state_store_error``).

    Raises :class:`~portcullis.state.interface.StateUnavailable` when the embedded file cannot be opened
    or the Redis URL is not usable (an unreachable Redis is not an error here: calls fail closed later)."""
    if storage.redis is None:
        return SqliteStateStore.open(sqlite_path, max_keys=max_keys)
    cfg = storage.redis
    return RedisStateStore.from_url(redis_url(cfg, origin=origin), key_prefix=cfg.key_prefix,
                                    connect_timeout_s=cfg.connect_timeout_s, op_timeout_s=cfg.op_timeout_s,
                                    max_keys=max_keys, on_error=on_error)


def build_notice_bus(storage: StorageConfig, *, origin: Path) -> NoticeBus:
    """The bus kill switches, revocations and policy versions announce changes on."""
    if storage.redis is None:
        return LocalNoticeBus()
    cfg = storage.redis
    return RedisNoticeBus(redis_url(cfg, origin=origin), key_prefix=cfg.key_prefix,
                          connect_timeout_s=cfg.connect_timeout_s, op_timeout_s=cfg.op_timeout_s)


async def announce(storage: StorageConfig, topic: str, payload: str, *, origin: Path) -> bool:
    """Publish one notice and close the connection (False when not sent or no Redis is configured)."""
    if storage.redis is None:
        return False
    bus = build_notice_bus(storage, origin=origin)
    assert isinstance(bus, RedisNoticeBus)
    try:
        return await bus.publish(topic, payload)
    finally:
        await bus.aclose()
