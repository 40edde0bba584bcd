"""CLI writes to shared control state publish the admin API's notice: ``portcullis kill set|lift`` and ``token
revoke`` with ``--config`` of a cluster deployment reach a running replica at once, not at its next poll.

The "replica" is the gateway's own receiver (KillSwitches / PostgresRevocations) over the test's schema, on the
test's Redis prefix, with a private poll interval of a minute: only the notice can explain a change it applies
within the second. A notice that cannot be sent never fails or undoes the write: it is reported on stderr.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from portcullis.identity.pg_revocation import PostgresRevocations
from portcullis.identity.revocation import Revoked
from portcullis.kill.pg_store import PostgresKillSwitchStore
from portcullis.kill.runtime import KillSwitches
from portcullis.storage.bus import RedisNoticeBus
from portcullis.storage.config import StorageConfig
from portcullis.storage.postgres import Database
from portcullis.storage.redis_build import build_notice_bus
from tests.cluster.pg import migrated
from tests.e2e.harness import run_cli
from tests.unit.test_kill_switches import BOT

POLL_S = 60.0  # the replica's private backstop: far longer than any wait below


def _deployment(root: Path, redis_url: str, prefix: str) -> Path:
    """A deployment whose gateway.yaml holds only what these commands read: its storage section."""
    root.mkdir(parents=True)
    (root / "gateway.yaml").write_text(yaml.safe_dump({"storage": {
        "postgresql": {"url_ref": "secret://env/PORTCULLIS_TEST_PG_URL"},
        "redis": {"url_ref": "secret://env/PORTCULLIS_TEST_REDIS_URL", "key_prefix": prefix}}}))
    return root


@asynccontextmanager
async def _bus(redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RedisNoticeBus]:
    monkeypatch.setenv("PORTCULLIS_TEST_REDIS_URL", redis_url)
    storage = StorageConfig.model_validate({"redis": {"url_ref": "secret://env/PORTCULLIS_TEST_REDIS_URL",
                                                      "key_prefix": prefix}})
    bus = build_notice_bus(storage, origin=Path("gateway.yaml"))
    assert isinstance(bus, RedisNoticeBus)
    yield bus
    await bus.aclose()


async def _cli(*args: str, env: dict[str, str]) -> tuple[Any, float]:
    """Run the CLI; its result and the monotonic time it exited."""
    done = await asyncio.to_thread(run_cli, *args, env=env)
    return done, time.monotonic()


async def _within(condition: Callable[[], bool], since: float, seconds: float, what: str) -> None:
    while not condition():
        assert time.monotonic() - since < seconds, f"{what}: not within {seconds} s of the CLI's exit"
        await asyncio.sleep(0.01)


@pytest.fixture
def db(pg_url: str) -> Any:
    with migrated(pg_url) as db:
        yield db


async def test_kill_set_and_lift_from_the_cli_apply_on_a_replica_within_a_second(
        tmp_path: Path, db: Database, pg_url: str, redis_url: str, redis_prefix: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    root = _deployment(tmp_path / "deployment", redis_url, redis_prefix)
    env = {"PORTCULLIS_TEST_PG_URL": pg_url, "PORTCULLIS_TEST_REDIS_URL": redis_url}
    kills = KillSwitches(PostgresKillSwitchStore(db), poll_s=POLL_S)
    kills.start()
    async with _bus(redis_url, redis_prefix, monkeypatch) as bus:
        kills.connect(bus)
        tasks = [asyncio.create_task(bus.run()), asyncio.create_task(kills.run())]
        try:
            await asyncio.wait_for(bus.connected.wait(), 10)
            done, at = await _cli("kill", "set", "agent", "billing-bot", "--reason", "looping", "-c", str(root),
                                  env=env)
            assert done.returncode == 0 and done.stderr == "", done.stdout + done.stderr
            await _within(lambda: kills.snapshot.for_principal(BOT, time.time()) is not None, at, 1.0, "set")
            switch_id = done.stdout.split()[1].rstrip(":")
            done, at = await _cli("kill", "lift", switch_id, "--reason", "fixed", "-c", str(root), env=env)
            assert done.returncode == 0 and done.stderr == "", done.stdout + done.stderr
            await _within(lambda: kills.snapshot.for_principal(BOT, time.time()) is None, at, 1.0, "lift")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def test_token_revoke_from_the_cli_applies_on_a_replica_within_a_second(
        tmp_path: Path, db: Database, pg_url: str, redis_url: str, redis_prefix: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    root = _deployment(tmp_path / "deployment", redis_url, redis_prefix)
    env = {"PORTCULLIS_TEST_PG_URL": pg_url, "PORTCULLIS_TEST_REDIS_URL": redis_url}
    replica = PostgresRevocations(db, refresh_s=POLL_S, max_staleness_s=600)
    replica.load()

    def refused() -> bool:
        try:
            replica.check(jti=None, client_id=None, agent_id="rogue-bot")
        except Revoked:
            return True
        return False

    async with _bus(redis_url, redis_prefix, monkeypatch) as bus:
        replica.connect(bus)
        tasks = [asyncio.create_task(bus.run()), asyncio.create_task(replica.run())]
        try:
            await asyncio.wait_for(bus.connected.wait(), 10)
            assert not refused()
            done, at = await _cli("token", "revoke", "--agent", "rogue-bot", "--reason", "incident", "-c", str(root),
                                  env=env)
            assert done.returncode == 0 and done.stderr == "", done.stdout + done.stderr
            await _within(refused, at, 1.0, "revocation")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def test_a_notice_that_cannot_be_sent_is_reported_and_the_switch_stays_set(
        tmp_path: Path, db: Database, pg_url: str, redis_prefix: str) -> None:
    """Redis unreachable (a closed port): the command succeeds, the switch is in the store (the replicas'
    polls apply it), stderr says the notice was not sent and never shows the URL's password."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    root = _deployment(tmp_path / "deployment", "unused", redis_prefix)
    env = {"PORTCULLIS_TEST_PG_URL": pg_url, "PORTCULLIS_TEST_REDIS_URL": f"redis://:hunter2@127.0.0.1:{closed}/0"}
    done = run_cli("kill", "set", "tool", "billing.refund", "--reason", "incident", "-c", str(root), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("set ks_")
    assert "notice to running replicas was not sent" in done.stderr and "next poll" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout
    assert [s.target for s in PostgresKillSwitchStore(db).active(time.time())] == ["billing.refund"]
