"""An alert rule's containment through the real kill-switch runtime (in-memory store)."""

from __future__ import annotations

import logging
import time

import pytest

from portcullis.kill.containment import ACTOR, KillSwitchContainment
from portcullis.kill.runtime import KillSwitches
from portcullis.kill.store import MemoryKillSwitchStore
from portcullis.monitoring.containment import Action, carry_out


async def test_applied_sets_the_switch_proposed_does_not(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryKillSwitchStore()
    containment = KillSwitchContainment(KillSwitches(store))
    reason = "alert call_rate_spike: observed 900 over threshold 120.5"
    assert carry_out(Action("call_rate_spike", "agent", "billing-bot", "proposed", reason), containment)
    await containment.drained()
    assert store.active(time.time()) == ()
    assert "containment proposed" in caplog.text
    assert carry_out(Action("call_rate_spike", "agent", "billing-bot", "applied", reason), containment)
    await containment.drained()
    (switch,) = store.active(time.time())
    assert (switch.kind, switch.target, switch.actor, switch.reason) == ("agent", "billing-bot", ACTOR, reason)


@pytest.mark.parametrize("target", ["", "a\u202eb", "x" * 10_000, "line\nbreak"])
async def test_a_target_the_switch_rules_refuse_is_logged_not_raised(
        target: str, caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryKillSwitchStore()
    containment = KillSwitchContainment(KillSwitches(store))
    with caplog.at_level(logging.ERROR, logger="portcullis.alerts"):
        assert carry_out(Action("new_egress_destination", "agent", target, "applied", "r"), containment)
        await containment.drained()
    assert store.active(time.time()) == ()
    assert "could not set the kill switch" in caplog.text
