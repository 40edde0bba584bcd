"""The console's navigation per role: it offers exactly the pages that person may open (the predicate each
page checks, roles.SECTIONS), pages still refuse by URL, the role lists are matched on every request, and a
revoked credential ends the session."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest

from portcullis.console import roles
from portcullis.console.login import DEV_CLIENT
from portcullis.console.sessions import SESSION_COOKIE
from tests.console.conftest import Harness, csrf_of, dev_login, oidc_login
from tests.console.ops import Ops, ops_console

_NAV = re.compile(r'id="nav-([a-z]+)"')
EVERY = ["approvals", "audit", "containment", "live"]


@pytest.fixture
async def ops(tmp_path: Path) -> AsyncIterator[Ops]:
    async for value in ops_console(tmp_path):
        yield value


def nav_of(page: str) -> list[str]:
    return _NAV.findall(page)


async def _opens(client: httpx2.AsyncClient, href: str) -> bool:
    """Whether ``href`` (after the console's own redirects) shows its page, not a refusal."""
    answer = await client.get(href)
    while answer.status_code == 303:
        answer = await client.get(answer.headers["location"])
    assert answer.status_code in (200, 403), (href, answer.status_code)
    return answer.status_code == 200


@pytest.mark.parametrize(("roles_typed", "shown"), [
    ("finance-approver", ["approvals"]),
    ("", ["approvals"]),
    ("oncall", EVERY),
    ("platform", EVERY),
    ("oncall,platform", EVERY),
])
async def test_the_nav_lists_exactly_the_pages_that_do_not_refuse(ops: Ops, roles_typed: str,
                                                                  shown: list[str]) -> None:
    """Each persona's menu is its allowed sections, and every section's link opens iff it is on the menu."""
    await dev_login(ops.client, "pat", roles_typed)
    assert nav_of((await ops.client.get("/console/approvals")).text) == shown
    for section in roles.SECTIONS:
        assert await _opens(ops.client, section.href) == (section.key in shown), section.key


async def test_a_refused_page_shows_no_more_of_the_menu_than_the_person_may_use(ops: Ops) -> None:
    """The 403 a person without a role gets by URL carries only their own menu."""
    await dev_login(ops.client, "eve", "finance-approver")
    for path in ("/console/audit", "/console/live", "/console/containment", "/console/containment/policy"):
        page = await ops.client.get(path)
        assert page.status_code == 403 and nav_of(page.text) == ["approvals"], path


async def test_an_operator_opening_containment_is_sent_to_the_policy_versions(ops: Ops) -> None:
    """The Containment entry is an operator's too; the kill switches are not theirs."""
    await dev_login(ops.client, "olga", "platform")
    answer = await ops.client.get("/console/containment")
    assert answer.status_code == 303 and answer.headers["location"] == "/console/containment/policy"


@pytest.mark.parametrize("typed", [
    "Oncall", "ONCALL", "oncal", "oncall-x", "on\u200bcall", "oncall\u202e", "role:oncall", "oncall*", "*",
    "<b>oncall</b>", "platform2", "issuer:dev/role:oncall",
])
async def test_near_miss_roles_get_no_section(ops: Ops, typed: str) -> None:
    """A role that only resembles a responder's or operator's is no role: the login is refused or the
    person sees (and opens) only the approvals."""
    page = await ops.client.get("/console/login")
    login = await ops.client.post("/console/login/dev", data={"csrf_token": csrf_of(page.text), "user": "mal",
                                                              "roles": typed})
    assert login.status_code in (200, 400)
    if login.status_code == 400:
        assert ops.client.cookies.get(SESSION_COOKIE) is None
        return
    assert nav_of((await ops.client.get("/console/approvals")).text) == ["approvals"]
    for path in ("/console/audit", "/console/live", "/console/containment", "/console/containment/policy"):
        assert (await ops.client.get(path)).status_code == 403, path


async def test_the_role_lists_are_matched_on_every_request_not_remembered(ops: Ops) -> None:
    """Lists without the person's role take the sections away from a live session at the next page."""
    await dev_login(ops.client, "rita", "oncall")
    assert nav_of((await ops.client.get("/console/approvals")).text) == EVERY
    ops.console.services = dataclasses.replace(ops.console.services, responders=(), operators=())
    assert nav_of((await ops.client.get("/console/approvals")).text) == ["approvals"]
    assert (await ops.client.get("/console/audit")).status_code == 403


async def test_revoking_the_development_client_ends_its_sessions(ops: Ops) -> None:
    """A development session has no token id; its client's revocation ends it on the next request."""
    await dev_login(ops.client, "rita", "oncall")
    assert (await ops.client.get("/console/audit")).status_code == 200
    ops.console.services.revocations.revoked.add(DEV_CLIENT)  # type: ignore[attr-defined]
    answer = await ops.client.get("/console/audit")
    assert answer.status_code == 303 and answer.headers["location"] == "/console/login"
    ops.console.services.revocations.revoked.clear()  # type: ignore[attr-defined]
    assert (await ops.client.get("/console/audit")).status_code == 303  # ended, not suspended


async def test_the_login_log_names_the_token_id_that_ends_one_persons_session(
        harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """The jti in the 'console login' line revokes that session alone; another person's stays."""
    caplog.set_level(logging.INFO, logger="portcullis.console")
    other = harness.new_client()
    await oidc_login(other, harness, "dave")
    await oidc_login(harness.client, harness, "carol")
    logins = [r for r in caplog.records if r.getMessage() == "console login"]
    carol = next(r.fields for r in logins if r.fields["user"].endswith("carol"))  # type: ignore[attr-defined]
    assert isinstance(carol["jti"], str) and carol["jti"]
    harness.revocations.revoked.add(carol["jti"])
    answer = await harness.client.get("/console/approvals")
    assert answer.status_code == 303 and answer.headers["location"] == "/console/login"
    kept = await other.get("/console/approvals")
    assert kept.status_code == 200 and 'id="logout"' in kept.text
    await other.aclose()
