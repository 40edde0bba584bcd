"""Console sessions in Redis (``storage.redis``): two gateway processes of one deployment share them, as
replicas behind one name do. Both listen on 127.0.0.1 (other ports), so the browser sends the console's
``__Host-`` cookie to either: a person logged in through gateway A is logged in on gateway B, a login
started on B completes on A (its redirect URL), and a logout on either ends the session on both.

The Redis is the shared test server: the deployment gets a key prefix of its own (never a flush), whose
keys are deleted afterwards (tests/cluster/conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from tests.browser.browsing import Shots
from tests.browser.conftest import Tab
from tests.browser.console_pages import assert_console_headers, log_in
from tests.cluster.conftest import REDIS_BASE, private_redis_prefix
from tests.e2e.harness import GatewayProcess
from tests.support.console_stack import Console, start_console

SESSION = "__Host-portcullis_console"
RESOURCE = "https://gateway.example/mcp"


@dataclass
class Pair:
    a: Console  # the stack: provider, gateway A (the OIDC redirect URL is A's)
    b: GatewayProcess  # gateway B: the same deployment, another port, its own state directory
    prefix: str  # the deployment's Redis key prefix

    @property
    def b_url(self) -> str:
        return f"{self.b.admin_base}/console"

    def session_keys(self) -> list[str]:
        client = redis.Redis.from_url(REDIS_BASE, socket_timeout=10)
        try:
            return [k.decode() for k in client.scan_iter(match=f"{self.prefix}console:session:*", count=1000)]
        finally:
            client.close()


@pytest.fixture(scope="module")
def pair(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with private_redis_prefix() as prefix:
        env = {"PORTCULLIS_TEST_REDIS_URL": REDIS_BASE}

        def in_redis(config: dict[str, Any]) -> None:
            config["storage"] = {"redis": {"url_ref": "secret://env/PORTCULLIS_TEST_REDIS_URL", "key_prefix": prefix}}
            config["identity"]["resource"] = RESOURCE  # replicas behind one name share the token audience
            config["identity"]["issuers"][0]["audience"] = RESOURCE

        a = start_console(tmp_path_factory.mktemp("console"), edit=in_redis, env=env)
        try:
            b = GatewayProcess(a.gateway.config, env=env)
            try:
                b.wait_ready()
            except BaseException:
                b.stop()
                raise
        except BaseException:
            a.stop()
            raise
        yield Pair(a, b, prefix)
        try:
            b.stop()
        finally:
            a.stop()


@pytest.fixture(scope="module")
def console(pair: Pair) -> Console:
    return pair.a


def _who(tab: Tab, console_url: str) -> str | None:
    """Whom this browser's session is on the console at ``console_url``; None on its login page."""
    tab.page.goto(f"{console_url}/approvals")
    if tab.page.url == f"{console_url}/login":
        return None
    return str(tab.page.locator("#who").inner_text())


def test_a_session_made_on_one_gateway_is_the_same_on_the_other_until_a_logout_there(
        pair: Pair, new_tab: Callable[..., Tab], shots: Shots) -> None:
    assert pair.b.admin_base != pair.a.gateway.admin_base
    before = set(pair.session_keys())
    tab = new_tab()
    assert _who(tab, pair.b_url) is None  # B does not know this browser yet
    log_in(tab, pair.a, "bob")
    cookies = [c for c in tab.context.cookies() if c["name"] == SESSION]
    assert len(cookies) == 1 and cookies[0]["domain"] == "127.0.0.1" and cookies[0]["secure"]
    made = set(pair.session_keys()) - before
    assert len(made) == 1, "the session is not in Redis under the deployment's prefix"
    assert cookies[0]["value"] not in json.dumps(sorted(made))  # the key is the id's hash, not the id

    page = tab.page
    assert_console_headers(page.goto(f"{pair.b_url}/approvals"))
    assert page.locator("#who").inner_text() == "bob"
    shots.shoot(page, "gateway-b-same-session")
    page.locator("#logout").click()  # on B
    page.wait_for_url(f"{pair.b_url}/login")
    assert not set(pair.session_keys()) & made
    assert _who(tab, pair.a.url) is None  # ended on A too
    shots.shoot(page, "gateway-a-after-logout-on-b")


def test_a_login_started_on_one_gateway_completes_on_the_other_and_a_logout_there_ends_it(
        pair: Pair, new_tab: Callable[..., Tab], shots: Shots) -> None:
    """The started login (state, nonce, PKCE verifier) is in Redis too: B's login page sends Carol to the
    provider, which sends her back to A's callback (the registered redirect URL), and A completes it."""
    tab = new_tab()
    log_in(tab, pair.a, "carol", start=f"{pair.b_url}/login")
    assert _who(tab, pair.b_url) == "carol" and _who(tab, pair.a.url) == "carol"
    shots.shoot(tab.page, "gateway-a-login-started-on-b")
    tab.page.goto(f"{pair.a.url}/approvals")
    tab.page.locator("#logout").click()  # on A
    tab.page.wait_for_url(f"{pair.a.url}/login")
    assert _who(tab, pair.b_url) is None
    tab.watch.assert_inert(tab.page)
