"""The test OpenID Provider (tests/support/oidc_provider.py) is strict where the console must be: a login
through its form in the real browser yields a code that only the PKCE verifier redeems, once, for an ID
token with the chosen claims; a request without S256 PKCE or with an unregistered redirect is refused."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import jwt
import pytest

from tests.browser.browsing import Shots, Site
from tests.browser.conftest import Tab
from tests.support.oidc_provider import ProviderProcess

CLIENT = "browser-test-client"


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory, site: Site) -> Iterator[ProviderProcess]:
    site.page("/callback", "<!doctype html><title>back</title><p>back at the client</p>")
    started = ProviderProcess(tmp_path_factory.mktemp("provider"), client_id=CLIENT,
                           redirect_uris=[site.base + "/callback"],
                           users={"bob": {"roles": ["finance-approver"], "principal_type": "person",
                                          "name": "Bob <b>Approver</b>"}})
    yield started
    started.stop()


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _authorize(provider: ProviderProcess, redirect_uri: str, **overrides: str) -> str:
    params = {"response_type": "code", "client_id": CLIENT, "redirect_uri": redirect_uri, "scope": "openid profile",
              "state": "st-" + secrets.token_hex(4), "nonce": "n-" + secrets.token_hex(4), **overrides}
    return f"{provider.issuer}/authorize?{urlencode({k: v for k, v in params.items() if v})}"


def _log_in(tab: Tab, provider: ProviderProcess, url: str, password: str | None = None) -> dict[str, list[str]]:
    tab.page.goto(url)
    tab.page.get_by_label("Username").fill("bob")
    tab.page.get_by_label("Password").fill(password or provider.passwords["bob"])
    tab.page.get_by_role("button", name="Sign in").click()
    return parse_qs(urlsplit(tab.page.url).query)


def _redeem(provider: ProviderProcess, code: str, verifier: str, redirect_uri: str) -> httpx2.Response:
    return httpx2.post(f"{provider.issuer}/token", timeout=15, data={
        "grant_type": "authorization_code", "code": code, "code_verifier": verifier, "client_id": CLIENT,
        "redirect_uri": redirect_uri})


def test_a_form_login_yields_a_code_that_only_its_verifier_redeems_once(
        provider: ProviderProcess, site: Site, tab: Tab, shots: Shots) -> None:
    """Wrong password: the form again. Right one: back at the client with code, state and iss; the code
    with the verifier gives an ID token signed by the published key with the user's claims and the nonce."""
    redirect = site.base + "/callback"
    verifier, challenge = _pkce()
    url = _authorize(provider, redirect, code_challenge=challenge, code_challenge_method="S256", state="s1",
                     nonce="n1")
    tab.page.goto(url)
    shots.shoot(tab.page, "provider-login-form")
    assert _log_in(tab, provider, url, password="wrong") == {}
    assert tab.page.get_by_role("alert").inner_text() == "Wrong username or password."
    back = _log_in(tab, provider, url)
    assert tab.page.url.startswith(redirect + "?") and back["state"] == ["s1"] and back["iss"] == [provider.issuer]
    assert not tab.context.cookies()  # the provider shares the console's host: it must set no cookie

    assert _redeem(provider, back["code"][0], _pkce()[0], redirect).json()["error"] == "invalid_grant"
    assert _redeem(provider, back["code"][0], verifier, redirect).status_code == 400  # a refused try used it up
    again = _log_in(tab, provider, _authorize(provider, redirect, code_challenge=challenge,
                                              code_challenge_method="S256", nonce="n2"))
    granted = _redeem(provider, again["code"][0], verifier, redirect)
    assert granted.status_code == 200, granted.text
    keys = httpx2.get(provider.issuer + "/.well-known/openid-configuration", timeout=15).json()["jwks_uri"]
    key = jwt.PyJWK(httpx2.get(keys, timeout=15).json()["keys"][0])
    claims = jwt.decode(granted.json()["id_token"], key, algorithms=["ES256"], audience=CLIENT,
                        issuer=provider.issuer)
    assert (claims["sub"], claims["nonce"], claims["roles"]) == ("bob", "n2", ["finance-approver"])
    assert _redeem(provider, again["code"][0], verifier, redirect).json()["error"] == "invalid_grant"  # once
    assert [e["event"] for e in provider.events()][-3:] == ["login", "token", "token_refused"]


@pytest.mark.parametrize("pkce", [{}, {"code_challenge": "x" * 43, "code_challenge_method": "plain"},
                                  {"code_challenge": "short", "code_challenge_method": "S256"}])
def test_an_authorization_request_without_s256_pkce_is_refused(
        provider: ProviderProcess, site: Site, tab: Tab, pkce: dict[str, str]) -> None:
    tab.page.goto(_authorize(provider, site.base + "/callback", state="s2", **pkce))
    back = parse_qs(urlsplit(tab.page.url).query)
    assert back["error"] == ["invalid_request"] and back["state"] == ["s2"] and "code" not in back


def test_an_unregistered_redirect_gets_an_error_page_not_a_redirect(
        provider: ProviderProcess, site: Site, tab: Tab) -> None:
    _, challenge = _pkce()
    for redirect in (site.base + "/callback/", site.base.replace("127.0.0.1", "localhost") + "/callback"):
        answer = tab.page.goto(_authorize(provider, redirect, code_challenge=challenge, code_challenge_method="S256"))
        assert answer is not None and answer.status == 400 and tab.page.url.startswith(provider.issuer)
    refused = [e["reason"] for e in provider.events("authorize_refused")]
    assert refused[-2:] == ["redirect_uri is not registered for this client"] * 2
