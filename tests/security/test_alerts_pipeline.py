"""The monitor wired the way the gateway wires it: observed by the real record stage of the real
pipeline (in-process gateway, upstream test double), alerts to the real audit chain (which still
verifies), the metrics counter, the notifier's signed webhook (a real loopback receiver), and the
containment seam (a recording double): proposed by default, applied only where configured."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portcullis.approvals.notify import LinkSigner, WebhookNotifier
from portcullis.audit import verify_store
from portcullis.audit.siem.webhook import SIGNATURE_HEADER, verify_signature
from portcullis.identity.principal import Principal
from portcullis.monitoring.config import AlertsConfig
from portcullis.monitoring.containment import ContainmentRule, actions
from portcullis.monitoring.detectors import Alert, Settings
from portcullis.monitoring.monitor import Monitor
from portcullis.observability.metrics import GatewayMetrics
from portcullis.pipeline.auditing import CallAuditor
from portcullis.pipeline.hooks import NullHooks
from tests.security.harness import BOT, INVOICE, NOW, REFUND, STRANGER, in_process_gateway, refund
from tests.unit.test_siem_webhook import receiver

KEY = b"n" * 32


class RecordingContainment:
    """The containment test double: keeps what it was asked to do."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, str]] = []

    def propose(self, kind: str, target: str, reason: str) -> None:
        self.calls.append(("proposed", kind, target, reason))

    def apply(self, kind: str, target: str, reason: str) -> None:
        self.calls.append(("applied", kind, target, reason))


class BrokenContainment:
    def propose(self, kind: str, target: str, reason: str) -> None:
        raise RuntimeError("store down")

    apply = propose


async def test_the_record_stage_feeds_every_call_and_a_new_identity_on_a_high_risk_tool_alerts(
        tmp_path: Path) -> None:
    containment = RecordingContainment()
    metrics = GatewayMetrics(process_metrics=False)
    sent: list[dict[str, Any]] = []
    cfg = AlertsConfig.model_validate({"learn_s": 0, "containment": [
        {"rule": "new_identity_high_risk", "kind": "agent"},  # proposed: the default
        {"rule": "new_identity_high_risk", "kind": "tool", "mode": "applied"}]})
    monitor: Monitor | None = None

    def observe(ctx: Any, outcome: str, output_bytes: int) -> None:
        assert monitor is not None
        monitor.observe(ctx, outcome, output_bytes)

    async with in_process_gateway(tmp_path, observe=observe) as gw:
        auditor = CallAuditor(_writer_of(gw), audit_key=b"k" * 32, environment="production", hooks=NullHooks())
        monitor = Monitor.from_config(cfg, clock=gw.clock, audit=auditor.alert, counted=metrics.alert,
                                      notify=lambda payload: sent.append(payload) or True, containment=containment)
        assert (await gw.call(INVOICE, {"invoice_id": "INV-1"})).result is not None  # low risk: no alert
        assert (await gw.call(REFUND, refund(50))).result is not None  # billing-bot on a high-risk tool
        assert (await gw.call(REFUND, refund(50), principal=STRANGER)).error  # denied, still observed
        pending = monitor.pending()
        assert [(o.tool, o.risk, o.caller, o.denied) for o in pending] == [
            (INVOICE, "low", (("agent", "billing-bot"), ("user", "alice")), False),
            (REFUND, "high", (("agent", "billing-bot"), ("user", "alice")), False),
            (REFUND, "high", (("agent", "rogue-bot"),), True)]
        assert pending[1].output_bytes > 0 and pending[1].argument_bytes > 0
        drained = monitor.drain()
        # the two allowed calls' argument shapes are new; the denied call's is not judged
        assert {a.key for a in drained if a.rule == "new_argument_shape"} == {
            (("tool", INVOICE), ("shape", "invoice_id")),
            (("tool", REFUND), ("shape", "amount,currency,order_id,reason"))}
        alerts = [a for a in drained if a.rule != "new_argument_shape"]
        assert {(a.rule, a.key[1]) for a in alerts} == {
            ("new_identity_high_risk", ("agent", "billing-bot")), ("new_identity_high_risk", ("user", "alice")),
            ("new_identity_high_risk", ("agent", "rogue-bot"))}
        for alert in alerts:
            await monitor.emit(alert)
        records = await gw.records()
        report = await verify_store(gw.audit_store, Ed25519PrivateKey.generate().public_key())
    assert report.ok, report
    audited = [r.fields for r in records if r.kind == "alert"]
    assert len(audited) == 3 and {f["key"]["agent"] for f in audited if "agent" in f["key"]} == {"billing-bot",
                                                                                                "rogue-bot"}
    rogue = next(f for f in audited if f["key"].get("agent") == "rogue-bot")
    assert rogue["containment"] == [{"kind": "agent", "target": "rogue-bot", "mode": "proposed"},
                                    {"kind": "tool", "target": REFUND, "mode": "applied"}]
    assert rogue["observed"] == "rogue-bot" and rogue["baseline"] is None and rogue["window_s"] == 60
    assert ("proposed", "agent", "rogue-bot") in [c[:3] for c in containment.calls]
    assert ("applied", "tool", REFUND) in [c[:3] for c in containment.calls]
    assert not any(c[:3] == ("applied", "agent", "rogue-bot") for c in containment.calls)
    assert metrics.alerts_total.labels("new_identity_high_risk").value == 3
    assert len(sent) == 3 and sent[0]["alert"]["rule"] == "new_identity_high_risk"


def _writer_of(gw: Any) -> Any:
    """The in-process gateway's audit writer (the one its auditor uses)."""
    auditor = gw.approvals._audit.__self__
    return auditor._writer


def test_no_containment_rule_means_no_action_and_a_key_without_the_kind_is_left_alone() -> None:
    alert = Alert("call_rate_spike", (("tool", "t"), ("hour", "8")), 900.0, 100.0, 140.0, NOW, 60, NOW)
    assert actions(alert, {}) == []
    assert actions(alert, {"call_rate_spike": (ContainmentRule("call_rate_spike", "agent"),)}) == []
    [action] = actions(alert, {"call_rate_spike": (ContainmentRule("call_rate_spike", "tool"),)})
    assert (action.kind, action.target, action.mode) == ("tool", "t", "proposed")
    assert "900.0" in action.reason and "140.0" in action.reason


async def test_a_failing_containment_or_audit_never_stops_the_monitor() -> None:
    async def audit_down(request_id: str, fields: dict[str, Any]) -> None:
        raise RuntimeError("audit unavailable")

    monitor = Monitor(Settings(), clock=lambda: NOW, audit=audit_down, containment=BrokenContainment(),
                      containment_rules={"call_rate_spike": (ContainmentRule("call_rate_spike", "tool", "applied"),)})
    await monitor.emit(Alert("call_rate_spike", (("tool", "t"),), 900.0, 100.0, 140.0, NOW, 60, NOW))
    assert monitor.raised == 1


async def test_an_alert_reaches_the_notifier_webhook_signed() -> None:
    async with receiver(None) as (hook, url):
        notifier = WebhookNotifier(url, KEY, LinkSigner(b"l" * 32, "https://gw.example"), allow_insecure_http=True)
        monitor = Monitor(Settings(), clock=time.time, notify=notifier.offer_payload)
        async with anyio.create_task_group() as tg:
            tg.start_soon(notifier.run)
            await monitor.emit(Alert("new_egress_destination", (("tool", "mail.send"),
                                                                ("destination", "evil.example")),
                                     "evil.example", None, None, NOW, 60, NOW))
            with anyio.fail_after(30):
                while not hook.requests:
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    [request] = hook.requests
    assert verify_signature(KEY, request.headers[SIGNATURE_HEADER.lower()], request.body, time.time())
    body = json.loads(request.body)
    assert body["alert"]["key"] == {"tool": "mail.send", "destination": "evil.example"}
    assert "new_egress_destination" in body["text"]


@pytest.mark.parametrize("manifest", [{"egress": True}, {"egress": None}])
async def test_an_egress_tool_s_destination_argument_is_observed(tmp_path: Path, manifest: dict[str, Any]) -> None:
    monitor = Monitor(Settings(learn_s=0), clock=lambda: NOW, egress_arguments=("order_id",))
    async with in_process_gateway(tmp_path, observe=monitor.observe, manifests={"process_refund": manifest}) as gw:
        await gw.call(REFUND, refund(50, order="ORD-7"), principal=BOT)
    [observation] = monitor.pending()
    assert observation.destination == "ORD-7"
    assert any(a.rule == "new_egress_destination" and a.subject("destination") == "ord-7" for a in monitor.drain())


async def test_a_tool_that_is_not_egress_capable_has_no_destination(tmp_path: Path) -> None:
    monitor = Monitor(Settings(learn_s=0), clock=lambda: NOW, egress_arguments=("order_id",))
    async with in_process_gateway(tmp_path, observe=monitor.observe) as gw:  # harness tools: egress false
        await gw.call(REFUND, refund(50), principal=BOT)
    assert [o.destination for o in monitor.pending()] == [None]


def test_principal_without_agent_or_user_is_its_client() -> None:
    from portcullis.monitoring.monitor import caller_of

    assert caller_of(Principal(client_id="svc", auth_method="dev", issuer="dev")) == (("client", "svc"),)


def test_the_audit_cli_shows_an_alert_record_in_one_line() -> None:
    from portcullis.cli.audit_cmd import _verdict
    from portcullis.monitoring.monitor import alert_fields

    spike = alert_fields(Alert("call_rate_spike", (("tool", "t"), ("hour", "8")), 900.0, 100.0, 140.0, NOW, 60, NOW),
                         [])
    assert _verdict("alert", spike) == "alert call_rate_spike tool=t hour=8: 900.0 > 140.0 (baseline 100.0)"
    new = alert_fields(Alert("new_egress_destination", (("tool", "t"), ("destination", "e.example")), "e.example",
                             None, None, NOW, 60, NOW), [])
    assert _verdict("alert", new) == "alert new_egress_destination tool=t destination=e.example: e.example (new)"


async def test_the_background_task_turns_a_synthetic_spike_into_audited_alerts_and_steady_traffic_into_none(
        ) -> None:
    """Monitor.observe (as the record stage calls it) then Monitor.run: 40 steady minutes, one spike."""
    from types import SimpleNamespace

    now = [NOW]
    audited: list[dict[str, Any]] = []

    async def audit(request_id: str, fields: dict[str, Any]) -> None:
        audited.append(fields)

    monitor = Monitor(Settings(), clock=lambda: now[0], audit=audit, drain_s=0.001, max_pending=100_000)
    principal = SimpleNamespace(agent_id="bot", user_id=None, client_id="c", tenant=None)
    ctx = SimpleNamespace(record=SimpleNamespace(route=None, result_tenant=None), principal=principal, source=None,
                          arguments={})

    async def minute(calls: int) -> None:
        for _ in range(calls):
            now[0] += 60 / calls
            monitor.observe(ctx, "ok", 10)
        with anyio.fail_after(30):
            while monitor._pending:
                await anyio.sleep(0.005)

    async with anyio.create_task_group() as tg:
        tg.start_soon(monitor.run)
        for _ in range(40):
            await minute(100)
        assert audited == []  # steady: nothing
        await minute(900)
        await minute(100)  # closes the spike's window
        with anyio.fail_after(30):
            while len(audited) < 2:
                await anyio.sleep(0.005)
        tg.cancel_scope.cancel()
    assert {(f["rule"], f["key_text"]) for f in audited} == {("call_rate_spike", "tool=unknown hour=8"),
                                                              ("call_rate_spike", "agent=bot")}
    assert all(f["observed"] >= 899 and f["baseline"] == pytest.approx(100, abs=2) for f in audited)
