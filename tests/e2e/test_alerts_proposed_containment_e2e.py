"""A proposed containment end to end: an alert whose containment rule is ``mode: proposed`` opens an approval
request for ``portcullis.kill_switch`` (listed by ``GET /approvals`` for an approver), nothing is blocked before
the vote, an approver approves through the admin API and the next call is refused with -31050; a denied one
blocks nothing; the requester (``portcullis-alerts``) cannot vote; a client cannot call the synthetic tool; and
a second executor racing the gateway's own (another process on the same files) does not set it twice.

The alert is the first-seen rule ``new_identity_high_risk`` with ``learn_s: 0`` (a new agent on the demo's
high-risk refund tool alerts at the monitor's next drain, about a second): a spike rule needs at least three
closed windows of 10 s or more, longer than an end-to-end test should take."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import orjson
import pytest
import yaml
from mcp import MCPError

from portcullis.approvals.service import ApprovalService
from portcullis.approvals.store import SqliteApprovalStore
from portcullis.approvals.system import KILL_SWITCH_TOOL
from portcullis.config.model import ApprovalsConfig
from portcullis.kill.containment import KillSwitchContainment
from portcullis.kill.runtime import KillSwitches
from portcullis.kill.store import FILE_NAME, SqliteKillSwitchStore
from tests.e2e.harness import GatewayProcess, copy_demo

pytestmark = pytest.mark.xdist_group("e2e/test_alerts_proposed_containment_e2e.py")

CONTAINED = -31050
REFUND = "billing.process_refund"
APP = "customer-support-ui"  # the demo's refund policy allows this app (or the agent billing-bot)
APPROVER_RULE = {"tools": [KILL_SWITCH_TOOL], "approvers": ["issuer:dev/role:oncall"]}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = copy_demo(tmp_path_factory.mktemp("proposed") / "deployment")
    config = yaml.safe_load((root / "gateway.yaml").read_text())
    config["approvals"]["approvers"].append(APPROVER_RULE)
    config["admin"] = {**config.get("admin", {}), "responders": ["role:oncall"]}
    config["alerts"] = {"learn_s": 0, "containment": [
        {"rule": "new_identity_high_risk", "kind": "agent", "mode": "proposed"}]}
    (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with GatewayProcess(root) as gw:
        yield gw


def olivia(gw: GatewayProcess) -> str:
    return gw.token(user="olivia", agent=None, roles=["oncall"])


async def refund(gw: GatewayProcess, agent: str) -> MCPError | None:
    """One allowed refund (under the approval threshold) by ``agent``; its error, or None when it ran."""
    token = gw.token(user=f"user-of-{agent}", agent=agent, source_app=APP)
    async with gw.client(token=token) as client:
        try:
            result = await client.call_tool(REFUND, {"order_id": "ORD-20001", "amount": 5, "currency": "USD",
                                                     "reason": "goodwill"})
        except MCPError as exc:
            return exc
    assert not result.is_error
    return None


def admin(gw: GatewayProcess, method: str, path: str, token: str, body: Any = None) -> httpx2.Response:
    return httpx2.request(method, gw.admin_base + path, headers={"authorization": f"Bearer {token}"}, timeout=30,
                          json=body)


def proposal_for(gw: GatewayProcess, agent: str, deadline_s: float = 30.0) -> dict[str, Any]:
    """The pending approval request to block ``agent``, as an approver sees it (polled: the alert is async)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        listing = admin(gw, "GET", "/approvals?status=pending", olivia(gw))
        assert listing.status_code == 200, listing.text
        for brief in listing.json()["approvals"]:
            if brief["tool"] == KILL_SWITCH_TOOL:
                view = admin(gw, "GET", f"/approvals/{brief['id']}", olivia(gw)).json()
                if view["arguments"]["target"] == agent:
                    return view
        time.sleep(0.2)
    raise AssertionError(f"no proposal for {agent}\n{gw.log()[-3000:]}")


def records(gw: GatewayProcess) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{gw.state_dir / 'audit.sqlite3'}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT kind, fields FROM audit_record ORDER BY idx").fetchall()
    finally:
        conn.close()
    return [{"kind": k, "fields": orjson.loads(f)} for k, f in rows]


def switches_on(gw: GatewayProcess, target: str) -> list[Any]:
    return [s for s in SqliteKillSwitchStore(gw.state_dir / FILE_NAME).history() if s.target == target]


async def test_approved_proposal_contains_the_agent(gateway: GatewayProcess) -> None:
    assert await refund(gateway, "billing-bot") is None  # the first refund of a new agent raises the alert
    view = proposal_for(gateway, "billing-bot")
    assert view["arguments"]["kind"] == "agent" and view["arguments"]["reason"].startswith(
        "alert new_identity_high_risk")
    assert (view["requester"]["user_id"], view["tool_risk"], view["required"]) == ("portcullis-alerts", "high", 1)
    assert await refund(gateway, "billing-bot") is None  # nothing is blocked before the vote
    # the synthetic tool is nobody's to call: not a catalog tool, and its approval id redeems nothing
    async with gateway.client(token=gateway.token(agent="billing-bot", source_app=APP)) as client:
        with pytest.raises(MCPError) as called:
            await client.call_tool(KILL_SWITCH_TOOL, dict(view["arguments"]),
                                   meta={"io.portcullis/approval-id": view["id"]})
    assert (called.value.code, called.value.message) == (-32602, "Unknown tool")  # as any name not in the catalog
    assert admin(gateway, "GET", f"/approvals/{view['id']}", olivia(gateway)).json()["status"] == "pending"

    voted = admin(gateway, "POST", f"/approvals/{view['id']}/approve", olivia(gateway), {"reason": "confirmed"})
    assert voted.status_code == 200 and voted.json()["status"] == "approved", voted.text
    error = await refund(gateway, "billing-bot")  # the very next call
    assert error is not None and error.code == CONTAINED
    (switch,) = switches_on(gateway, "billing-bot")
    assert (switch.kind, switch.actor) == ("agent", "approved:olivia") and view["id"] in switch.reason
    assert admin(gateway, "GET", f"/approvals/{view['id']}", olivia(gateway)).json()["status"] == "executed"
    steps = [r["fields"]["event"] for r in records(gateway)
             if r["kind"] == "approval" and r["fields"]["approval_id"] == view["id"]]
    assert steps == ["proposed", "approved", "executed"]
    alerts = [r["fields"] for r in records(gateway) if r["kind"] == "alert"
              and r["fields"]["key"].get("agent") == "billing-bot"]
    assert alerts and alerts[0]["containment"][0]["mode"] == "proposed"


async def test_denied_blocks_nothing_and_the_requester_cannot_vote(gateway: GatewayProcess) -> None:
    assert await refund(gateway, "support-bot") is None
    view = proposal_for(gateway, "support-bot")
    namesake = gateway.token(user="portcullis-alerts", agent=None, roles=["oncall"])  # a person of the same name
    as_agent = gateway.token(user="olivia", agent="portcullis-alerts", roles=["oncall"])
    for token, why in ((namesake, "the requester cannot approve"), (as_agent, "approvers must be people")):
        refused = admin(gateway, "POST", f"/approvals/{view['id']}/approve", token)
        assert refused.status_code == 403 and refused.json()["error"].startswith(why), refused.text
    denied = admin(gateway, "POST", f"/approvals/{view['id']}/deny", olivia(gateway), {"reason": "expected"})
    assert denied.status_code == 200 and denied.json()["status"] == "denied"
    await anyio.sleep(6)  # past a sweep of the approvals (every 5 s): it executes nothing denied
    assert await refund(gateway, "support-bot") is None
    assert switches_on(gateway, "support-bot") == []


async def test_exactly_once_with_a_second_executor_racing(gateway: GatewayProcess) -> None:
    """Another process on the same approval and kill-switch files executes while the gateway's vote does."""
    assert await refund(gateway, "batch-bot") is None
    view = proposal_for(gateway, "batch-bot")
    config = ApprovalsConfig.model_validate({"approvers": [APPROVER_RULE]})
    executed: list[Any] = []

    async def nothing(*_: Any, **__: Any) -> None:
        pass

    other = ApprovalService(SqliteApprovalStore.open(gateway.state_dir / "approvals.sqlite3"), config,
                            clock=time.time, audit=nothing)
    kills = KillSwitches(SqliteKillSwitchStore(gateway.state_dir / FILE_NAME))
    kills.start()
    KillSwitchContainment(kills, other)  # registers the same action with the second executor
    voted: list[httpx2.Response] = []

    async def vote() -> None:
        async with httpx2.AsyncClient(timeout=30) as http:
            voted.append(await http.post(f"{gateway.admin_base}/approvals/{view['id']}/approve", json={},
                                         headers={"authorization": f"Bearer {olivia(gateway)}"}))

    async def race() -> None:
        deadline = time.monotonic() + 30
        while not voted and time.monotonic() < deadline:
            executed.append(await other.execute(view["id"], request_id="race"))
            await anyio.sleep(0.001)

    async with anyio.create_task_group() as tg:
        tg.start_soon(race)
        tg.start_soon(vote)
    assert voted[0].status_code == 200, voted[0].text
    await anyio.sleep(6)  # and a sweep of the gateway's own
    assert len(switches_on(gateway, "batch-bot")) == 1
    by_gateway = [r for r in records(gateway) if r["kind"] == "approval" and r["fields"]["approval_id"] == view["id"]
                  and r["fields"]["event"] == "executed"]
    assert len(by_gateway) + sum(e is not None for e in executed) == 1
    error = await refund(gateway, "batch-bot")
    assert error is not None and error.code == CONTAINED
