"""The storage section builds the Redis counters and bus; a revocation announced by a CLI reaches a replica."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from portcullis.identity.revocation import Revoked, SqliteRevocations, revoke
from portcullis.state.redis_store import RedisStateStore
from portcullis.state.sqlite import SqliteStateStore
from portcullis.storage.bus import LocalNoticeBus, RedisNoticeBus
from portcullis.storage.config import StorageConfig
from portcullis.storage.redis_build import announce, build_notice_bus, build_state_store


def storage(prefix: str) -> StorageConfig:
    return StorageConfig.model_validate({"redis": {"url_ref": "secret://env/PORTCULLIS_TEST_REDIS",
                                                   "key_prefix": prefix.rstrip(":") + ":"}})


async def test_the_storage_section_builds_redis_or_the_embedded_default(
        tmp_path: Path, redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTCULLIS_TEST_REDIS", redis_url)
    store = build_state_store(storage(redis_prefix), origin=tmp_path / "gateway.yaml",
                              sqlite_path=tmp_path / "c.sqlite3")
    assert isinstance(store, RedisStateStore)
    try:
        assert (await store.window_add("k", 1, window_s=60, limit=1, now=time.time())).accepted
    finally:
        await store.aclose()
    embedded = build_state_store(StorageConfig(), origin=tmp_path / "gateway.yaml", sqlite_path=tmp_path / "c.sqlite3")
    assert isinstance(embedded, SqliteStateStore)
    embedded.close()
    assert isinstance(build_notice_bus(StorageConfig(), origin=tmp_path), LocalNoticeBus)
    assert not await announce(StorageConfig(), "revocations", "x", origin=tmp_path)


async def test_a_revocation_announced_from_the_cli_applies_on_a_replica_at_once(
        tmp_path: Path, redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The replica polls only once a minute here, so only the notice can make it refuse the revoked agent."""
    monkeypatch.setenv("PORTCULLIS_TEST_REDIS", redis_url)
    cfg = storage(redis_prefix)
    path = tmp_path / "revocations.sqlite3"
    replica = SqliteRevocations(path, refresh_s=60, max_staleness_s=600)
    replica.load()
    bus = build_notice_bus(cfg, origin=tmp_path)
    assert isinstance(bus, RedisNoticeBus)
    replica.connect(bus)
    task = asyncio.create_task(bus.run())
    try:
        await asyncio.wait_for(bus.connected.wait(), 10)
        replica.check(jti=None, client_id=None, agent_id="billing-bot")
        revoke(path, "agent", "billing-bot", "incident")
        assert await announce(cfg, "revocations", "agent", origin=tmp_path)
        deadline = time.monotonic() + 10
        while True:
            try:
                replica.check(jti=None, client_id=None, agent_id="Billing-Bot")
            except Revoked:
                break
            assert time.monotonic() < deadline, "revocation not applied"
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await bus.aclose()
