"""The PostgreSQL kill-switch, policy-version, revocation and monitor-state stores: their SQLite siblings'
contracts, two "replicas" (two pools) on one schema, and failures that fail closed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anyio
import psycopg
import pytest

from portcullis.identity.pg_revocation import PostgresRevocations, revoke
from portcullis.identity.revocation import RevocationUnavailable, Revoked
from portcullis.kill.pg_store import PostgresKillSwitchStore
from portcullis.kill.runtime import KillSwitches
from portcullis.kill.store import KillSwitchStoreUnavailable, UnknownSwitch
from portcullis.monitoring.pg_state import PostgresMonitorStateStore
from portcullis.monitoring.snapshot import KeyState, Snapshot
from portcullis.monitoring.state import MonitorStateUnavailable
from portcullis.policy.pg_versions import PostgresPolicyVersionStore
from portcullis.storage.postgres import Database
from tests.cluster.pg import migrated, terminate
from tests.unit import test_policy_versions as sqlite_contract
from tests.unit.test_kill_switches import BOT


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    with migrated(pg_url) as db:
        yield db


@pytest.fixture
def other(pg_url: str, db: Database) -> Iterator[Database]:
    """A second replica's pool on the same schema."""
    with migrated(pg_url) as other:
        yield other


def test_kill_store_set_lift_history_and_events(db: Database) -> None:
    store = PostgresKillSwitchStore(db)
    first = store.set("service", "billing", "suspected exfiltration", "cli:oncall")
    second = store.set("agent", "billing-bot", "looping", "cli:oncall")
    assert first.id != second.id and first.id.startswith("ks_")
    assert {s.id for s in store.active(time.time())} == {first.id, second.id}
    lifted = store.lift(first.id, "fixed", "dev:alice")
    assert (lifted.lifted_by, lifted.lift_reason) == ("dev:alice", "fixed")
    assert [s.id for s in store.active(time.time())] == [second.id]
    with pytest.raises(UnknownSwitch):
        store.lift(first.id, "again", "dev:alice")
    with pytest.raises(UnknownSwitch):
        store.lift("ks_" + "0" * 24, "nope", "dev:alice")
    assert {s.id for s in store.history(10)} == {first.id, second.id}
    events = store.pending_events()
    assert [(e.event, e.switch.id) for e in events] == [("set", first.id), ("set", second.id), ("lift", first.id)]
    store.mark_audited(events[0].seq)
    assert store.pending_events() == ()  # claimed by this replica for CLAIM_S: no other audits them meanwhile
    with db.pool.connection() as conn:
        conn.execute("UPDATE kill_switch_events SET claimed_until = 0")  # the claim lapses (say the replica died)
    assert len(store.pending_events()) == 2  # unaudited ones are claimed again: never lost
    assert store.active(time.time() + 1e9) == (second,)  # no expiry: still active
    expiring = store.set("client", "web-app", "x", "cli:oncall", expires_at=time.time() + 60)
    assert expiring not in store.active(time.time() + 61)


async def test_a_switch_set_on_one_replica_applies_on_the_other_within_the_poll(db: Database,
                                                                                other: Database) -> None:
    audited: list[dict[str, Any]] = []

    async def audit(request_id: str, fields: Any) -> None:
        audited.append(dict(fields))

    kills = KillSwitches(PostgresKillSwitchStore(db), poll_s=0.05)
    kills.start(audit)
    elsewhere = PostgresKillSwitchStore(other)
    async with anyio.create_task_group() as tg:
        tg.start_soon(kills.run)
        switch = elsewhere.set("agent", "billing-bot", "looping", "cli:oncall")
        assert [s.id for s in elsewhere.active(time.time())] == [switch.id]
        with anyio.fail_after(10):
            while kills.snapshot.for_principal(BOT, time.time()) is None:
                await anyio.sleep(0.01)
        elsewhere.lift(switch.id, "fixed", "cli:oncall")
        with anyio.fail_after(10):
            while kills.snapshot.for_principal(BOT, time.time()) is not None or len(audited) < 2:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert [a["event"] for a in audited] == ["set", "lift"]
    assert elsewhere.pending_events() == ()  # audited once, marked for every replica


async def test_three_replicas_auditing_at_once_audit_each_event_once(db: Database, other: Database) -> None:
    audited: list[str] = []

    async def audit(request_id: str, fields: Any) -> None:
        audited.append(request_id)

    replicas = [KillSwitches(PostgresKillSwitchStore(d), poll_s=0.01) for d in (db, other, db)]
    for kills in replicas:
        kills.start(audit)
    switches = [PostgresKillSwitchStore(other).set("agent", f"bot-{i}", "r", "cli:oncall") for i in range(20)]
    async with anyio.create_task_group() as tg:
        for kills in replicas:
            tg.start_soon(kills.run)
        with anyio.fail_after(20):
            while len(audited) < len(switches):
                await anyio.sleep(0.01)
        await anyio.sleep(0.2)  # more polls: nothing audited twice
        tg.cancel_scope.cancel()
    assert sorted(audited) == sorted(set(audited)) and len(audited) == len(switches)


async def test_terminated_backends_are_the_stores_unavailable_error_and_the_next_refresh_recovers(db: Database) -> None:
    store = PostgresKillSwitchStore(db)
    store.set("agent", "billing-bot", "looping", "cli:oncall")
    kills = KillSwitches(store)
    kills.start()
    with db.pool.connection() as conn, conn.transaction():  # the store's reads fail while this is killed
        terminate(db)
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    with pytest.raises(KillSwitchStoreUnavailable):  # a dead pooled connection, or refused: either fails closed
        _terminated_mid_statement(db)
    await kills.refresh()
    assert kills.snapshot.for_principal(BOT, time.time()) is not None  # still in force
    assert kills.health() == "ok"


def _terminated_mid_statement(db: Database) -> None:
    """A store call whose statement fails on the server: the store's fixed unavailable error."""
    from portcullis.kill.pg_store import _unavailable

    db.run(lambda c: c.execute("SELECT pg_terminate_backend(pg_backend_pid())"), _unavailable)


@pytest.mark.parametrize("contract", ["test_versions_are_immutable_and_found_by_either_id",
                                      "test_history_is_newest_first_and_active_skips_refusals",
                                      "test_a_read_decisions_surface_engine_version_finds_its_set"])
def test_policy_version_store_contract(db: Database, contract: str) -> None:
    getattr(sqlite_contract, contract)(PostgresPolicyVersionStore(db))


def test_policy_versions_and_shadow_are_shared_by_replicas(db: Database, other: Database) -> None:
    one, two = PostgresPolicyVersionStore(db), PostgresPolicyVersionStore(other)
    one.record(1.0, "applied", "ps-1", "ops", "start")
    two.record(2.0, "shadow_set", "ps-2", "ops", "try")
    assert (two.active(), one.shadow()) == ("ps-1", "ps-2")
    one.record(3.0, "shadow_cleared", "", "ops", "done")
    assert two.shadow() is None


def test_a_revocation_written_on_one_replica_is_refused_on_another(db: Database, other: Database) -> None:
    here, there = PostgresRevocations(db), PostgresRevocations(other)
    here.load()
    here.check(jti="t-1", client_id="web", agent_id="bot")
    revoke(other, "agent", "Billing-Bot", "compromised")
    revoke(other, "agent", "Billing-Bot", "again")  # idempotent
    with pytest.raises(ValueError):
        revoke(other, "user", "alice")
    here.load()
    with pytest.raises(Revoked):
        here.check(jti=None, client_id=None, agent_id="billing-bot")  # folded, as deny rules compare
    there.load()
    there.check(jti="t-1", client_id="web", agent_id="other")


def test_an_unreadable_revocation_list_is_never_empty(db: Database) -> None:
    now = [0.0]
    revocations = PostgresRevocations(db, clock=lambda: now[0], max_staleness_s=5.0)
    with pytest.raises(RevocationUnavailable):
        revocations.check(jti=None, client_id=None, agent_id=None)  # never loaded
    revocations.load()
    with db.pool.connection() as conn:
        conn.execute("DROP TABLE revocations")  # the list can no longer be read
    with pytest.raises(revocations.errors):
        revocations.load()
    now[0] = 6.0
    with pytest.raises(RevocationUnavailable):
        revocations.check(jti=None, client_id=None, agent_id=None)


def _snapshot(n: int) -> Snapshot:
    keys = tuple(KeyState("caller", (("agent", f"bot-{i}"),), 10 + i, (("spike", 1.0, 0.5, 3),)) for i in range(n))
    return Snapshot(1000.0, 60.0, 5.0, (KeyState("tool", (("tool", "t"),), 9, ()), *keys),
                    tuple(("identity", ("t", f"bot-{i}")) for i in range(n)))


def test_monitor_state_round_trip_bounded_per_replica_and_reset(db: Database, other: Database) -> None:
    mine, theirs = PostgresMonitorStateStore(db, "replica-a"), PostgresMonitorStateStore(other, "replica-b")
    assert mine.load(100) is None
    mine.save(_snapshot(5))
    assert mine.load(100) == _snapshot(5)
    assert theirs.load(100) is None  # each replica's baselines describe its own traffic
    mine.save(_snapshot(3))  # replaces whole
    assert mine.load(100) == _snapshot(3)
    bounded = mine.load(2)
    assert bounded is not None and [k.key for k in bounded.keys if k.table == "caller"] == [
        (("agent", "bot-1"),), (("agent", "bot-2"),)]  # the most recent ones
    with db.pool.connection() as conn:
        conn.execute("UPDATE monitor_keys SET baselines = 'not json' WHERE replica = 'replica-a'")
    with pytest.raises(MonitorStateUnavailable) as corrupt:
        mine.load(100)
    assert corrupt.value.corrupt
    mine.reset()
    assert mine.load(100) is None
    with db.pool.connection() as conn:
        conn.execute("DROP TABLE monitor_seen")
    with pytest.raises(MonitorStateUnavailable) as failed:
        mine.save(_snapshot(1))
    assert not failed.value.corrupt
