"""Console login: the OIDC code flow with PKCE against the test provider, state and nonce once and bound to
the browser, ID token checks (issuer, audience, algorithm, signature, expiry, nonce), revocation, session
fixation, logout, and the development login."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from portcullis.console.sessions import LOGIN_COOKIE, SESSION_COOKIE
from tests.console.conftest import ADMIN, CLIENT_ID, Harness, csrf_of, dev_login, oidc_login


def _cookie(response: httpx2.Response, name: str) -> str:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(name + "="):
            return header
    raise AssertionError(f"no {name} cookie set")


async def _logged_in(client: httpx2.AsyncClient) -> bool:
    page = await client.get("/console/approvals")
    return page.status_code == 200 and 'id="logout"' in page.text


async def test_oidc_login_makes_a_session_with_the_bearer_claim_mapping(harness: Harness) -> None:
    client = harness.client
    assert (await client.get("/console/approvals")).headers["location"] == "/console/login"
    answer = await oidc_login(client, harness, "carol", "finance-approver")
    assert answer.status_code == 200
    assert 'http-equiv="refresh" content="0;url=/console/approvals"' in answer.text
    session = _cookie(answer, SESSION_COOKIE)
    for attribute in ("HttpOnly", "Path=/", "SameSite=strict", "Secure"):
        assert attribute in session
    assert "Domain" not in session and "Max-Age" not in session
    assert "Max-Age=0" in _cookie(answer, LOGIN_COOKIE) or 'max-age=0' in _cookie(answer, LOGIN_COOKIE).lower()
    page = await client.get("/console/approvals")
    assert page.status_code == 200 and '<span id="who">carol</span>' in page.text
    assert "development login" not in page.text.split("<main")[1]
    # the principal: the corp issuer's person with the role from the ID token
    record = next(v for k, v in harness.store._records.items() if k.startswith("session:"))
    assert '"issuer_name": "corp"' in record[1] and '"person": true' in record[1]
    assert '"finance-approver"' in record[1]


async def test_the_authorization_request_uses_pkce_s256_state_and_nonce(harness: Harness) -> None:
    await harness.client.get("/console/login")
    start = await harness.client.get("/console/login/oidc")
    query = parse_qs(urlsplit(start.headers["location"]).query)
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert len(query["state"][0]) >= 43 and len(query["nonce"][0]) >= 43
    assert query["redirect_uri"] == [f"{ADMIN}/console/oidc/callback"] and query["response_type"] == ["code"]
    assert "openid" in query["scope"][0].split()


async def _callback_url(harness: Harness, client: httpx2.AsyncClient, user: str = "carol") -> str:
    await client.get("/console/login")
    start = await client.get("/console/login/oidc")
    granted = await harness.op_grant(start.headers["location"], user, "finance-approver")
    return str(granted.headers["location"]).removeprefix(ADMIN)


async def test_state_is_used_once(harness: Harness) -> None:
    pre = (await harness.client.get("/console/login")).cookies.get(LOGIN_COOKIE)
    callback = await _callback_url(harness, harness.client)
    assert (await harness.client.get(callback)).status_code == 200
    replayer = harness.new_client()  # the same browser's pre-login id and the same callback, again
    replayer.cookies.set(LOGIN_COOKIE, pre or "", domain="127.0.0.1")
    replay = await replayer.get(callback)
    assert replay.status_code == 400 and "did not complete" in replay.text
    assert SESSION_COOKIE + "=" not in "".join(replay.headers.get_list("set-cookie"))
    assert harness.op.token_requests == 1


async def test_state_is_bound_to_the_browser_that_started_the_login(harness: Harness) -> None:
    callback = await _callback_url(harness, harness.client)
    attacker = harness.new_client()  # login CSRF: the victim's browser gets the attacker's callback
    await attacker.get("/console/login")
    answer = await attacker.get(callback)
    assert answer.status_code == 400 and not await _logged_in(attacker)
    assert harness.op.token_requests == 0  # refused before the code was ever exchanged


async def test_pkce_verifier_is_checked_by_the_provider(harness: Harness) -> None:
    callback = await _callback_url(harness, harness.client)
    for code in harness.op.codes.values():
        code.pending.challenge = "A" * 43  # the code was issued for another challenge
    answer = await harness.client.get(callback)
    assert answer.status_code == 401 and not await _logged_in(harness.client)


@pytest.mark.parametrize(("override", "why"), [
    ({"iss": "https://evil.test"}, "wrong issuer"),
    ({"aud": "someone-else"}, "wrong audience"),
    ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "expired"),
    ({"iat": int(time.time()) + 3600}, "issued in the future"),
    ({"nonce": "not-the-nonce"}, "wrong nonce"),
    ({"nonce": None}, "no nonce"),
    ({"azp": "another-client"}, "wrong azp"),
    ({"sub": None}, "no subject"),
])
async def test_a_bad_id_token_is_refused(harness: Harness, override: dict[str, Any], why: str) -> None:
    harness.op.claims_override = override
    answer = await oidc_login(harness.client, harness, "carol", "finance-approver")
    assert answer.status_code == 401, why
    assert "did not complete" in answer.text and not await _logged_in(harness.client)


async def test_a_token_signed_by_another_key_or_algorithm_is_refused(harness: Harness) -> None:
    harness.op.sign_with = ec.generate_private_key(ec.SECP256R1())
    answer = await oidc_login(harness.client, harness, "carol")
    assert answer.status_code == 401
    harness.op.sign_with, harness.op.alg = ec.generate_private_key(ec.SECP384R1()), "ES384"  # not pinned
    answer = await oidc_login(harness.client, harness, "carol")
    assert answer.status_code == 401
    harness.op.sign_with, harness.op.alg = b"k" * 32, "HS256"
    answer = await oidc_login(harness.client, harness, "carol")
    assert answer.status_code == 401 and not await _logged_in(harness.client)


async def test_revoked_credentials_cannot_log_in_and_sessions_end_on_revocation(harness: Harness) -> None:
    harness.revocations.revoked.add(CLIENT_ID)  # the client id the claim mapping reads (azp here)
    answer = await oidc_login(harness.client, harness, "carol")
    assert answer.status_code == 401 and not await _logged_in(harness.client)
    harness.revocations.revoked.clear()
    await oidc_login(harness.client, harness, "carol")
    assert await _logged_in(harness.client)
    record = json.loads(next(v for k, v in harness.store._records.items() if k.startswith("session:"))[1])
    harness.revocations.revoked.add(record["jti"])  # the ID token's id
    assert not await _logged_in(harness.client)
    harness.revocations.revoked.clear()
    assert not await _logged_in(harness.client)  # that session is gone for good


async def test_login_makes_a_new_session_id_and_discards_any_earlier_one(harness: Harness) -> None:
    attacker = harness.new_client()
    await dev_login(attacker, "mallory")
    planted = attacker.cookies.get(SESSION_COOKIE)
    pre = (await attacker.get("/console/login")).cookies.get(LOGIN_COOKIE) or attacker.cookies.get(LOGIN_COOKIE)
    victim = harness.client
    victim.cookies.set(SESSION_COOKIE, planted or "", domain="127.0.0.1")  # fixation: a known session id
    victim.cookies.set(LOGIN_COOKIE, pre or "", domain="127.0.0.1")  # and a known pre-login id
    await oidc_login(victim, harness, "carol", "finance-approver")
    fresh = victim.cookies.get(SESSION_COOKIE)
    assert fresh and fresh != planted
    assert '<span id="who">carol</span>' in (await victim.get("/console/approvals")).text
    # the planted ids are dead: the attacker is logged out and cannot ride the victim's login
    assert not await _logged_in(attacker)
    attacker.cookies.set(SESSION_COOKIE, fresh, domain="127.0.0.1")  # (only by stealing the new cookie)
    assert not any(fresh in str(record) for record in harness.store._records.values())  # stored hashed


async def test_logout_deletes_the_session(harness: Harness) -> None:
    await dev_login(harness.client, "bob", "finance-approver")
    session = harness.client.cookies.get(SESSION_COOKIE)
    page = await harness.client.get("/console/approvals")
    out = await harness.client.post("/console/logout", data={"csrf_token": csrf_of(page.text)})
    assert out.status_code == 303 and out.headers["location"] == "/console/login"
    other = harness.new_client()
    other.cookies.set(SESSION_COOKIE, session or "", domain="127.0.0.1")
    assert not await _logged_in(other)


async def test_development_login_marks_every_page(harness: Harness) -> None:
    login = await harness.client.get("/console/login")
    assert "development login — not for production" in login.text
    await dev_login(harness.client, "bob", "finance-approver, auditor")
    page = await harness.client.get("/console/approvals")
    assert 'id="dev-banner"' in page.text and "development login — not for production" in page.text
    record = next(v for k, v in harness.store._records.items() if k.startswith("session:"))
    assert '"issuer_name": "dev"' in record[1] and '"auditor"' in record[1] and '"person": true' in record[1]


async def test_development_login_refuses_malformed_claims(harness: Harness) -> None:
    page = await harness.client.get("/console/login")
    answer = await harness.client.post("/console/login/dev", data={"csrf_token": csrf_of(page.text),
                                                                  "user": "bob\u202e", "roles": ""})
    assert answer.status_code == 400 and not await _logged_in(harness.client)
    answer = await harness.client.post("/console/login/dev", data={"csrf_token": csrf_of(page.text), "user": ""})
    assert answer.status_code == 400


async def test_the_login_link_works_without_a_visit_to_the_login_page(harness: Harness) -> None:
    start = await harness.client.get("/console/login/oidc")
    assert start.status_code == 303 and LOGIN_COOKIE in _cookie(start, LOGIN_COOKIE)
    granted = await harness.op_grant(start.headers["location"], "carol", "finance-approver")
    answer = await harness.client.get(str(granted.headers["location"]).removeprefix(ADMIN))
    assert answer.status_code == 200 and await _logged_in(harness.client)


async def test_a_provider_error_or_a_missing_code_ends_the_login(harness: Harness) -> None:
    start = await harness.client.get("/console/login/oidc")
    state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
    answer = await harness.client.get(f"/console/oidc/callback?error=access_denied&state={state}")
    assert answer.status_code == 400 and not await _logged_in(harness.client)
    again = await harness.client.get(f"/console/oidc/callback?code=whatever&state={state}")
    assert again.status_code == 400 and harness.op.token_requests == 0  # the state was used up


async def test_a_discovery_document_for_another_issuer_stops_the_login(harness: Harness) -> None:
    harness.op.issuer = "https://other.test"  # its discovery now names another issuer
    start = await harness.client.get("/console/login/oidc")
    assert start.status_code == 502 and "did not complete" in start.text
