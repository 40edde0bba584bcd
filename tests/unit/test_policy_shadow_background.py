"""A shadow version with Rego of its own (policy/shadow.py): decided in a bounded background task by its own
workers, never waited for by the call; its failures, hangs and overloads never touch the enforced decision;
the setting survives a restart (policy/reloader.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import anyio
import pytest

from portcullis.policy import policy_set
from portcullis.policy.engine import PolicyEngine, tool_policies
from portcullis.policy.rego import RegoPolicy
from portcullis.policy.rego_pool import PoolSettings
from portcullis.policy.shadow import SHADOW_DROPPED, SHADOW_ERROR, SHADOW_LATE, ShadowRunner, runs_inline
from portcullis.policy.versions import PolicyVersion
from tests.security.harness import BOT, INVOICE, deployment, forwarded, in_process_gateway
from tests.unit.test_policy_reloader import Rig, demo  # noqa: F401 - the module-scoped demo copy

DENY_INVOICES = """package portcullis.shadowtest

import rego.v1

deny contains {"id": "no_invoices", "reason": "no_invoices"} if {
	input.tool.name == "billing.get_invoice"
}
"""
BURN_CPU = """package portcullis.burn

import rego.v1

deny contains {"id": "burn", "reason": "burn"} if {
	input.tool.name == "billing.get_invoice"  # not the engine's warm-up evaluation (in this process)
	count([x | some x in numbers.range(1, 100000000); x % 7 == 0]) > 0
}
"""
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _engine(rego: RegoPolicy | None) -> PolicyEngine:
    return PolicyEngine.build(tool_policies(deployment().manifests), rego, environment="production")


class Hangs:
    """A shadow engine with Rego of its own whose evaluation never ends (a stuck worker)."""

    version = "pv-hangs"
    rego = object()

    async def decide_async(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.Event().wait()


async def _records(gateway: Any, kind: str) -> list[dict[str, Any]]:
    return [dict(r.fields) for r in await gateway.records() if r.kind == kind]


async def test_a_shadow_whose_own_rego_denies_records_a_disagreement_and_the_call_succeeds(tmp_path: Path) -> None:
    """The active version allows; the shadow's Rego denies: the call is forwarded, and the call's records
    carry the shadow's deny (in the decision record if it was ready, else in the outcome record)."""
    shadow = _engine(RegoPolicy.compile({"shadowtest.rego": DENY_INVOICES}))
    async with in_process_gateway(tmp_path, shadow=("ps-deny", shadow)) as gateway:
        assert not runs_inline(shadow, gateway.engine)
        answer = await gateway.call(INVOICE, {"invoice_id": "INV-1"})
        assert answer.result is not None and len(forwarded(gateway)) == 1
        decision = (await _records(gateway, "decision"))[-1]["decision"]
        outcome = (await _records(gateway, "outcome"))[-1]
        assert decision["effect"] == "allow"
        recorded = decision["shadow_version"] if "pending" not in decision["shadow_version"] \
            else outcome["shadow_version"]
        assert "shadow_version" not in outcome or "pending" in decision["shadow_version"]  # recorded once
        assert recorded == {"version": "ps-deny", "policy_version": shadow.version, "effect": "deny",
                            "rule_ids": ["rego/no_invoices"]}


async def test_a_hanging_shadow_never_delays_the_call_and_is_recorded_late(tmp_path: Path) -> None:
    """A shadow evaluation that never ends: the call is answered, the decision record says pending and
    the outcome record says late (fixed text)."""
    async with in_process_gateway(tmp_path, shadow=("ps-hangs", cast(PolicyEngine, Hangs()))) as gateway:
        with anyio.fail_after(20):
            answer = await gateway.call(INVOICE, {"invoice_id": "INV-1"})
        assert answer.result is not None and len(forwarded(gateway)) == 1
        decision = (await _records(gateway, "decision"))[-1]["decision"]
        assert decision["effect"] == "allow"
        assert decision["shadow_version"] == {"version": "ps-hangs", "pending": True}
        assert (await _records(gateway, "outcome"))[-1]["shadow_version"] == {"version": "ps-hangs",
                                                                              "error": SHADOW_LATE}


async def test_past_the_bound_calls_are_not_shadowed_and_counted_dropped() -> None:
    """At most max_pending background evaluations: the next call is not shadowed, and says so."""
    counted: list[str] = []
    runner = ShadowRunner(counted.append, max_pending=2)
    shadow = ("ps-hangs", cast(PolicyEngine, Hangs()))
    cells = [runner.submit(shadow, "allow", INVOICE, BOT, {}, now=NOW, session=None, request_id=f"r{i}")
             for i in range(3)]
    assert runner.pending == 2 and [c.result for c in cells[:2]] == [None, None]
    assert cells[2].for_decision() == {"version": "ps-hangs", "error": SHADOW_DROPPED}
    assert counted == ["dropped"]
    await runner.aclose()
    assert runner.pending == 0


async def test_a_shadow_worker_killed_at_its_cpu_budget_is_an_error_never_a_decision() -> None:
    """The shadow's own worker burns its CPU budget and is killed: the result is an error (counted), and
    the shadow's policy error is not mistaken for a disagreement."""
    rego = RegoPolicy.compile({"burn.rego": BURN_CPU}, budget_s=0.02)
    pool = rego.workers(PoolSettings(size=1, wall_s=5.0))
    counted: list[str] = []
    runner = ShadowRunner(counted.append)
    try:
        assert await pool.wait_ready(30)
        cell = runner.submit(("ps-burn", _engine(rego)), "allow", INVOICE, BOT, {"invoice_id": "INV-1"},
                             now=NOW, session=None, request_id="r1")
        with anyio.fail_after(20):
            while cell.result is None:
                await anyio.sleep(0.01)
        assert cell.result == {"version": "ps-burn", "error": SHADOW_ERROR} and counted == ["error"]
        assert pool.lost_workers == 1
    finally:
        await runner.aclose()
        await pool.aclose()


# ---------------------------------------------------------------------------------------- across a restart


def _other_rego(rig: Rig) -> dict[str, str]:
    files = dict(rig.a)
    rego = next(name for name in files if name.endswith(".rego"))
    files[rego] += "\n# shadow\n"
    return files


async def _close(rig: Rig) -> None:
    for pool in list(rig.reloader._pools):
        await pool.aclose()


async def test_the_shadow_setting_survives_a_restart(demo: Path, tmp_path: Path) -> None:  # noqa: F811
    """Set with its own Rego, then a new gateway over the same store: the shadow is set again at start."""
    first = Rig(demo, tmp_path / "one")
    await first.reloader.start()
    files = _other_rego(first)
    vid = policy_set.content_id(files)
    first.store.put(PolicyVersion(vid, "pv-x", 1.0, "ops", "candidate", files))
    assert (await first.reloader.set_shadow(vid, "ops"))["status"] == "shadow_set"
    await _close(first)
    assert first.store.shadow() == vid and first.store.active() != vid
    second = Rig(demo, tmp_path / "two")
    second.reloader._store = second.store = first.store
    try:
        await second.reloader.start()
        shadow = second.active.shadow
        assert shadow is not None and shadow[0] == vid and shadow[1].rego is not second.active.current.rego
        assert second.reloader.status()["shadow"]["rego_workers"] == "ready"
        assert (await second.reloader.set_shadow(None, "ops"))["status"] == "shadow_cleared"
        assert first.store.shadow() is None
    finally:
        await _close(second)


@pytest.mark.parametrize("stored", ["missing", "broken"])
async def test_a_shadow_that_cannot_be_restored_is_logged_recorded_and_cleared(
        demo: Path, tmp_path: Path, stored: str, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    """The stored shadow is gone or no longer validates: the gateway starts without it and says why."""
    rig = Rig(demo, tmp_path / "state")
    vid = "ps-gone"
    if stored == "broken":
        files = dict(rig.a)
        files["tools/billing/get_invoice.yml"] += "\npolicy: [unclosed\n"
        vid = policy_set.content_id(files)
        rig.store.put(PolicyVersion(vid, "pv-broken", 1.0, "ops", "broken", files))
    rig.store.record(1.0, "shadow_set", vid, "ops", "")
    await rig.reloader.start()
    assert rig.active.shadow is None and rig.store.shadow() is None
    event = rig.store.history(1)[0]
    assert (event.action, event.author, bool(event.reason)) == ("shadow_cleared", "gateway", True)
    assert rig.records[-1]["action"] == "shadow_cleared"
    assert "shadow version not restored: cleared" in caplog.text
