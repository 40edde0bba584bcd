"""The anomaly rules on synthetic traffic with a deterministic clock: they fire on a spike and on a
first-seen identity or destination, and stay quiet on steady traffic, a slow ramp and a small burst."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from portcullis.monitoring.baseline import Baseline, BoundedTable, count_noise
from portcullis.monitoring.detectors import Alert, Detector, Observation, Settings, destination_host

T0 = 1_800_000_000.0  # 08:00 UTC: the hour-of-day key is "8"
WINDOW = 60.0
SETTINGS = Settings(window_s=WINDOW, min_history=30, learn_s=600, cooldown_s=900)


def obs(at: float, *, tool: str = "billing.refund", risk: str = "low", agent: str = "bot", tenant: str | None = "t1",
        args: int = 100, out: int = 1000, error: bool = False, denied: bool = False,
        destination: str | None = None) -> Observation:
    return Observation(at, tool, risk, (("agent", agent),), tenant, args, out, error, denied, destination)


def run(per_minute: list[int], detector: Detector | None = None, start: float = T0,
        **kwargs: object) -> tuple[Detector, list[Alert]]:
    """``per_minute[i]`` calls spread evenly over minute ``i``; the windows closed at the end."""
    detector = detector or Detector(SETTINGS, started=start)
    alerts: list[Alert] = []
    for minute, count in enumerate(per_minute):
        base = start + minute * WINDOW
        for i in range(count):
            alerts += detector.observe(obs(base + i * WINDOW / max(count, 1), **kwargs))  # type: ignore[arg-type]
        alerts += detector.tick(base + WINDOW)
    return detector, alerts


def ramp(start: int, stop: int, minutes: int) -> list[int]:
    return [round(start + (stop - start) * m / minutes) for m in range(minutes)]


def noisy(level: int, minutes: int) -> Iterator[int]:
    for m in range(minutes):  # deterministic ±20 %
        yield level + round(0.2 * level * math.sin(m * 1.7))


SHAPES = [
    ("steady", [100] * 59, []),
    ("steady with noise", list(noisy(100, 59)), []),
    ("slow ramp, 20 to 200 a minute over the hour", ramp(20, 200, 59), []),
    ("single burst below the floor", [5] * 40 + [50] + [5] * 10, []),
    ("tiny traffic, one call a minute", [1] * 59, []),
    ("real spike", [100] * 40 + [900] + [100] * 5, ["call_rate_spike"]),
    ("spike too early (no history yet)", [100] * 10 + [900], []),
]


@pytest.mark.parametrize(("name", "traffic", "expected"), SHAPES, ids=[s[0] for s in SHAPES])
def test_call_rate_shapes(name: str, traffic: list[int], expected: list[str]) -> None:
    _, alerts = run(traffic)
    # the tool key and the caller key each see the same shape
    assert sorted({a.rule for a in alerts}) == expected, name
    if expected:
        tool_alert = next(a for a in alerts if a.subject("tool"))
        assert tool_alert.observed == 900 and tool_alert.baseline == pytest.approx(100, abs=1)
        assert tool_alert.threshold is not None and 100 < tool_alert.threshold < 900
        assert tool_alert.key == (("tool", "billing.refund"), ("hour", "8"))
        assert tool_alert.window_s == WINDOW and tool_alert.window_start == T0 + 40 * WINDOW


@pytest.mark.parametrize(("kwargs", "rule"), [
    ({"args": 200_000}, "argument_size_spike"),
    ({"out": 5_000_000}, "output_size_spike"),
    ({"error": True}, "error_rate_spike"),
    ({"denied": True}, "denial_rate_spike"),
])
def test_size_and_ratio_spikes(kwargs: dict[str, object], rule: str) -> None:
    detector, quiet = run([20] * 40)
    assert quiet == []
    _, alerts = run([20], detector, start=T0 + 40 * WINDOW, **kwargs)
    assert {a.rule for a in alerts} == {rule}
    assert {a.key[0][0] for a in alerts} == {"tool", "agent"}  # per tool per hour and per caller


def test_a_ratio_in_a_window_of_few_calls_is_not_judged() -> None:
    detector, _ = run([20] * 40)
    _, alerts = run([3], detector, start=T0 + 40 * WINDOW, error=True)  # 3/3 failed, but under min_calls
    assert alerts == []


def test_a_size_below_its_floor_does_not_alert_however_far_off_its_baseline() -> None:
    detector, _ = run([20] * 40, args=10)
    _, alerts = run([20], detector, start=T0 + 40 * WINDOW, args=5000)  # 500x the mean, under 64 KiB
    assert alerts == []


def test_cross_tenant_spread() -> None:
    detector = Detector(SETTINGS, started=T0)
    alerts: list[Alert] = []
    for minute in range(45):
        at = T0 + minute * WINDOW
        tenants = [f"t{i}" for i in range(12)] if minute == 40 else ["t1"]
        for i, tenant in enumerate(tenants * 2):
            alerts += detector.observe(obs(at + i, tenant=tenant))
        alerts += detector.tick(at + WINDOW)
    [alert] = [a for a in alerts if a.rule == "cross_tenant_spike"]
    assert alert.key == (("agent", "bot"),) and alert.observed == 12 and alert.baseline == pytest.approx(1)


def test_new_identity_on_a_high_risk_tool() -> None:
    detector = Detector(SETTINGS, started=T0)
    during_learning = detector.observe(obs(T0 + 5, risk="high", agent="old-bot"))
    assert during_learning == []
    later = T0 + 700
    assert detector.observe(obs(later, risk="high", agent="old-bot")) == []  # learned
    assert detector.observe(obs(later, risk="low", agent="new-bot")) == []  # not a high-risk tool
    [alert] = detector.observe(obs(later + 1, risk="high", agent="new-bot"))
    assert (alert.rule, alert.key, alert.observed) == (
        "new_identity_high_risk", (("tool", "billing.refund"), ("agent", "new-bot")), "new-bot")
    assert alert.baseline is None and alert.threshold is None
    assert detector.observe(obs(later + 2, risk="high", agent="new-bot")) == []  # seen now


def test_user_and_agent_are_each_identities() -> None:
    detector = Detector(SETTINGS, started=T0 - 1000)
    o = Observation(T0, "t", "high", (("agent", "a"), ("user", "u")), None, 1, 1, False, False, None)
    assert {a.key[1] for a in detector.observe(o)} == {("agent", "a"), ("user", "u")}


@pytest.mark.parametrize(("raw", "host"), [
    ("https://api.example.com/v1?q=1", "api.example.com"),
    ("HTTPS://User:pw@API.Example.COM:8443/x", "api.example.com"),
    ("mallory@evil.example", "evil.example"),
    ("evil.example.", "evil.example"),
    ("http://[::1]:80/", "::1"),
    ("http://[broken/", "-"),
    ("x" * 5000, "x" * 256),
    ("", "-"),
])
def test_destination_host(raw: str, host: str) -> None:
    assert destination_host(raw) == host


def test_new_egress_destination() -> None:
    detector = Detector(SETTINGS, started=T0)
    assert detector.observe(obs(T0, destination="https://hooks.example.com/a")) == []  # learning
    assert detector.observe(obs(T0 + 700, destination="https://hooks.example.com/other-path")) == []
    [alert] = detector.observe(obs(T0 + 701, destination="https://paste.evil.example/x"))
    assert alert.rule == "new_egress_destination"
    assert alert.key == (("tool", "billing.refund"), ("destination", "paste.evil.example"))


def test_cooldown_and_per_window_cap() -> None:
    detector = Detector(Settings(learn_s=0, cooldown_s=900, max_alerts_per_window=3), started=T0)
    raised = [a for i in range(10) for a in detector.observe(obs(T0 + i, risk="high", agent=f"bot-{i}"))]
    assert len(raised) == 3 and detector.suppressed == 7
    again = detector.observe(obs(T0 + 120, risk="high", agent="bot-0"))
    assert again == []  # seen (no second first-seen)


def test_baseline_ewma_and_noise_floor() -> None:
    base = Baseline()
    for _ in range(50):
        base.fold(100.0, 0.1)
    assert base.mean == 100.0 and base.var == 0.0
    assert base.threshold(4, count_noise(base.mean)) == 140.0  # sd floored at sqrt(100)
    base.fold(200.0, 0.1)
    assert base.mean == pytest.approx(110.0) and base.var == pytest.approx(0.9 * 0.1 * 100 ** 2)


def test_bounded_table_evicts_least_recently_used() -> None:
    table: BoundedTable[str, int] = BoundedTable(2)
    table.get_or_add("a", lambda: 1)
    table.get_or_add("b", lambda: 2)
    table.get_or_add("a", lambda: 0)  # touch a
    table.get_or_add("c", lambda: 3)  # evicts b
    assert "a" in table and "c" in table and "b" not in table and table.evicted == 1
    with pytest.raises(ValueError):
        BoundedTable(0)


def test_new_argument_shape() -> None:
    detector = Detector(SETTINGS, started=T0)

    def call(at: float, *names: str) -> list[Alert]:
        return detector.observe(obs(at)._replace(shape=names))

    assert call(T0, "order_id", "amount") == []  # learning
    assert call(T0 + 700, "amount", "order_id") == []  # the same shape in another order
    assert detector.observe(obs(T0 + 701)) == []  # a call that was not allowed: shape not judged
    [alert] = call(T0 + 702, "amount", "order_id", "note")
    assert (alert.rule, alert.key) == ("new_argument_shape", (("tool", "billing.refund"),
                                                              ("shape", "amount,note,order_id")))
