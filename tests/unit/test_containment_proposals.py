"""A proposed containment through the real approvals machinery and the real kill-switch runtime: the
approval request, approval by a person, execution exactly once (also under concurrent executors and after
a failed switch), denial and expiry changing nothing, the requester never voting, and no client call ever
redeeming it. Doubles only for the clock, the audit writer and the notifier."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import pytest

from portcullis.approvals.model import Approval, identity_key
from portcullis.approvals.service import ApprovalService, ApproverRefused
from portcullis.approvals.store import SqliteApprovalStore
from portcullis.approvals.system import ALERTS, KILL_SWITCH_TOOL, POLICY_MARKER
from portcullis.config.model import ApprovalsConfig
from portcullis.errors import ApprovalInvalid
from portcullis.identity.principal import Principal
from portcullis.kill.containment import KillSwitchContainment
from portcullis.kill.runtime import KillSwitches
from portcullis.kill.store import SqliteKillSwitchStore
from portcullis.monitoring.containment import Action, carry_out
from portcullis.policy.decision import Decision

CONFIG = ApprovalsConfig.model_validate({"ttl_s": 60, "approvers": [
    {"tools": [KILL_SWITCH_TOOL], "approvers": ["role:oncall"]},
    {"tools": ["billing.*"], "approvers": ["role:finance-approver"]}]})
OLIVIA = Principal(client_id="cli", auth_method="dev", issuer="dev", user_id="olivia", roles=("oncall",), person=True)
PETER = Principal(client_id="cli", auth_method="dev", issuer="dev", user_id="peter", roles=("oncall",), person=True)
FINANCE = Principal(client_id="cli", auth_method="dev", issuer="dev", user_id="fin", roles=("finance-approver",),
                    person=True)
BOT = Principal(client_id="web", auth_method="dev", issuer="dev", user_id="alice", agent_id="billing-bot")
REASON = "alert new_identity_high_risk: observed 1 over threshold None"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Audit:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    async def __call__(self, event: str, approval: Any, **extra: Any) -> None:
        self.events.append((event, approval.id, str(extra.get("reason", ""))))

    def kinds(self) -> list[str]:
        return [e for e, _, _ in self.events]


class Replica:
    """One gateway's approvals and kill switches over the shared SQLite files in ``root``."""

    def __init__(self, root: Path, clock: Clock) -> None:
        self.audit, self.notices = Audit(), list[Approval]()
        self.approvals = ApprovalService(SqliteApprovalStore.open(root / "approvals.sqlite3"), CONFIG, clock=clock,
                                         audit=self.audit, notify=self.notices.append)
        self.kill_path = root / "kill_switches.sqlite3"
        self.kills = KillSwitches(SqliteKillSwitchStore(self.kill_path, clock=clock), clock=clock)
        self.kills.start()
        self.containment = KillSwitchContainment(self.kills, self.approvals)

    async def propose(self, kind: str = "agent", target: str = "billing-bot") -> None:
        assert carry_out(Action("new_identity_high_risk", kind, target, "proposed", REASON), self.containment)
        await self.containment.drained()

    async def open(self) -> list[Approval]:
        return await self.approvals.open_requests(KILL_SWITCH_TOOL)

    def switches(self) -> list[Any]:
        return list(SqliteKillSwitchStore(self.kill_path).history())


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gw(tmp_path: Path, clock: Clock) -> Replica:
    return Replica(tmp_path, clock)


async def test_a_proposal_is_an_approval_request_and_nothing_changes_until_a_person_approves(gw: Replica) -> None:
    await gw.propose()
    (approval,) = await gw.open()
    assert (approval.tool, dict(approval.arguments)) == (KILL_SWITCH_TOOL, {"kind": "agent", "target": "billing-bot",
                                                                            "reason": REASON})
    assert approval.requester == ALERTS.to_claims() and approval.requester_key == identity_key(ALERTS)
    assert (approval.status, approval.required, approval.tool_risk, approval.policy_version) == (
        "pending", 1, "high", POLICY_MARKER)
    assert gw.notices == [approval]  # the approvers' usual notice
    assert gw.switches() == [] and gw.kills.snapshot.keys == {}
    assert [a["id"] for a in (await gw.approvals.list_for(OLIVIA, "pending"))[0]] == [approval.id]
    assert (await gw.approvals.list_for(FINANCE, "pending"))[0] == []  # not an approver of the switch

    voted = await gw.approvals.vote(approval.id, OLIVIA, "approve", reason="confirmed")
    assert voted.status == "approved"
    assert (await gw.approvals.get(approval.id)).status == "executed"  # type: ignore[union-attr]
    (switch,) = gw.switches()
    assert (switch.kind, switch.target, switch.actor) == ("agent", "billing-bot", "approved:olivia")
    assert switch.reason == f"{REASON} (approval {approval.id})"
    assert gw.kills.snapshot.for_principal(BOT, gw.kills._clock()) is not None  # effective on the next call
    assert gw.audit.kinds() == ["proposed", "approved", "executed"]
    assert gw.audit.events[-1][2] == f"kill switch {switch.id} set"
    await gw.approvals.sweep()
    assert len(gw.switches()) == 1  # the sweep does not run it again


async def test_no_second_proposal_for_the_same_switch_while_one_is_open(gw: Replica) -> None:
    await gw.propose()
    await gw.propose(target="Billing-Bot")  # identities compare folded, as the switch does
    assert len(await gw.open()) == 1
    await gw.propose(kind="tool", target="billing.process_refund")
    assert len(await gw.open()) == 2
    first = next(a for a in await gw.open() if a.arguments["kind"] == "agent")
    await gw.approvals.vote(first.id, OLIVIA, "deny")
    await gw.propose()  # closed by the denial: a new alert may ask again
    assert sorted(a.arguments["kind"] for a in await gw.open()) == ["agent", "tool"]
    again = next(a for a in await gw.open() if a.arguments["kind"] == "agent")
    await gw.approvals.vote(again.id, OLIVIA, "approve")
    await gw.propose()  # the switch is active now: nothing to ask for
    assert [a.arguments["kind"] for a in await gw.open()] == ["tool"]


async def test_denied_or_expired_changes_nothing(gw: Replica, clock: Clock) -> None:
    await gw.propose()
    (denied,) = await gw.open()
    assert (await gw.approvals.vote(denied.id, OLIVIA, "deny")).status == "denied"
    await gw.propose(kind="tool", target="billing.process_refund")
    (late,) = await gw.open()
    clock.now += 61
    assert await gw.approvals.sweep() == 1
    with pytest.raises(ApproverRefused):
        await gw.approvals.vote(late.id, OLIVIA, "approve")
    await gw.approvals.sweep()
    assert gw.switches() == []
    assert [(await gw.approvals.get(a.id)).status for a in (denied, late)] == ["denied", "expired"]  # type: ignore[union-attr]


async def test_the_requester_and_other_approvers_cannot_vote(gw: Replica) -> None:
    await gw.propose()
    (approval,) = await gw.open()
    namesake = Principal(client_id="cli", auth_method="dev", issuer="dev", user_id="portcullis-alerts",
                         roles=("oncall",), person=True)
    for who, why in ((ALERTS, "approvers must be people"), (namesake, "the requester cannot approve"),
                     (FINANCE, "not an approver for this tool"), (BOT, "approvers must be people")):
        with pytest.raises(ApproverRefused) as refused:
            await gw.approvals.vote(approval.id, who, "approve")
        assert refused.value.reason.startswith(why), who
    assert (await gw.approvals.get(approval.id)).status == "pending"  # type: ignore[union-attr]
    assert gw.switches() == []


def break_switches(replica: Replica) -> Any:
    """Make the replica's kill-switch store fail (the real store, its connection closed); returns the working one."""
    broken = SqliteKillSwitchStore(replica.kill_path)
    broken._conn.close()
    working, replica.kills.store = replica.kills.store, broken
    return working


@pytest.mark.parametrize("state", ["pending", "approved"])
async def test_no_client_call_redeems_it(gw: Replica, state: str) -> None:
    """Even presented with every binding right (tool, arguments, the synthetic requester, the marker)."""
    await gw.propose()
    (approval,) = await gw.open()
    if state == "approved":
        break_switches(gw)  # approved and not yet executed: the moment a redeem would be worth most
        await gw.approvals.vote(approval.id, OLIVIA, "approve")
        assert (await gw.approvals.get(approval.id)).status == "approved"  # type: ignore[union-attr]

    async def nothing() -> None:
        pass

    for principal, version in ((ALERTS, POLICY_MARKER), (BOT, POLICY_MARKER), (BOT, "pv-1")):
        decision = Decision(effect="require_approval", policy_version=version)
        for attempt in (gw.approvals.redeem, gw.approvals.peek):
            kwargs: dict[str, Any] = {"before_use": nothing} if attempt == gw.approvals.redeem else {}
            with pytest.raises(ApprovalInvalid):  # the answer for an unknown id: nothing to probe
                await attempt(approval_id=approval.id, tool=KILL_SWITCH_TOOL, arguments=dict(approval.arguments),
                              principal=principal, decision=decision, request_id="r", **kwargs)
    assert (await gw.approvals.get(approval.id)).status == state  # type: ignore[union-attr]


async def test_a_client_approval_of_a_same_named_tool_is_never_executed(gw: Replica) -> None:
    """A deployment whose own service exposes ``portcullis.kill_switch``: its held calls are ordinary approvals."""
    decision = Decision(effect="require_approval", policy_version="pv-1")
    mimic = await gw.approvals.propose(tool=KILL_SWITCH_TOOL, arguments={"kind": "user", "target": "olivia",
                                                                         "reason": "x"},
                                       principal=BOT, decision=decision, required=1, justification="", request_id="r")
    await gw.approvals.vote(mimic.id, OLIVIA, "approve")
    await gw.approvals.sweep()
    assert gw.switches() == []
    assert (await gw.approvals.get(mimic.id)).status == "approved"  # type: ignore[union-attr]
    assert await gw.open() == []


async def test_a_failing_switch_stays_approved_and_the_sweep_sets_it_once(
        gw: Replica, caplog: pytest.LogCaptureFixture) -> None:
    await gw.propose()
    (approval,) = await gw.open()
    working = break_switches(gw)
    with caplog.at_level(logging.ERROR, logger="portcullis.approvals"):
        voted = await gw.approvals.vote(approval.id, OLIVIA, "approve")  # the failure is not raised into the vote
    assert voted.status == "approved" and "could not be carried out" in caplog.text
    assert (await gw.approvals.get(approval.id)).status == "approved"  # type: ignore[union-attr]
    await gw.approvals.sweep()  # still failing: still approved
    assert (await gw.approvals.get(approval.id)).status == "approved"  # type: ignore[union-attr]
    assert gw.switches() == []
    gw.kills.store = working
    await gw.approvals.sweep()
    await gw.approvals.sweep()
    assert (await gw.approvals.get(approval.id)).status == "executed"  # type: ignore[union-attr]
    assert len(gw.switches()) == 1
    assert gw.audit.kinds() == ["proposed", "approved", "executed"]


async def test_exactly_once_under_concurrent_executors(tmp_path: Path, clock: Clock) -> None:
    """Two replicas over the same files, each sweeping and executing at once: one switch, one executed record."""
    first, second = Replica(tmp_path, clock), Replica(tmp_path, clock)
    await first.propose()
    (approval,) = await first.open()
    working = break_switches(first)
    await first.approvals.vote(approval.id, OLIVIA, "approve")  # approved, not executed yet
    first.kills.store = working
    results: list[Any] = []

    async def run(replica: Replica, how: str) -> None:
        if how == "sweep":
            await replica.approvals.sweep()
        else:
            results.append(await replica.approvals.execute(approval.id, request_id="x"))

    async with anyio.create_task_group() as tg:
        for replica in (first, second) * 4:
            tg.start_soon(run, replica, "sweep")
            tg.start_soon(run, replica, "execute")
    assert len(first.switches()) == 1
    assert (first.audit.kinds() + second.audit.kinds()).count("executed") == 1
    assert sum(r is not None for r in results) <= 1


async def test_hostile_targets_and_approver_names(gw: Replica, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="portcullis.alerts"):
        for target in ("", "a\u202eb", "x" * 10_000, "line\nbreak"):
            await gw.propose(target=target)
    assert await gw.open() == [] and "refuse its target" in caplog.text
    await gw.propose(target="evil-bot")
    (approval,) = await gw.open()
    longest = Principal(client_id="cli", auth_method="dev", issuer="dev", user_id="o" * 256, roles=("oncall",),
                        person=True)  # the longest id a principal holds: the actor is cut to the switch's limit
    await gw.approvals.vote(approval.id, longest, "approve")
    (switch,) = gw.switches()
    assert switch.actor == ("approved:" + "o" * 256)[:256]


async def test_a_failing_proposal_is_logged_never_raised(tmp_path: Path, clock: Clock,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """Over the requester's open cap (audited ``refused``), and with the audit trail failing: nothing stored."""
    gw = Replica(tmp_path, clock)
    gw.approvals._config = CONFIG.model_copy(update={"max_open_per_requester": 2})
    with caplog.at_level(logging.ERROR, logger="portcullis.alerts"):
        for target in ("bot-1", "bot-2", "bot-3"):
            await gw.propose(target=target)
    assert sorted(a.arguments["target"] for a in await gw.open()) == ["bot-1", "bot-2"]
    assert gw.audit.kinds() == ["proposed", "proposed", "refused"]
    assert "containment could not be proposed" in caplog.text

    async def failing(*_: Any, **__: Any) -> None:
        raise OSError("audit trail down")

    gw.approvals._audit = failing
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="portcullis.alerts"):
        await gw.propose(kind="tool", target="billing.process_refund")
    assert "containment could not be proposed" in caplog.text
    assert len(await gw.open()) == 2
