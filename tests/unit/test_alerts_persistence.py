"""Baselines and first-seen sets survive a restart through a real SQLite file: a restored monitor alerts on a
spike and on a new identity at once, knows the identities it had seen, resumes a learning period where it
stopped, starts fresh (logged, file set aside) on a file it cannot read, and stays bounded by max_keys."""

from __future__ import annotations

import logging
import math
import sqlite3
from pathlib import Path

import pytest

from portcullis.monitoring.config import AlertsConfig
from portcullis.monitoring.detectors import Alert, Detector, Observation, Settings
from portcullis.monitoring.monitor import Monitor
from portcullis.monitoring.snapshot import KeyState, Snapshot, restore, take
from portcullis.monitoring.state import (
    FILE_NAME,
    MemoryMonitorStateStore,
    MonitorStateUnavailable,
    SqliteMonitorStateStore,
)

T0 = 1_800_000_000.0  # 08:00 UTC
WINDOW = 60.0
SETTINGS = Settings(window_s=WINDOW, min_history=30, learn_s=600, cooldown_s=900)
TOOL_KEY = (("tool", "billing.refund"), ("hour", "8"))


def obs(at: float, *, agent: str = "bot", risk: str = "low") -> Observation:
    return Observation(at, "billing.refund", risk, (("agent", agent),), "t1", 100, 1000, False, False, None)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def monitor_on(path: Path, clock: Clock, settings: Settings = SETTINGS) -> Monitor:
    return Monitor(settings, clock=clock, store=SqliteMonitorStateStore(path))


def steady(monitor: Monitor, clock: Clock, minutes: int, per_minute: int = 100) -> list[Alert]:
    """``per_minute`` calls of ``bot`` in each minute from ``clock.now``; each window closed and saved."""
    alerts: list[Alert] = []
    for _ in range(minutes):
        for i in range(per_minute):
            alerts += monitor.detector.observe(obs(clock.now + i * WINDOW / per_minute))
        clock.now += WINDOW
        alerts += monitor.detector.tick(clock.now)
        monitor.persist()
    return alerts


def test_a_restored_monitor_alerts_on_a_spike_and_a_new_identity_at_once_and_knows_the_old_ones(
        tmp_path: Path) -> None:
    """40 steady minutes and a known identity, a restart, then a spike and a new identity: both alert at once;
    the known identity does not. The same traffic on a fresh file alerts on neither (history, learning)."""
    path, clock = tmp_path / FILE_NAME, Clock(T0)
    first = monitor_on(path, clock)
    assert first.restore() is False  # nothing saved yet: a fresh start, learn_s applies
    first.detector.observe(obs(T0 + 1, agent="old-bot", risk="high"))  # learned silently
    assert steady(first, clock, 40) == []
    assert path.exists()

    def after_restart(monitor: Monitor) -> list[Alert]:
        alerts = monitor.detector.observe(obs(clock.now + 1, agent="old-bot", risk="high"))
        alerts += monitor.detector.observe(obs(clock.now + 2, agent="new-bot", risk="high"))
        for i in range(900):
            alerts += monitor.detector.observe(obs(clock.now + 3 + i * 0.025))
        return alerts + monitor.detector.tick(clock.now + WINDOW)

    clock.now += 30  # a restart within the window
    second = monitor_on(path, clock)
    assert second.restore() is True
    assert second.detector.learn_until == clock.now  # the snapshot was taken after learn_s: no relearning
    alerts = after_restart(second)
    assert {(a.rule, a.key) for a in alerts} == {
        ("new_identity_high_risk", (("tool", "billing.refund"), ("agent", "new-bot"))),
        ("call_rate_spike", TOOL_KEY), ("call_rate_spike", (("agent", "bot"),))}
    spike = next(a for a in alerts if a.key == TOOL_KEY)
    assert spike.observed == 902 and spike.baseline == pytest.approx(100, abs=1)

    fresh = monitor_on(tmp_path / "other.sqlite3", Clock(clock.now))
    assert fresh.restore() is False
    assert after_restart(fresh) == []  # the control: without the snapshot, blind


def test_the_learning_period_resumes_where_it_stopped(tmp_path: Path) -> None:
    """A snapshot five minutes into a ten-minute learning period leaves five minutes after the restart."""
    path, clock = tmp_path / FILE_NAME, Clock(T0)
    first = monitor_on(path, clock)
    steady(first, clock, 5, per_minute=2)
    clock.now += 3600  # down for an hour: learning does not run while down
    second = monitor_on(path, clock)
    assert second.restore() is True
    assert second.detector.learn_until == pytest.approx(clock.now + 300)
    assert second.detector.observe(obs(clock.now, agent="new-bot", risk="high")) == []  # still learning


def test_a_stale_snapshot_is_not_folded_in_as_silence(tmp_path: Path) -> None:
    """Within max_gap_windows the downtime counts as zero-call windows; a day later it is not folded at all."""
    folded: dict[str, int] = {}
    for name, downtime in (("short", 5 * WINDOW), ("stale", 86400.0)):
        path, clock = tmp_path / f"{name}.sqlite3", Clock(T0)
        steady(monitor_on(path, clock), clock, 35)
        clock.now += downtime
        again = monitor_on(path, clock)
        assert again.restore() is True
        again.detector.observe(obs(clock.now))
        window = dict(again.detector.window_tables()["caller"].items())[(("agent", "bot"),)]
        folded[name] = window.baselines["call_rate_spike"].n
    # + the window open at the snapshot (one of the five down) + the four after it; stale: no gap folded
    assert folded == {"short": 35 + 1 + 4, "stale": 35 + 1}


def test_baselines_of_another_window_length_are_dropped_and_first_seen_sets_kept() -> None:
    """A count per minute is no count per five minutes: only the first-seen sets carry over."""
    detector = Detector(Settings(learn_s=0), started=T0)
    for i in range(20):
        detector.observe(obs(T0 + i * 60, agent="old-bot", risk="high"))
        detector.tick(T0 + (i + 1) * 60)
    snapshot = take(detector, T0 + 1200)
    other = Detector(Settings(window_s=300, learn_s=0), started=T0 + 1300)
    restore(other, snapshot, T0 + 1300)
    assert len(other.window_tables()["caller"]) == 0 and len(other.seen_tables()["identity"]) == 1
    assert other.observe(obs(T0 + 1301, agent="old-bot", risk="high")) == []


@pytest.mark.parametrize("damage", ["not a database", "garbage rows", "hostile values"])
def test_an_unreadable_snapshot_is_logged_set_aside_and_the_monitor_starts_fresh(
        tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    """Fail safe for monitoring: the error is logged, the file moved to ….corrupt, learning starts over, and
    the next window's snapshot is saved and restored as usual."""
    path, clock = tmp_path / FILE_NAME, Clock(T0)
    steady(monitor_on(path, clock), clock, 3)
    if damage == "not a database":
        path.write_bytes(b"\x00not a database" * 500)
        for suffix in ("-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    else:
        with sqlite3.connect(path) as conn:
            key = '[["agent", "' + "x" * 5000 + '"]]' if damage == "hostile values" else "{{"
            conn.execute("INSERT INTO monitor_keys (tbl, key, last, baselines) VALUES ('caller', ?, 5, "
                         "'[[\"call_rate_spike\", NaN, 0, 3]]')", (key,))
    monitor = monitor_on(path, clock)
    with caplog.at_level(logging.ERROR, logger="portcullis.alerts"):
        assert monitor.restore() is False
    assert "alert monitor state not restored: starting fresh" in caplog.text
    assert Path(str(path) + ".corrupt").exists()
    assert monitor.detector.learn_until == pytest.approx(T0 + 600)  # a fresh start: learn_s from the start
    assert len(monitor.detector.window_tables()["caller"]) == 0
    steady(monitor, clock, 1)
    again = monitor_on(path, clock)
    assert again.restore() is True and len(again.detector.window_tables()["caller"]) == 1


def test_a_store_that_fails_is_logged_and_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    """Saving and loading through a failing store: logged, the monitor goes on (a lock timeout is not a
    corrupt file: nothing is set aside)."""
    store = MemoryMonitorStateStore()
    monitor = Monitor(SETTINGS, clock=Clock(T0), store=store)
    store.fail = MonitorStateUnavailable(detail="OperationalError")
    with caplog.at_level(logging.ERROR, logger="portcullis.alerts"):
        assert monitor.restore() is False
        monitor.detector.observe(obs(T0))
        monitor.detector.tick(T0 + WINDOW)
        assert monitor.persist() is False
    assert "alert monitor state not saved" in caplog.text and store.fail is not None  # not reset
    store.fail = None
    assert monitor.persist() is True and store.saves == 1
    assert monitor.persist() is False  # no window closed since


def test_a_snapshot_is_bounded_by_max_keys(tmp_path: Path) -> None:
    """5,000 made-up agents past a cap of 100: at most 100 rows per table in the file; a restore with a lower
    cap keeps the most recently used keys and evicts nothing."""
    settings = Settings(window_s=WINDOW, learn_s=0, max_keys=100)
    path, clock = tmp_path / FILE_NAME, Clock(T0)
    monitor = monitor_on(path, clock, settings)
    for i in range(5000):
        monitor.detector.observe(obs(T0 + i * 0.01, agent=f"bot-{i}", risk="high"))
    monitor.detector.tick(T0 + WINDOW)
    assert monitor.persist() is True
    with sqlite3.connect(path) as conn:
        rows = dict(conn.execute("SELECT tbl, count(*) FROM monitor_keys GROUP BY tbl").fetchall())
        seen = dict(conn.execute("SELECT tbl, count(*) FROM monitor_seen GROUP BY tbl").fetchall())
    assert rows == {"tool": 1, "caller": 100} and seen == {"identity": 100}
    smaller = monitor_on(path, clock, Settings(window_s=WINDOW, learn_s=0, max_keys=10))
    assert smaller.restore() is True
    callers = [key for key, _ in smaller.detector.window_tables()["caller"].items()]
    assert callers == [(("agent", f"bot-{i}"),) for i in range(4990, 5000)] and smaller.detector.evicted == 0


def test_restore_checks_everything_before_changing_anything() -> None:
    """A snapshot with one bad entry after good ones leaves the detector untouched."""
    detector = Detector(SETTINGS, started=T0)
    good = KeyState("caller", (("agent", "a"),), 10, (("call_rate_spike", 1.0, 0.0, 3),))
    for bad in (KeyState("nope", (("agent", "b"),), 10, ()),
                KeyState("caller", (("agent", "b"),), 10, (("call_rate_spike", math.inf, 0.0, 3),)),
                KeyState("caller", (("agent", "b"),), 10, (("call_rate_spike", 1.0, -1.0, 3),))):
        with pytest.raises(ValueError):
            restore(detector, Snapshot(T0, WINDOW, 0.0, (good, bad), ()), T0)
    with pytest.raises(ValueError):
        restore(detector, Snapshot(T0, WINDOW, 0.0, (good,), (("identity", ("t", "agent")),)), T0)
    assert detector.tracked() == 0 and detector.learn_until == T0 + 600


def test_persist_is_on_by_default_and_can_be_turned_off() -> None:
    """alerts.persist: true wires the store; false leaves the monitor in memory only."""
    store = MemoryMonitorStateStore()
    on = Monitor.from_config(AlertsConfig(), clock=Clock(T0), audit=None, counted=None, notify=None, store=store)
    off = Monitor.from_config(AlertsConfig(persist=False), clock=Clock(T0), audit=None, counted=None, notify=None,
                              store=store)
    for monitor in (on, off):
        monitor.detector.observe(obs(T0))
        monitor.detector.tick(T0 + 60)
    assert on.persist() is True and off.persist() is False and store.saves == 1


async def test_the_background_task_restores_first_and_saves_at_window_closes_and_at_a_stop(tmp_path: Path) -> None:
    """Monitor.run: the snapshot is restored before the first drain, saved (in a worker thread) when a window
    closed, and once more when the task is cancelled."""
    import anyio

    path, clock = tmp_path / FILE_NAME, Clock(T0)
    steady(monitor_on(path, clock), clock, 2)
    store = SqliteMonitorStateStore(path)
    monitor = Monitor(SETTINGS, clock=clock, drain_s=0.001, store=store)
    async with anyio.create_task_group() as tg:
        tg.start_soon(monitor.run)
        with anyio.fail_after(20):
            while len(monitor.detector.window_tables()["caller"]) == 0:  # restored
                await anyio.sleep(0.005)
            clock.now += WINDOW
            bucket = int(clock.now // WINDOW)
            while monitor.detector.ticked != bucket or monitor._saved_bucket != bucket:
                await anyio.sleep(0.005)
        monitor.detector.observe(obs(clock.now, agent="late-bot"))  # after the last save
        tg.cancel_scope.cancel()
    snapshot = SqliteMonitorStateStore(path).load(100)
    assert snapshot is not None and (("agent", "late-bot"),) in {k.key for k in snapshot.keys}


def test_the_gateway_builds_and_serves_with_an_unreadable_monitor_state(tmp_path: Path) -> None:
    """Fail safe, unlike the kill switches: a corrupt monitor file never stops the gateway from starting
    (the store opens at the monitor's first use, and the monitor starts fresh)."""
    from portcullis.config.loader import load_deployment
    from portcullis.gateway import build_gateway
    from tests.e2e.harness import write_deployment

    root = write_deployment(tmp_path / "deployment", {"version": 1, "identity": {"allow_insecure_dev_issuer": True},
                                                      "services": {"s": {"transport": "stdio", "module": "x.y"}}}, [])
    state = tmp_path / "state"
    state.mkdir()
    (state / FILE_NAME).write_bytes(b"not a database" * 300)
    gateway = build_gateway(load_deployment(root), environ={"PORTCULLIS_STATE_DIR": str(state)})
    assert gateway.state_dir == state.resolve() or gateway.state_dir == state
