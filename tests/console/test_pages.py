"""Console pages: the approval queue and detail with the JSON API's authorization, votes, two approvers,
hostile strings rendered inert and visible, CSRF on every POST, the CSP and other headers everywhere."""

from __future__ import annotations

import re
from typing import Any

import httpx2
import pytest

from portcullis.console.render import CSP
from portcullis.identity.principal import Principal
from portcullis.policy.decision import Decision
from tests.console.conftest import Harness, csrf_of, dev_login

TOOL = "billing.process_refund"
BOT = Principal(client_id="billing-bot", auth_method="dev", issuer="dev", user_id="alice", agent_id="billing-bot")
DECISION = Decision(effect="require_approval", reasons=("amount_needs_approval",),
                    rule_ids=(f"{TOOL}/requires_approval_over",), policy_version="pv-1")
HOSTILE = "<script>alert(1)</script>\u202egnp.exe\u200b<img src=x onerror=alert(2)>"


async def _propose(harness: Harness, *, arguments: dict[str, Any] | None = None, required: int = 1,
                   justification: str = "customer asked", tool: str = TOOL) -> str:
    approval = await harness.approvals.propose(
        tool=tool, arguments=arguments or {"order_id": "ORD-1", "amount": 300}, principal=BOT, decision=DECISION,
        required=required, justification=justification, request_id="r1",
        risk={"score": 7.5, "parts": {"tool_risk": 5.0, "amount": 2.5}}, tool_risk="high")
    return approval.id


async def test_an_approver_sees_the_queue_and_the_whole_approval(harness: Harness) -> None:
    approval_id = await _propose(harness, arguments={"order_id": "ORD-1", "amount": 300, "note": "x" * 5000})
    await dev_login(harness.client, "bob", "finance-approver")
    page = await harness.client.get("/console/approvals")
    assert f'href="/console/approvals/{approval_id}"' in page.text
    fragment = await harness.client.get("/console/approvals/list", headers={"hx-request": "true"})
    assert fragment.status_code == 200 and approval_id in fragment.text and "<html" not in fragment.text
    detail = (await harness.client.get(f"/console/approvals/{approval_id}")).text
    view = await harness.approvals.view(approval_id)
    assert view is not None
    assert view["arguments_hash"] in detail and "x" * 5000 in detail  # nothing truncated
    assert "customer asked" in detail and f"{TOOL}/requires_approval_over" in detail
    assert "amount_needs_approval" in detail and "<strong>7.5</strong>" in detail and "tool_risk 5.0" in detail
    assert "alice" in detail and "billing-bot" in detail  # the requester
    assert 'id="approve-form"' in detail and 'id="deny-form"' in detail and "0 of 1 required" in detail


async def test_a_person_without_the_role_sees_nothing_and_cannot_decide(harness: Harness) -> None:
    approval_id = await _propose(harness)
    await dev_login(harness.client, "eve", "intern")
    page = await harness.client.get("/console/approvals")
    assert approval_id not in page.text and 'id="no-approvals"' in page.text
    assert approval_id not in (await harness.client.get("/console/approvals/list")).text
    detail = await harness.client.get(f"/console/approvals/{approval_id}")
    assert detail.status_code == 404 and "customer asked" not in detail.text
    unknown = await harness.client.get("/console/approvals/apr_" + "0" * 32)
    assert unknown.status_code == 404 and unknown.text == detail.text  # ids cannot be probed
    vote = await harness.client.post(f"/console/approvals/{approval_id}/approve",
                                     data={"csrf_token": csrf_of(page.text), "reason": "sure"})
    assert vote.status_code == 404 and "customer asked" not in vote.text  # refused, and still not shown
    approval = await harness.approvals.get(approval_id)
    assert approval is not None and approval.status == "pending" and not approval.votes


async def test_approve_with_a_reason_and_two_approvers_are_shown(harness: Harness) -> None:
    approval_id = await _propose(harness, required=2)
    await dev_login(harness.client, "bob", "finance-approver")
    detail = await harness.client.get(f"/console/approvals/{approval_id}")
    assert "0 of 2 required — two different people must approve" in detail.text
    voted = await harness.client.post(f"/console/approvals/{approval_id}/approve",
                                      data={"csrf_token": csrf_of(detail.text), "reason": "checked the order"})
    assert voted.status_code == 303 and voted.headers["location"].endswith("?done=approve")
    after = (await harness.client.get(voted.headers["location"])).text
    assert "1 of 2 required" in after and "checked the order" in after and 'id="vote-notice"' in after
    again = await harness.client.post(f"/console/approvals/{approval_id}/approve",
                                      data={"csrf_token": csrf_of(after), "reason": "twice"})
    assert again.status_code == 409 and "already voted" in again.text
    carol = harness.new_client()
    await dev_login(carol, "carol", "finance-approver")
    page = await carol.get(f"/console/approvals/{approval_id}")
    done = await carol.post(f"/console/approvals/{approval_id}/approve", data={"csrf_token": csrf_of(page.text)})
    assert done.status_code == 303
    approval = await harness.approvals.get(approval_id)
    assert approval is not None and approval.status == "approved" and len(approval.votes) == 2
    assert 'id="approve-form"' not in (await carol.get(f"/console/approvals/{approval_id}")).text


async def test_deny(harness: Harness) -> None:
    approval_id = await _propose(harness)
    await dev_login(harness.client, "bob", "finance-approver")
    page = await harness.client.get(f"/console/approvals/{approval_id}")
    await harness.client.post(f"/console/approvals/{approval_id}/deny", data={"csrf_token": csrf_of(page.text),
                                                                             "reason": "no"})
    approval = await harness.approvals.get(approval_id)
    assert approval is not None and approval.status == "denied"


async def test_hostile_strings_render_inert_and_visible(harness: Harness) -> None:
    approval_id = await _propose(harness, arguments={"order_id": HOSTILE, HOSTILE: "key", "n": ['"}, "x": "y']},
                                 justification=HOSTILE)
    await dev_login(harness.client, "bob", "finance-approver")
    page = await harness.client.get(f"/console/approvals/{approval_id}")
    await harness.client.post(f"/console/approvals/{approval_id}/deny", data={"csrf_token": csrf_of(page.text),
                                                                             "reason": HOSTILE})
    text = (await harness.client.get(f"/console/approvals/{approval_id}")).text
    body = text.split("<main", 1)[1]
    assert "<script>alert" not in body and "<img src=x" not in body and "onerror=alert(2)>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "\u202e" not in text and "\u200b" not in text
    assert "\\u{202E}gnp.exe\\u{200B}" in body  # shown once, not escaped twice
    assert body.count("\\u{202E}") >= 4  # the value, the key, the justification, the reason
    # a string holding quotes and braces stays one string in one cell
    assert '<span class="str mono">&quot;&#34;}, &#34;x&#34;: &#34;y&quot;</span>' in body
    listing = (await harness.client.get("/console/approvals/list")).text
    assert "<script>" not in listing


async def test_requester_controlled_ids_render_visible_in_the_list(harness: Harness) -> None:
    sneaky = Principal(client_id="c", auth_method="dev", issuer="dev", agent_id="bot\u202eevil<b>")
    await harness.approvals.propose(tool=TOOL, arguments={"a": 1}, principal=sneaky, decision=DECISION, required=1,
                                    justification="", request_id="r")
    await dev_login(harness.client, "bob", "finance-approver")
    listing = (await harness.client.get("/console/approvals/list")).text
    assert "bot\\u{202E}evil&lt;b&gt;" in listing and "\u202e" not in listing


@pytest.mark.parametrize(("headers", "token"), [
    ({}, None),  # no token
    ({}, "wrong"),  # a wrong token
    ({"origin": "https://evil.test:9464"}, "right"),  # cross-origin (the admin guard refuses it first)
    ({"origin": "https://127.0.0.1:9999"}, "right"),  # another port: another origin, past the admin guard
    ({"sec-fetch-site": "cross-site"}, "right"),
    ({"sec-fetch-site": "same-site"}, "right"),
    ({"origin": None, "sec-fetch-site": None}, "right"),  # neither header
])
async def test_a_post_without_a_valid_token_or_from_elsewhere_changes_nothing(
        harness: Harness, headers: dict[str, str | None], token: str | None) -> None:
    approval_id = await _propose(harness)
    await dev_login(harness.client, "bob", "finance-approver")
    page = await harness.client.get(f"/console/approvals/{approval_id}")
    data = {"reason": "csrf"}
    if token is not None:
        data["csrf_token"] = csrf_of(page.text) if token == "right" else token
    request = harness.client.build_request("POST", f"/console/approvals/{approval_id}/approve", data=data)
    for name, value in headers.items():
        if value is None:
            del request.headers[name]
        else:
            request.headers[name] = value
    answer = await harness.client.send(request)
    assert answer.status_code == 403
    approval = await harness.approvals.get(approval_id)
    assert approval is not None and approval.status == "pending" and not approval.votes
    if headers.get("origin") != "https://evil.test:9464":  # else the admin guard answered (plain text)
        assert answer.headers["content-security-policy"] == CSP


async def test_the_htmx_header_token_is_accepted_and_checked(harness: Harness) -> None:
    approval_id = await _propose(harness)
    await dev_login(harness.client, "bob", "finance-approver")
    page = await harness.client.get(f"/console/approvals/{approval_id}")
    token = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert token is not None and token.group(1) == csrf_of(page.text)
    wrong = await harness.client.post(f"/console/approvals/{approval_id}/approve",
                                      headers={"x-csrf-token": "nope", "hx-request": "true"})
    assert wrong.status_code == 403
    right = await harness.client.post(f"/console/approvals/{approval_id}/approve",
                                      headers={"x-csrf-token": token.group(1), "hx-request": "true"})
    assert right.status_code == 303


async def test_login_forms_need_the_pre_login_token(harness: Harness) -> None:
    await harness.client.get("/console/login")
    answer = await harness.client.post("/console/login/dev", data={"user": "bob", "csrf_token": "guess"})
    assert answer.status_code == 403
    fresh = harness.new_client()  # no pre-login record at all: a cross-site auto-submitted form
    answer = await fresh.post("/console/login/dev", data={"user": "bob", "csrf_token": ""})
    assert answer.status_code == 403 and "__Host-portcullis_console=" not in str(answer.headers)


async def _every_page(client: httpx2.AsyncClient, approval_id: str) -> list[httpx2.Response]:
    login = await client.get("/console/login")
    static = re.findall(r'(?:href|src)="(/console/static/[^"]+)"', login.text)
    assert len(static) == 3
    pages = [login, *[await client.get(url) for url in static]]
    await dev_login(client, "bob", "finance-approver")
    for path in ("/console", "/console/approvals", "/console/approvals/list", f"/console/approvals/{approval_id}",
                 "/console/nowhere", "/console/static/0/console.css"):
        pages.append(await client.get(path))
    pages.append(await client.put("/console/approvals"))
    pages.append(await client.post("/console/approvals/" + approval_id + "/approve", data={}))
    return pages


async def test_every_console_response_carries_the_csp_and_the_other_headers(harness: Harness) -> None:
    responses = await _every_page(harness.client, await _propose(harness))
    assert {r.status_code for r in responses} >= {200, 303, 403, 404, 405}
    for response in responses:
        assert response.headers["content-security-policy"] == CSP, response.url
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"
        if "/static/" in str(response.url) and response.status_code == 200:
            assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
            suffix = str(response.url).rsplit(".", 1)[1]
            assert response.headers["content-type"].startswith({"js": "text/javascript", "css": "text/css"}[suffix])
        else:
            assert response.headers.get("cache-control", "no-store") == "no-store"
        if response.headers.get("content-type", "").startswith("text/html"):
            assert "<script>" not in response.text and " style=" not in response.text
            assert not re.search(r"\son[a-z]+=", response.text)


async def test_an_expired_session_sends_htmx_polls_to_the_login_page(harness: Harness) -> None:
    poll = await harness.client.get("/console/approvals/list", headers={"hx-request": "true"})
    assert poll.status_code == 401 and poll.headers["hx-redirect"] == "/console/login"


async def test_the_detail_page_polls_its_state_with_the_same_authorization(harness: Harness) -> None:
    approval_id = await _propose(harness, required=2)
    await dev_login(harness.client, "bob", "finance-approver")
    page = (await harness.client.get(f"/console/approvals/{approval_id}")).text
    assert f'hx-get="/console/approvals/{approval_id}/state" hx-trigger="every 2s"' in page
    carol = harness.new_client()
    await dev_login(carol, "carol", "finance-approver")
    detail = await carol.get(f"/console/approvals/{approval_id}")
    await carol.post(f"/console/approvals/{approval_id}/approve", data={"csrf_token": csrf_of(detail.text)})
    state = await harness.client.get(f"/console/approvals/{approval_id}/state", headers={"hx-request": "true"})
    assert state.status_code == 200 and "<html" not in state.text and "1 of 2 required" in state.text
    eve = harness.new_client()
    await dev_login(eve, "eve", "intern")
    refused = await eve.get(f"/console/approvals/{approval_id}/state")
    assert refused.status_code == 404 and "required" not in refused.text
