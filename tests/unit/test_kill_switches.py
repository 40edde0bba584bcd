"""Kill switches: the snapshot's lookups, the SQLite store (real files, two instances), the in-memory
double, the runtime's refresh, audit of pending events, degraded mode, and fail-closed start."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from portcullis.identity.principal import Principal
from portcullis.kill.model import KINDS, Snapshot
from portcullis.kill.runtime import KillSwitches, open_kill_switches
from portcullis.kill.store import (
    FILE_NAME,
    KillSwitchStoreUnavailable,
    MemoryKillSwitchStore,
    SqliteKillSwitchStore,
    UnknownSwitch,
)

BOT = Principal(client_id="web-app", auth_method="dev", issuer="dev", user_id="alice", agent_id="billing-bot",
                tenant="acme", source_app="chat-ui")
OTHER = Principal(client_id="ci", auth_method="dev", issuer="dev", user_id="bob", agent_id="other", tenant="globex")
# for each kind: the target naming BOT's call of billing.get_invoice (service billing)
TARGETS = {"tool": "billing.get_invoice", "service": "billing", "tenant": "acme", "agent": "billing-bot",
           "client": "web-app", "user": "alice", "source_app": "chat-ui"}


def test_every_kind_has_a_target_here() -> None:
    assert set(TARGETS) == set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_contains_its_call_and_nothing_else(kind: str) -> None:
    store = MemoryKillSwitchStore()
    switch = store.set(kind, TARGETS[kind], "incident 7", "cli:oncall")
    snap = Snapshot.of(store.active(time.time()), time.time())
    hit = snap.for_call("billing.get_invoice", "billing", BOT, time.time())
    assert hit is not None and (hit.switch_id, hit.kind) == (switch.id, kind)
    assert snap.for_call("analytics.summarize_revenue", "analytics", OTHER, time.time()) is None
    names = frozenset({"billing.get_invoice", "analytics.summarize_revenue"})
    shown = snap.visible(names, lambda n: n.split(".")[0], BOT, time.time())
    if kind in ("tool", "service"):
        assert shown == {"analytics.summarize_revenue"}  # the disabled tool is gone for everyone
    else:
        assert shown == frozenset()  # a blocked caller (or tenant) sees no tools
    assert snap.visible(names, lambda n: n.split(".")[0], OTHER, time.time()) == (
        {"analytics.summarize_revenue"} if kind in ("tool", "service") else names)


def test_identities_fold_case_tools_do_not() -> None:
    store = MemoryKillSwitchStore()
    store.set("agent", "BILLING-Bot", "r", "a")
    store.set("tool", "Billing.Get_Invoice", "r", "a")
    snap = Snapshot.of(store.active(time.time()), time.time())
    assert snap.for_principal(BOT, time.time()) is not None
    assert snap.for_call("billing.get_invoice", "billing", OTHER, time.time()) is None


def test_empty_snapshot_is_a_single_truth_test() -> None:
    snap = Snapshot()
    assert snap.for_call("t", "s", BOT, 0.0) is None and snap.for_read("s", BOT, 0.0) is None
    names = frozenset({"a"})
    assert snap.visible(names, lambda n: None, BOT, 0.0) is names


def test_expiry_ends_a_switch_without_a_refresh() -> None:
    now = [1000.0]
    store = MemoryKillSwitchStore(clock=lambda: now[0])
    store.set("user", "alice", "r", "a", expires_at=1010.0)
    snap = Snapshot.of(store.active(now[0]), now[0])
    assert snap.for_principal(BOT, 1005.0) is not None
    assert snap.for_principal(BOT, 1010.0) is None


@pytest.mark.parametrize("make", ["sqlite", "memory"])
def test_store_set_lift_history_and_events(tmp_path: Path, make: str) -> None:
    store: Any = SqliteKillSwitchStore(tmp_path / FILE_NAME) if make == "sqlite" else MemoryKillSwitchStore()
    first = store.set("service", "billing", "suspected exfiltration", "cli:oncall")
    second = store.set("agent", "billing-bot", "looping", "cli:oncall")
    assert first.id != second.id and first.id.startswith("ks_")
    assert {s.id for s in store.active(time.time())} == {first.id, second.id}
    lifted = store.lift(first.id, "fixed", "dev:alice")
    assert (lifted.lifted_by, lifted.lift_reason) == ("dev:alice", "fixed")
    assert [s.id for s in store.active(time.time())] == [second.id]
    with pytest.raises(UnknownSwitch):
        store.lift(first.id, "again", "dev:alice")  # already lifted
    with pytest.raises(UnknownSwitch):
        store.lift("ks_" + "0" * 24, "nope", "dev:alice")
    assert {s.id for s in store.history(10)} == {first.id, second.id}
    events = store.pending_events()
    assert [(e.event, e.switch.id) for e in events] == [("set", first.id), ("set", second.id), ("lift", first.id)]
    store.mark_audited(events[0].seq)
    assert len(store.pending_events()) == 2


async def test_a_second_store_on_the_same_file_sees_a_change_within_the_poll(tmp_path: Path) -> None:
    """Another process's change (here: a second store instance, as the CLI uses) applies within a second."""
    path = tmp_path / FILE_NAME
    audited: list[dict[str, Any]] = []

    async def audit(request_id: str, fields: Any) -> None:
        audited.append(dict(fields))

    kills = KillSwitches(SqliteKillSwitchStore(path), poll_s=0.05)
    kills.start(audit)
    other = SqliteKillSwitchStore(path)
    async with anyio.create_task_group() as tg:
        tg.start_soon(kills.run)
        switch = other.set("client", "web-app", "stolen secret", "cli:oncall")
        with anyio.fail_after(10):  # generous: the poll is 0.05 s here, 0.5 s in the gateway
            while kills.snapshot.for_principal(BOT, time.time()) is None:
                await anyio.sleep(0.01)
        other.lift(switch.id, "rotated", "cli:oncall")
        with anyio.fail_after(10):
            while kills.snapshot.for_principal(BOT, time.time()) is not None or len(audited) < 2:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert [(a["event"], a["switch_id"], a["actor"], a["reason"]) for a in audited] == [
        ("set", switch.id, "cli:oncall", "stolen secret"), ("lift", switch.id, "cli:oncall", "rotated")]
    assert other.pending_events() == ()  # marked audited: a restart does not audit them twice


async def test_a_failed_refresh_keeps_the_last_snapshot_and_reports_degraded() -> None:
    store = MemoryKillSwitchStore()
    kills = KillSwitches(store)
    kills.start()
    await kills.set("tool", "billing.get_invoice", "r", "a")
    store.fail = True
    await kills.refresh()
    assert kills.health() == "degraded"
    assert kills.snapshot.for_call("billing.get_invoice", "billing", OTHER, time.time()) is not None  # still in force
    store.fail = False
    await kills.refresh()
    assert kills.health() == "ok"


def test_start_fails_closed_when_the_store_cannot_be_read(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(KillSwitchStoreUnavailable):
        open_kill_switches(tmp_path, None)
    with pytest.raises(KillSwitchStoreUnavailable):
        open_kill_switches(tmp_path / "missing-dir", None)


def test_the_store_refuses_a_corrupt_table_on_read(tmp_path: Path) -> None:
    store = SqliteKillSwitchStore(tmp_path / FILE_NAME)
    with sqlite3.connect(tmp_path / FILE_NAME) as db:
        db.execute("DROP TABLE kill_switches")
    with pytest.raises(KillSwitchStoreUnavailable):
        store.active(time.time())


def test_per_call_cost(capsys: pytest.CaptureFixture[str]) -> None:
    """Measured, not asserted (machine speed varies): the figure in docs/kill-switches.md."""
    store = MemoryKillSwitchStore()
    for i in range(200):
        store.set("agent", f"agent-{i}", "r", "a")
        store.set("tool", f"svc.tool_{i}", "r", "a")
    full, empty = Snapshot.of(store.active(time.time()), time.time()), Snapshot()
    figures = {}
    for name, snap in (("empty", empty), ("400 switches, miss", full)):
        n = 100_000
        start = time.perf_counter_ns()
        for _ in range(n):
            snap.for_call("billing.get_invoice", "billing", BOT, 1.0)
        figures[name] = (time.perf_counter_ns() - start) / n
    with capsys.disabled():
        print(" ".join(f"[{k}: {v:.0f} ns/call]" for k, v in figures.items()), end=" ")
    assert all(v > 0 for v in figures.values())


def test_the_gateway_does_not_start_on_an_unreadable_store(tmp_path: Path) -> None:
    """Fail closed at build time: a corrupt kill-switch file is a configuration problem, nothing is served."""
    from portcullis.config.loader import load_deployment
    from portcullis.errors import ConfigError
    from portcullis.gateway import build_gateway
    from tests.e2e.harness import write_deployment

    root = write_deployment(tmp_path / "deployment", {"version": 1, "identity": {"allow_insecure_dev_issuer": True},
                                                      "services": {"s": {"transport": "stdio", "module": "x.y"}}}, [])
    state = tmp_path / "state"
    state.mkdir()
    (state / FILE_NAME).write_bytes(b"not a database" * 300)
    with pytest.raises(ConfigError) as caught:
        build_gateway(load_deployment(root), environ={"PORTCULLIS_STATE_DIR": str(state)})
    assert "kill switches" in str(caught.value.problems[0].message)
