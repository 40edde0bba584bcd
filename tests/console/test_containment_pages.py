"""Containment pages: kill switches set (with a confirmation step) and lifted through the /kill-switches
API's service, policy rollback (with a confirmation step) through the /policy API's reloader, both
landing in the store and the audit trail; authorization per page and action; CSRF on every POST;
hostile strings inert and visible."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from portcullis.policy import policy_set
from tests.console.conftest import csrf_of, dev_login
from tests.console.ops import GET_INVOICE, HOSTILE, Ops, ops_console


@pytest.fixture
async def ops(tmp_path: Path) -> AsyncIterator[Ops]:
    async for value in ops_console(tmp_path):
        yield value


async def _set_switch(ops: Ops, target: str, reason: str) -> str:
    page = await ops.client.get("/console/containment")
    token = csrf_of(page.text)
    review = await ops.client.post("/console/containment/kill-switches/confirm",
                                   data={"csrf_token": token, "kind": "tool", "target": target, "reason": reason})
    assert review.status_code == 200 and 'id="kill-set-confirm"' in review.text
    assert list(ops.kills.store.active(time.time())) == []  # the review changed nothing
    done = await ops.client.post("/console/containment/kill-switches",
                                 data={"csrf_token": token, "kind": "tool", "target": target, "reason": reason,
                                       "confirm": "yes"})
    assert done.status_code == 303 and done.headers["location"] == "/console/containment?done=set"
    return token


async def test_a_responder_sets_and_lifts_a_kill_switch_and_both_are_audited(ops: Ops) -> None:
    await dev_login(ops.client, "rita", "oncall")
    token = await _set_switch(ops, "billing.process_refund", "refund fraud wave")
    [switch] = list(ops.kills.store.active(time.time()))
    assert (switch.kind, switch.target, switch.reason) == ("tool", "billing.process_refund", "refund fraud wave")
    assert switch.actor == "dev:rita"  # the API's actor_of: the session's person, never a form field
    assert ops.kills.snapshot.for_call("billing.process_refund", "billing", _bot(), 0) is not None  # in effect
    page = (await ops.client.get("/console/containment?done=set")).text
    assert f'data-switch-id="{switch.id}"' in page and "refund fraud wave" in page
    lifted = await ops.client.post(f"/console/containment/kill-switches/{switch.id}/lift",
                                   data={"csrf_token": token, "reason": "contained"})
    assert lifted.status_code == 303 and list(ops.kills.store.active(time.time())) == []
    events = [(r.fields["event"], r.fields["switch_id"], r.fields["actor"], r.fields["reason"])
              for r in reversed(await ops.records("kill_switch"))]
    assert events == [("set", switch.id, "dev:rita", "refund fraud wave"), ("lift", switch.id, "dev:rita", "contained")]


def _bot() -> object:
    from portcullis.identity.principal import Principal

    return Principal(client_id="billing-bot", auth_method="dev", issuer="dev", agent_id="billing-bot")


async def test_setting_needs_the_confirmation_step(ops: Ops) -> None:
    await dev_login(ops.client, "rita", "oncall")
    token = csrf_of((await ops.client.get("/console/containment")).text)
    skipped = await ops.client.post("/console/containment/kill-switches",
                                    data={"csrf_token": token, "kind": "tool", "target": "x", "reason": "r"})
    assert skipped.status_code == 400 and "confirm the switch first" in skipped.text
    assert list(ops.kills.store.active(time.time())) == []


async def test_people_without_the_role_see_nothing_and_cannot_act_by_url(ops: Ops) -> None:
    await dev_login(ops.client, "rita", "oncall")
    await _set_switch(ops, "billing.process_refund", "secret incident reason")
    [switch] = list(ops.kills.store.active(time.time()))
    other = ops.new_client()
    await dev_login(other, "eve", "finance-approver")
    token = csrf_of((await other.get("/console/approvals")).text)
    for path in ("/console/containment", "/console/containment/policy",
                 f"/console/containment/policy/diff?from={ops.reloader.version}&to={ops.reloader.version}"):
        page = await other.get(path)
        assert page.status_code == 403 and "secret incident reason" not in page.text and switch.id not in page.text
    for path, data in ((f"/console/containment/kill-switches/{switch.id}/lift", {"reason": "x"}),
                       ("/console/containment/kill-switches", {"kind": "tool", "target": "y", "reason": "r",
                                                               "confirm": "yes"}),
                       ("/console/containment/kill-switches/confirm", {"kind": "tool", "target": "y", "reason": "r"}),
                       ("/console/containment/policy/rollback/confirm", {"version": ops.reloader.version}),
                       ("/console/containment/policy/rollback", {"version": ops.reloader.version, "confirm": "yes"})):
        refused = await other.post(path, data={"csrf_token": token, **data})
        assert refused.status_code == 403, path
    assert [s.id for s in list(ops.kills.store.active(time.time()))] == [switch.id]
    # an operator is not a responder: the kill switches are not theirs, the policy is
    operator = ops.new_client()
    await dev_login(operator, "olga", "platform")
    assert (await operator.get("/console/containment")).headers["location"] == "/console/containment/policy"
    otoken = csrf_of((await operator.get("/console/containment/policy")).text)
    refused = await operator.post(f"/console/containment/kill-switches/{switch.id}/lift",
                                  data={"csrf_token": otoken, "reason": "x"})
    assert refused.status_code == 403 and list(ops.kills.store.active(time.time())) != []


async def test_every_post_needs_the_csrf_token_and_a_same_origin_request(ops: Ops) -> None:
    await dev_login(ops.client, "boss", "oncall,platform")
    await _set_switch(ops, "billing.process_refund", "r")
    [switch] = list(ops.kills.store.active(time.time()))
    token = csrf_of((await ops.client.get("/console/containment")).text)
    posts = ((f"/console/containment/kill-switches/{switch.id}/lift", {"reason": "x"}),
             ("/console/containment/kill-switches", {"kind": "tool", "target": "y", "reason": "r", "confirm": "yes"}),
             ("/console/containment/kill-switches/confirm", {"kind": "tool", "target": "y", "reason": "r"}),
             ("/console/containment/policy/rollback/confirm", {"version": ops.reloader.version}),
             ("/console/containment/policy/rollback", {"version": ops.reloader.version, "confirm": "yes"}))
    before = ops.reloader.version
    for path, data in posts:
        assert (await ops.client.post(path, data=data)).status_code == 403, path
        assert (await ops.client.post(path, data={**data, "csrf_token": "x" * 43})).status_code == 403, path
        cross = await ops.client.post(path, data={**data, "csrf_token": token},
                                      headers={"origin": "https://evil.example", "sec-fetch-site": "cross-site"})
        assert cross.status_code in (403, 421), path
    assert [s.id for s in list(ops.kills.store.active(time.time()))] == [switch.id] and ops.reloader.version == before


async def test_hostile_strings_in_a_switch_render_inert_and_visible(ops: Ops) -> None:
    await dev_login(ops.client, "rita", "oncall")
    token = csrf_of((await ops.client.get("/console/containment")).text)
    # the kill switch model refuses bidi/zero-width characters in a target or reason (400, nothing set)
    refused = await ops.client.post("/console/containment/kill-switches/confirm",
                                    data={"csrf_token": token, "kind": "tool", "target": HOSTILE, "reason": "r"})
    assert refused.status_code == 400 and "<script>alert(1)" not in refused.text
    assert list(ops.kills.store.active(time.time())) == []
    markup = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    review = await ops.client.post("/console/containment/kill-switches/confirm",
                                   data={"csrf_token": token, "kind": "tool", "target": markup, "reason": markup})
    assert markup not in review.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in review.text
    await _set_switch(ops, markup, markup)
    page = (await ops.client.get("/console/containment")).text
    assert markup not in page and "onerror=alert(2)&gt;" in page and "<script>alert" not in page


async def test_an_operator_diffs_and_rolls_back_a_policy_version_and_it_is_audited(ops: Ops) -> None:
    start = ops.reloader.version
    changed = dict(ops.files)
    changed[GET_INVOICE] = changed[GET_INVOICE].replace('"issuer:dev/agent:billing-bot", ', "")
    changed = {k: v for k, v in changed.items() if not k.startswith("policy/fixtures/")}
    applied = await ops.reloader.apply(changed, "ci", "tighten get_invoice")
    assert applied["status"] == "applied"
    await dev_login(ops.client, "olga", "platform")
    page = (await ops.client.get("/console/containment/policy")).text
    assert f'data-version="{start}"' in page and "tighten get_invoice" in page
    diff = (await ops.client.get(f"/console/containment/policy/diff?from={start}&to={applied['version']}")).text
    assert f"a/{GET_INVOICE}" in diff and 'class="del"' in diff and "issuer:dev/agent:billing-bot" in diff
    token = csrf_of(page)
    review = await ops.client.post("/console/containment/policy/rollback/confirm",
                                   data={"csrf_token": token, "version": start})
    assert review.status_code == 200 and 'id="rollback-confirm"' in review.text
    assert ops.reloader.version == applied["version"]  # the review changed nothing
    done = await ops.client.post("/console/containment/policy/rollback",
                                 data={"csrf_token": token, "version": start, "confirm": "yes",
                                       "message": "back out " + HOSTILE})
    assert done.status_code == 303 and ops.reloader.version == start
    assert policy_set.content_id(ops.files) == start
    [record, *_] = await ops.records("policy_version")
    assert (record.fields["action"], record.fields["version"]) == ("rolled_back", start)
    assert record.fields["author"] == "olga"
    ops.metrics.shadow_version("agree")
    ops.metrics.shadow_version("disagree")
    after = (await ops.client.get("/console/containment/policy?done=rollback")).text
    assert "<td>agree</td><td class=\"num\">1</td>" in after and "<td>disagree</td>" in after
    assert "Rolled back." in after and "<script>alert(1)" not in after
    # the reloader stores a message without control/format characters (clean_text); the markup stays inert
    assert "back out &lt;script&gt;alert(1)&lt;/script&gt;gnp.exe&lt;img" in after


async def test_a_rollback_the_reloader_refuses_is_shown_and_changes_nothing(ops: Ops) -> None:
    await dev_login(ops.client, "olga", "platform")
    token = csrf_of((await ops.client.get("/console/containment/policy")).text)
    unknown = await ops.client.post("/console/containment/policy/rollback",
                                    data={"csrf_token": token, "version": "ps-" + "0" * 64, "confirm": "yes"})
    assert unknown.status_code == 422 and "unknown policy version" in unknown.text


async def test_recent_alerts_are_listed_inert_and_visible_and_policy_is_for_operators(ops: Ops) -> None:
    await ops.writer.record("alert", "alert-1", {"rule": "denied_burst", "key_text": "agent " + HOSTILE,
                                                 "observed": 40, "threshold": 10, "baseline": 2.5,
                                                 "containment": {"kind": "agent", "mode": "proposed"}})
    await dev_login(ops.client, "rita", "oncall")
    page = (await ops.client.get("/console/containment")).text
    assert 'id="alerts"' in page and "denied_burst" in page and "?id=alert-1" in page
    assert "<script>alert(1)" not in page and r"\u{202E}" in page and r"\u{200B}" in page
    assert 'id="policy-link"' not in page
    assert (await ops.client.get("/console/containment/policy")).status_code == 403  # a responder only


async def test_without_the_services_the_pages_say_unavailable(tmp_path: Path) -> None:
    """A console whose kill switch, policy and audit services are absent: 503 pages, never a crash."""
    import httpx2

    from portcullis.config.console import ConsoleConfig
    from portcullis.console.build import build_console
    from portcullis.console.services import ConsoleServices
    from portcullis.console.store import MemoryConsoleStore
    from portcullis.identity.config import ClaimMap
    from portcullis.transport.admin import AdminApp
    from portcullis.transport.origin_guard import OriginGuard
    from tests.console.conftest import ADMIN, ORIGIN, Revocations, issuer_config

    services = ConsoleServices(approvals=None, revocations=Revocations(), responders=("role:oncall",),  # type: ignore[arg-type]
                               operators=("role:oncall",))
    console = build_console(ConsoleConfig.model_validate({"enabled": True, "dev_login": True}), services,
                            store=MemoryConsoleStore(), issuers=[issuer_config()], caches={}, claim_map=ClaimMap(),
                            origin=tmp_path / "gateway.yaml")
    admin = AdminApp(metrics=lambda: (b"", "text/plain"), readiness=lambda: (True, {}),
                     guard=OriginGuard(("127.0.0.1:*",), ("https://127.0.0.1:*",)), console=console)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=admin), base_url=ADMIN,
                                  headers={"origin": ORIGIN, "sec-fetch-site": "same-origin"}) as client:
        await dev_login(client, "rita", "oncall")
        page = await client.get("/console/containment")
        assert page.status_code == 503
        token = csrf_of(page.text)
        assert (await client.get("/console/containment/policy")).status_code == 503
        for path in ("/console/containment/kill-switches", "/console/containment/kill-switches/confirm",
                     "/console/containment/policy/rollback", "/console/containment/policy/rollback/confirm"):
            answer = await client.post(path, data={"csrf_token": token, "confirm": "yes", "kind": "tool",
                                                   "target": "x", "reason": "r", "version": "ps-1"})
            assert answer.status_code == 503, path
        assert (await client.get("/console/audit?tool=x")).status_code == 503
        assert 'id="live-problem"' in (await client.get("/console/live")).text
