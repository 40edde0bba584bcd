"""Human approval end to end: the demo gateway, the official SDK client as the agent, approvers
through the admin API and the ``portcullis approvals`` CLI, and the audit trail as the witness."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import MCPError

from tests.e2e.audit_load import STORE_FILE, read_chain
from tests.e2e.harness import GatewayProcess, copy_demo_services, run_cli_in_process

REFUND = "billing.process_refund"
META = "io.portcullis/approval-id"


def refund(amount: float, order: str = "ORD-20001") -> dict[str, Any]:
    return {"order_id": order, "amount": amount, "currency": "USD", "reason": "duplicate charge"}


def billing_demo(target: Path) -> Path:
    """The demo deployment with its billing service alone: every call here is a refund."""
    return copy_demo_services(target, "billing")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = billing_demo(tmp_path_factory.mktemp("approvals") / "deployment")
    with GatewayProcess(root) as process:
        yield process


def approver(gateway: GatewayProcess, user: str, *roles: str, agent: str | None = None) -> str:
    return gateway.token(user=user, agent=agent, roles=list(roles or ("finance-approver",)))


async def ask(gateway: GatewayProcess, arguments: dict[str, Any], approval_id: str | None = None,
              justification: str | None = None, token: str | None = None) -> Any:
    """One call by billing-bot (on behalf of alice unless ``token`` says otherwise); returns the result or
    the MCPError."""
    meta: dict[str, Any] = {}
    if approval_id:
        meta[META] = approval_id
    if justification:
        meta["io.portcullis/justification"] = justification
    async with gateway.client(token=token) as client:
        try:
            return await client.call_tool(REFUND, arguments, meta=meta or None)
        except MCPError as exc:
            return exc


def vote(gateway: GatewayProcess, approval_id: str, verdict: str, token: str | None) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx2.post(f"{gateway.admin_base}/approvals/{approval_id}/{verdict}", headers=headers,
                       json={"reason": "checked the order"}, timeout=15)


async def pending(gateway: GatewayProcess, arguments: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    answer = await ask(gateway, arguments, **kwargs)
    assert isinstance(answer, MCPError) and answer.code == -31010, answer
    return answer.data


async def test_the_whole_flow_with_the_sdk_client_and_the_cli(gateway: GatewayProcess) -> None:
    """Drafted, pending, approved by a person through the CLI, executed once, every step audited."""
    assert not isinstance(await ask(gateway, refund(80, order="ORD-20077")), MCPError)  # history for the approver
    data = await pending(gateway, refund(300), justification="customer charged twice\u202e")
    approval_id = data["approval_id"]
    assert data["status"] == "pending" and data["required_approvers"] == 1
    assert data["resume"]["_meta"] == {META: approval_id} and data["expires_at"].endswith("Z")
    scrape = httpx2.get(f"{gateway.admin_base}/metrics", timeout=15).text
    assert 'portcullis_approvals_open{status="pending"} 1.0' in scrape  # the approvers' queue, for alerts
    # polling: the same retry before approval reports the status and runs nothing
    again = await pending(gateway, refund(300), approval_id=approval_id)
    assert again["status"] == "pending" and again["approval_id"] == approval_id

    bob = approver(gateway, "bob")
    shown = run_cli_in_process("approvals", "show", approval_id, "--admin-url", gateway.admin_base, "--token", bob)
    assert shown.returncode == 0, shown.stderr
    assert "customer charged twice\\u{202E}" in shown.stdout  # invisible characters made visible
    assert '"amount": 300' in shown.stdout and "sha256:" in shown.stdout and "billing-bot" in shown.stdout
    history = shown.stdout.split("calls of this tool in the last day", 1)[1]
    assert "ORD-20077" in history and "allow" in history  # the same agent's earlier call, from the audit trail
    done = run_cli_in_process("approvals", "approve", approval_id, "--admin-url", gateway.admin_base, "--token", bob,
                   "--reason", "order checked")
    assert done.returncode == 0 and "approved" in done.stdout, done.stdout + done.stderr

    result = await ask(gateway, refund(300), approval_id=approval_id)
    assert not isinstance(result, MCPError), result
    assert result.structured_content["status"] == "processed"

    records = await read_chain(gateway.state_dir / STORE_FILE)
    steps = [r.fields["event"] for r in records if r.kind == "approval" and r.fields["approval_id"] == approval_id]
    assert steps == ["proposed", "approved", "executed"]
    vote_record = next(r for r in records if r.kind == "approval" and r.fields["event"] == "approved"
                       and r.fields["approval_id"] == approval_id)
    assert vote_record.fields["approver"]["user_id"] == "bob" and vote_record.fields["reason"] == "order checked"
    executed = [r for r in records
                if r.kind == "decision" and (r.fields.get("approval") or {}).get("id") == approval_id]
    assert len(executed) == 1 and executed[0].fields["decision"]["effect"] == "allow"
    assert executed[0].fields["approval"]["approvers"][0]["user_id"] == "bob"


async def test_arguments_swapped_after_approval_need_a_new_approval(gateway: GatewayProcess) -> None:
    approval_id = (await pending(gateway, refund(250)))["approval_id"]
    assert vote(gateway, approval_id, "approve", approver(gateway, "bob")).status_code == 200
    for changed in (refund(251), refund(250, order="ORD-20002"), {**refund(250), "reason": "duplicate charge "}):
        answer = await ask(gateway, changed, approval_id=approval_id)
        assert isinstance(answer, MCPError) and answer.code == -31013, changed
    assert not isinstance(await ask(gateway, refund(250), approval_id=approval_id), MCPError)  # still unused


async def test_an_approval_is_used_once(gateway: GatewayProcess) -> None:
    approval_id = (await pending(gateway, refund(120)))["approval_id"]
    assert vote(gateway, approval_id, "approve", approver(gateway, "bob")).status_code == 200
    assert not isinstance(await ask(gateway, refund(120), approval_id=approval_id), MCPError)
    replay = await ask(gateway, refund(120), approval_id=approval_id)
    assert isinstance(replay, MCPError) and replay.code == -31013


async def test_the_requester_cannot_approve_their_own_request(gateway: GatewayProcess) -> None:
    approval_id = (await pending(gateway, refund(130)))["approval_id"]
    alice = approver(gateway, "alice")  # the user billing-bot acts for, with the approver role
    refused = vote(gateway, approval_id, "approve", alice)
    assert refused.status_code == 403 and "own request" in refused.json()["error"]
    answer = await ask(gateway, refund(130), approval_id=approval_id)
    assert isinstance(answer, MCPError) and answer.code == -31010  # still pending


async def test_approving_needs_an_authenticated_authorized_person(gateway: GatewayProcess) -> None:
    approval_id = (await pending(gateway, refund(140)))["approval_id"]
    assert vote(gateway, approval_id, "approve", None).status_code == 401
    assert vote(gateway, approval_id, "approve", "not.a.token").status_code == 401
    assert vote(gateway, approval_id, "approve", approver(gateway, "mallory", "analyst")).status_code == 403
    assert vote(gateway, approval_id, "approve", approver(gateway, "bob", agent="approver-bot")).status_code == 403
    listed = httpx2.get(f"{gateway.admin_base}/approvals", timeout=15)
    assert listed.status_code == 401 and "Bearer" not in listed.text
    view = httpx2.get(f"{gateway.admin_base}/approvals/{approval_id}", timeout=15,
                      headers={"Authorization": f"Bearer {approver(gateway, 'mallory', 'analyst')}"})
    assert view.status_code == 404  # not an approver of this tool: indistinguishable from no such id
    denied = vote(gateway, approval_id, "deny", approver(gateway, "carol"))
    assert denied.status_code == 200 and denied.json()["status"] == "denied"
    answer = await ask(gateway, refund(140), approval_id=approval_id)
    assert isinstance(answer, MCPError) and answer.code == -31011


async def test_above_the_second_threshold_two_distinct_approvers_are_needed(gateway: GatewayProcess) -> None:
    data = await pending(gateway, refund(450))
    approval_id = data["approval_id"]
    assert data["required_approvers"] == 2
    bob = approver(gateway, "bob")
    assert vote(gateway, approval_id, "approve", bob).json()["status"] == "pending"
    assert vote(gateway, approval_id, "approve", bob).status_code == 409  # one vote per person
    still = await pending(gateway, refund(450), approval_id=approval_id)
    assert still["approvals"] == 1 and still["status"] == "pending"
    assert vote(gateway, approval_id, "approve", approver(gateway, "carol")).json()["status"] == "approved"
    assert not isinstance(await ask(gateway, refund(450), approval_id=approval_id), MCPError)


def test_approval_ids_in_meta_are_checked(gateway: GatewayProcess) -> None:
    """A malformed approval id is a precise invalid-params error, not silently ignored."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": REFUND, "arguments": refund(300), "_meta": {
            META: "../../etc/passwd", "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}}}
    headers = {**gateway.auth_headers(), "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call",
               "Mcp-Name": REFUND, "Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    answer = httpx2.post(gateway.url, headers=headers, content=json.dumps(body), timeout=15)
    assert answer.headers.get("content-type", "").startswith("application/json"), (answer.status_code, answer.text)
    error = answer.json()["error"]
    assert error["code"] == -32602 and "approval id" in error["message"]


class _Sink:
    """A local incoming-webhook endpoint that keeps what it is sent."""

    def __init__(self) -> None:
        import http.server
        import threading

        received: list[tuple[dict[str, str], bytes]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.received = received
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


NOTIFY_KEY = "n" * 32
# the notifying gateway's cap on open requests per requester, for test_the_open_cap_and_cli_paging_end_to_end
# (its requester is a user no other test of that gateway calls as)
OPEN_CAP = 3


@pytest.fixture(scope="module")
def notifying(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, _Sink]]:
    """A gateway that notifies approvers through a local webhook, and that webhook (what it received)."""
    import yaml

    sink = _Sink()
    root = billing_demo(tmp_path_factory.mktemp("elicit") / "deployment")
    config = yaml.safe_load((root / "gateway.yaml").read_text())
    config["approvals"]["notify"] = {"webhook_url": sink.url, "secret_ref": "secret://env/PORTCULLIS_TEST_NOTIFY",
                                     "link_base": "https://approvals.example", "allow_insecure_http": True}
    config["approvals"]["max_open_per_requester"] = OPEN_CAP
    (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        with GatewayProcess(root, env={"PORTCULLIS_TEST_NOTIFY": NOTIFY_KEY}) as process:
            yield process, sink
    finally:
        sink.close()


@pytest.fixture
def notifying_gateway(notifying: tuple[GatewayProcess, _Sink]) -> GatewayProcess:
    return notifying[0]


async def test_approvers_are_notified_with_signed_expiring_links(notifying: tuple[GatewayProcess, _Sink]) -> None:
    import time

    from portcullis.audit.siem.webhook import verify_signature

    gateway, sink = notifying

    def notice_of(approval_id: str) -> tuple[dict[str, str], bytes] | None:
        """The webhook delivery about ``approval_id`` (other tests' requests are notified to the same sink)."""
        return next((sent for sent in list(sink.received)
                     if (json.loads(sent[1]).get("approval") or {}).get("id") == approval_id), None)

    approval_id = (await pending(gateway, refund(310)))["approval_id"]
    deadline = time.monotonic() + 10
    while notice_of(approval_id) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    delivered = notice_of(approval_id)
    assert delivered is not None, "no notice about the request"
    headers, body = delivered
    assert verify_signature(NOTIFY_KEY.encode(), headers["x-portcullis-signature"], body, time.time())
    notice = json.loads(body)
    assert notice["approval"]["id"] == approval_id and approval_id not in notice["text"]
    assert "billing.process_refund" in notice["text"] and '"amount"' not in json.dumps(notice)
    assert notice["approval"]["arguments_hash"] in notice["approval"]["summary"]  # summary and hash only
    links = {b["text"]["text"]: b["url"] for b in notice["blocks"][-1]["elements"]}
    approve_link = links["Review and approve"].replace("https://approvals.example", gateway.admin_base)
    assert f"/approvals/{approval_id}/approve?exp=" in approve_link

    shown = httpx2.get(approve_link, timeout=15)  # following the link shows, never decides
    assert shown.status_code == 200 and shown.json()["status"] == "pending"
    assert "arguments" not in shown.json() and shown.json()["arguments_hash"].startswith("sha256:")
    for tampered in (approve_link[:-1] + ("0" if approve_link[-1] != "0" else "1"),
                     approve_link.replace("exp=", "exp=9"),
                     approve_link.replace("/approve?", "/deny?")):
        assert httpx2.get(tampered, timeout=15).status_code == 403, tampered
    assert httpx2.post(approve_link, timeout=15).status_code == 401  # the link alone approves nothing
    bob = approver(gateway, "bob")
    voted = httpx2.post(approve_link, headers={"Authorization": f"Bearer {bob}"}, json={}, timeout=15)
    assert voted.status_code == 200 and voted.json()["status"] == "approved"
    assert not isinstance(await ask(gateway, refund(310), approval_id=approval_id), MCPError)


async def test_a_client_that_elicits_urls_gets_input_required_and_resumes_by_itself(
        notifying_gateway: GatewayProcess) -> None:
    """2026-07-28 with URL-mode elicitation: the held call is an input_required result; the SDK
    shows the URL, the user accepts once a person approved, and the SDK's retry runs the call."""
    from mcp import types

    gateway = notifying_gateway
    asked: list[types.ElicitRequestURLParams] = []

    async def elicitation(context: Any, params: Any) -> types.ElicitResult:
        asked.append(params)
        status_url = params.url.replace("https://approvals.example", gateway.admin_base)
        async with httpx2.AsyncClient(timeout=15) as http:
            status = (await http.get(status_url)).json()
            assert status["status"] == "pending" and "arguments" not in status  # the requester sees state only
            if len(asked) == 1:  # a person approves while the user waits, then the user accepts
                listed = await http.get(f"{gateway.admin_base}/approvals?status=pending",
                                        headers={"Authorization": f"Bearer {approver(gateway, 'bob')}"})
                approval_id = next(a["id"] for a in listed.json()["approvals"] if a["tool"] == REFUND)
                voted = await http.post(f"{gateway.admin_base}/approvals/{approval_id}/approve",
                                        headers={"Authorization": f"Bearer {approver(gateway, 'bob')}"}, json={})
                assert voted.json()["status"] == "approved"
        return types.ElicitResult(action="accept")

    async with gateway.client(mode="2026-07-28", elicitation_callback=elicitation) as client:
        result = await client.call_tool(REFUND, refund(333))
    assert not result.is_error and result.structured_content["status"] == "processed"
    assert len(asked) == 1 and asked[0].mode == "url" and "approver" in asked[0].message
    records = await read_chain(gateway.state_dir / STORE_FILE)
    events = [r.fields["event"] for r in records if r.kind == "approval"]
    assert events[-3:] == ["proposed", "approved", "executed"]


async def test_a_forged_request_state_is_refused(notifying_gateway: GatewayProcess) -> None:
    from mcp import types

    gateway = notifying_gateway

    async def decline(context: Any, params: Any) -> types.ElicitResult:
        return types.ElicitResult(action="decline")

    async with gateway.client(mode="2026-07-28", elicitation_callback=decline) as client:
        with pytest.raises(MCPError) as stopped:  # the user stopped waiting: the structured pending error
            await client.call_tool(REFUND, refund(334))
    assert stopped.value.code == -31010 and stopped.value.data["status"] == "pending"
    approval_id = stopped.value.data["approval_id"]
    async with gateway.client(mode="2026-07-28", elicitation_callback=decline) as client:
        with pytest.raises(MCPError) as forged:
            await client.session.call_tool(REFUND, refund(334), request_state=f"{approval_id}.9999999999.00",
                                           input_responses={"portcullis_approval": types.ElicitResult(
                                               action="accept")}, allow_input_required=True)
    assert forged.value.code == -31013


async def test_polling_reports_the_status_without_running_the_call(gateway: GatewayProcess) -> None:
    """With approval-poll the agent sees pending, approved, denied or expired, and nothing runs."""
    async def poll(approval_id: str, arguments: dict[str, Any]) -> MCPError:
        async with gateway.client() as client:
            with pytest.raises(MCPError) as answer:
                await client.call_tool(REFUND, arguments, meta={META: approval_id, "io.portcullis/approval-poll": True})
        return answer.value

    approval_id = (await pending(gateway, refund(170)))["approval_id"]
    first = await poll(approval_id, refund(170))
    assert first.code == -31010 and first.data["status"] == "pending"
    assert vote(gateway, approval_id, "approve", approver(gateway, "bob")).status_code == 200
    approved = await poll(approval_id, refund(170))
    assert approved.code == -31010 and approved.data["status"] == "approved"
    assert (await poll(approval_id, refund(171))).code == -31013  # polling is bound to the call too
    assert not isinstance(await ask(gateway, refund(170), approval_id=approval_id), MCPError)  # not used up
    denied_id = (await pending(gateway, refund(180)))["approval_id"]
    assert vote(gateway, denied_id, "deny", approver(gateway, "carol")).status_code == 200
    assert (await poll(denied_id, refund(180))).code == -31011


async def test_expiry_means_deny(tmp_path: Path) -> None:
    import time

    import yaml

    root = billing_demo(tmp_path / "deployment")
    config = yaml.safe_load((root / "gateway.yaml").read_text())
    config["approvals"]["ttl_s"] = 10  # the shortest allowed
    (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    gateway = GatewayProcess(root, state_dir=tmp_path / "state")
    try:
        gateway.wait_ready()
        late = (await pending(gateway, refund(190)))["approval_id"]
        approved_too_late = (await pending(gateway, refund(191)))["approval_id"]
        assert vote(gateway, approved_too_late, "approve", approver(gateway, "bob")).status_code == 200
        time.sleep(10.5)
        assert vote(gateway, late, "approve", approver(gateway, "bob")).status_code == 409
        for approval_id, amount in ((late, 190), (approved_too_late, 191)):
            answer = await ask(gateway, refund(amount), approval_id=approval_id)
            assert isinstance(answer, MCPError) and answer.code == -31012
    finally:
        gateway.stop()
    events = [(r.fields["approval_id"], r.fields["event"]) for r in await read_chain(tmp_path / "state" / STORE_FILE)
              if r.kind == "approval"]
    assert (late, "expired") in events and (approved_too_late, "expired") in events


async def test_the_open_cap_and_cli_paging_end_to_end(notifying_gateway: GatewayProcess) -> None:
    """A real gateway with approvals.max_open_per_requester: 3: the fourth request is -31020 naming the
    cap, and `portcullis approvals list` pages through the three (one page, then every page).

    The gateway is shared with other tests, so this requester (dana, through billing-bot) is one no other
    test calls as; other requesters' open requests are listed too and left out of the comparison."""
    gateway = notifying_gateway
    dana = gateway.token(user="dana")
    ids = [(await pending(gateway, refund(200 + n, order=f"ORD-3000{n}"), token=dana))["approval_id"]
           for n in range(OPEN_CAP)]
    over = await ask(gateway, refund(299, order="ORD-30009"), token=dana)
    assert isinstance(over, MCPError) and over.code == -31020
    assert over.error.data == {"rule_id": "approvals/max_open_per_requester", "retry_after_s": 900}
    base = ["--admin-url", gateway.admin_base, "--token", approver(gateway, "bob"), "--json"]
    one = run_cli_in_process("approvals", "list", "--limit", "2", *base)
    assert one.returncode == 0, one.stderr
    assert len(json.loads(one.stdout)) == 2 and "next_cursor apr_" in one.stderr
    every = run_cli_in_process("approvals", "list", "--limit", "1", "--all", *base)
    assert every.returncode == 0, every.stderr
    rows = json.loads(every.stdout)
    assert len({row["id"] for row in rows}) == len(rows)  # no page repeats a row
    assert sorted(row["id"] for row in rows if row["requester"] == "dana") == sorted(ids)
    events = [r.fields["event"] for r in await read_chain(gateway.state_dir / STORE_FILE)
              if r.kind == "approval" and r.fields["requester"].get("user_id") == "dana"]
    assert events == ["proposed"] * 3 + ["refused"]


async def test_a_pending_approval_survives_a_gateway_restart(gateway: GatewayProcess) -> None:
    """Last in the module (it stops the module's gateway for good): a request left pending is still
    pending in a new gateway process over the same deployment and state, and can be approved and run.

    Other tests of this module leave their own requests behind, so the listing is searched for this one
    and the audit trail is read for this one's events."""
    approval_id = (await pending(gateway, refund(160)))["approval_id"]
    gateway.stop()
    second = GatewayProcess(gateway.config, state_dir=gateway.state_dir)
    try:
        second.wait_ready()
        listed = httpx2.get(f"{second.admin_base}/approvals?status=pending", timeout=15,
                            headers={"Authorization": f"Bearer {approver(second, 'bob')}"})
        assert approval_id in [a["id"] for a in listed.json()["approvals"]]
        assert vote(second, approval_id, "approve", approver(second, "bob")).status_code == 200
        result = await ask(second, refund(160), approval_id=approval_id)
        assert not isinstance(result, MCPError), result
    finally:
        second.stop()
    events = [r.fields["event"] for r in await read_chain(gateway.state_dir / STORE_FILE)
              if r.kind == "approval" and r.fields["approval_id"] == approval_id]
    assert events == ["proposed", "approved", "executed"]
