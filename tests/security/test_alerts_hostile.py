"""Hostile input against the anomaly monitor: floods of fresh agent ids, tool names, tenants and
destinations stay within the key cap; caller-chosen text is escaped before any sink; a full queue
drops (and counts) observations instead of growing or slowing the request path."""

from __future__ import annotations

import json
import tracemalloc
from types import SimpleNamespace
from typing import Any

import pytest

from portcullis.monitoring.detectors import MAX_TEXT, Alert, Detector, Observation, Settings
from portcullis.monitoring.monitor import Monitor, alert_fields, argument_bytes

T0 = 1_800_000_000.0
CAP = 200


def flood(detector: Detector, n: int, shape: str) -> None:
    for i in range(n):
        name = f"x{i}"
        tool, agent, tenant, dest, names = "t", "a", "t1", None, None
        if shape == "agents":
            agent = name
        elif shape == "tools":
            tool = name
        elif shape == "tenants":
            tenant = name
        elif shape == "destinations":
            dest = f"https://{name}.evil.example/"
        elif shape == "argument names":
            names = (name, "y" * 1000)
        elif shape == "huge names":
            tool, agent = name + "T" * 100_000, name + "A" * 100_000
        detector.observe(Observation(T0 + i * 0.01, tool, "high", (("agent", agent),), tenant, 10, 10, False,
                                     False, dest, names))
        if i % 1000 == 0:
            detector.tick(T0 + i * 0.01)


@pytest.mark.parametrize("shape", ["agents", "tools", "tenants", "destinations", "argument names", "huge names"])
def test_a_key_flood_is_bounded_by_the_cap(shape: str) -> None:
    detector = Detector(Settings(max_keys=CAP, learn_s=0, max_alerts_per_window=5), started=T0)
    flood(detector, 1_000, shape)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    flood(detector, 5_000, shape)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert detector.tracked() <= 5 * CAP  # five tables, each capped
    assert shape == "tenants" or detector.evicted > 0
    assert grown < 1_000_000, grown  # 5,000 more hostile keys: no growth past the cap (slack for the allocator)
    assert detector.suppressed > 0 or shape == "tenants"  # the per-window alert cap held


HOSTILE_TEXT = [
    "bot\nFAKE {\"level\":\"error\"}",
    "\u202egnp.exe",  # bidirectional override
    "zero\u200bwidth",
    "back\\slash",
    "\x1b[31mred",
]


@pytest.mark.parametrize("text", HOSTILE_TEXT)
def test_caller_chosen_text_is_escaped_in_alert_fields(text: str) -> None:
    alert = Alert("new_identity_high_risk", (("tool", "t"), ("agent", text)), text, None, None, T0, 60, T0)
    fields = alert_fields(alert, [])
    encoded = json.dumps(fields, ensure_ascii=False)
    for bad in ("\n", "\u202e", "\u200b", "\x1b"):
        assert bad not in encoded
    assert fields["key"]["agent"] == fields["observed"] != text


def test_key_parts_are_cut() -> None:
    detector = Detector(Settings(learn_s=0), started=T0)
    [alert] = [a for a in detector.observe(Observation(T0, "t", "high", (("agent", "A" * 10_000),), None, 1, 1,
                                                      False, False, None)) if a.rule == "new_identity_high_risk"]
    assert len(str(alert.observed)) == MAX_TEXT


def _ctx(agent: str = "bot") -> Any:
    principal = SimpleNamespace(agent_id=agent, user_id=None, client_id="c", tenant=None)
    return SimpleNamespace(record=SimpleNamespace(route=None, result_tenant=None), principal=principal, source=None,
                           arguments={"q": "x"})


def test_a_full_queue_drops_and_counts() -> None:
    monitor = Monitor(Settings(), clock=lambda: T0, max_pending=100)
    for _ in range(250):
        monitor.observe(_ctx(), "ok", 10)
    assert monitor.dropped == 150
    monitor.drain()
    monitor.observe(_ctx(), "ok", 10)
    assert monitor.dropped == 150


def test_a_broken_context_never_fails_the_call_nor_the_background_task() -> None:
    monitor = Monitor(Settings(), clock=lambda: T0)
    monitor.observe(object(), "ok", 10)  # no attributes at all
    assert monitor.dropped == 1
    no_principal = SimpleNamespace(record=SimpleNamespace(route=None, result_tenant=None), principal=None, source=None,
                                   arguments={})
    monitor.observe(no_principal, "ok", 10)  # queued: the principal is read by the background task
    monitor.observe(_ctx(), "ok", 10)
    assert len(monitor.drain()) == 0 and monitor.dropped == 2 and monitor.detector.tracked() == 3  # tool, caller, shape


@pytest.mark.parametrize(("arguments", "size"), [
    ({}, 0),
    ({"a": "x" * 1000}, 1001),
    ({"a": [1] * 50}, 51),
    ({"a": {"b": "c" * 999}}, 2),  # shallow: a nested value counts as its item count
    ({"a": 1.5, "b": None}, 18),
])
def test_argument_bytes_is_a_shallow_estimate(arguments: dict[str, Any], size: int) -> None:
    assert argument_bytes(arguments) == size


def test_pressure_on_the_monitor_is_logged_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    monitor = Monitor(Settings(max_keys=100), clock=lambda: T0, max_pending=100)
    for i in range(150):
        monitor.observe(_ctx(f"agent-{i}"), "ok", 10)  # 50 dropped
    with caplog.at_level("WARNING", logger="portcullis.alerts"):
        monitor.drain()
        monitor.drain()  # nothing new: no second line
    [line] = [r for r in caplog.records if r.getMessage() == "alert monitor under pressure"]
    assert line.fields["dropped"] == 50  # type: ignore[attr-defined]
