"""The test OpenID Provider in-process (the ASGI app tests/console/conftest.py uses) is as strict as the
process the browser tests drive (tests/browser/test_oidc_provider.py): no code without S256 PKCE, a state
and the exact registered redirect URI; a code once, only with its verifier."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest

from tests.console.conftest import CLIENT_ID, OP, REDIRECT, Harness


def _authorize(**overrides: str) -> str:
    params = {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": REDIRECT, "scope": "openid",
              "state": "s-1", "nonce": "n-1", "code_challenge_method": "S256", "code_challenge": "c" * 43,
              **overrides}
    return "/authorize?" + urlencode({k: v for k, v in params.items() if v})


@pytest.mark.parametrize("overrides", [{"code_challenge_method": "plain"}, {"code_challenge": ""},
                                       {"code_challenge": "short"}, {"state": ""}, {"scope": "profile"},
                                       {"response_type": "token"}])
async def test_an_authorization_request_without_its_parts_is_sent_back_with_an_error(
        harness: Harness, overrides: dict[str, str]) -> None:
    answer = await harness.op_client.get(_authorize(**overrides))
    assert answer.status_code == 302
    back = parse_qs(urlsplit(answer.headers["location"]).query)
    assert back["error"] == ["invalid_request"] and "code" not in back
    assert answer.headers["location"].startswith(REDIRECT + "?")


@pytest.mark.parametrize("overrides", [{"redirect_uri": REDIRECT + "/"}, {"redirect_uri": "https://evil.test/cb"},
                                       {"client_id": "someone-else"}])
async def test_an_unregistered_client_or_redirect_gets_an_error_page_not_a_redirect(
        harness: Harness, overrides: dict[str, str]) -> None:
    answer = await harness.op_client.get(_authorize(**overrides))
    assert answer.status_code == 400 and "location" not in answer.headers
    assert harness.op.events[-1]["event"] == "authorize_refused"


async def test_a_code_is_redeemed_once_and_only_with_its_verifier(harness: Harness) -> None:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    granted = await harness.op_grant(OP + _authorize(code_challenge=challenge), "carol", "finance-approver")
    code = parse_qs(urlsplit(granted.headers["location"]).query)["code"][0]
    form = {"grant_type": "authorization_code", "code": code, "client_id": CLIENT_ID, "redirect_uri": REDIRECT}

    async def redeem(with_verifier: str) -> httpx2.Response:
        return await harness.op_client.post("/token", data={**form, "code_verifier": with_verifier})

    assert (await redeem(secrets.token_urlsafe(48))).json()["error"] == "invalid_grant"
    assert (await redeem(verifier)).status_code == 400  # the refused try used it up
    granted = await harness.op_grant(OP + _authorize(code_challenge=challenge), "carol", "finance-approver")
    form["code"] = parse_qs(urlsplit(granted.headers["location"]).query)["code"][0]
    answer = await redeem(verifier)
    assert answer.status_code == 200 and re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+", answer.json()["id_token"])
    assert (await redeem(verifier)).json()["error"] == "invalid_grant"  # once
    assert [e["event"] for e in harness.op.events][-2:] == ["token", "token_refused"]
    assert "set-cookie" not in granted.headers
