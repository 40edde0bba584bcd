"""Fixtures of the browser tests: Debian's Chromium driven headless by Playwright (one browser per module),
a fresh browser context per person, screenshots kept as artifacts, the test OpenID Provider.

Chromium is installed by scripts/bootstrap.sh (``make test``); Playwright drives it through the driver its
wheel bundles (``executable_path``; no browser download). Locally a machine without it skips these tests and
says why; under CI (``CI`` set) they fail instead, so the browser suite is never skipped silently.
Screenshots: ``test-artifacts/console/<module>/<name>.png`` (``$PORTCULLIS_TEST_ARTIFACTS`` moves the root).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.browser.browsing import ARTIFACTS, CHROMIUM, TIMEOUT_MS, Shots, Site, Watch
from tests.browser.console_pages import log_in
from tests.support.console_stack import Console, start_console


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"the browser tests need {reason} under CI (scripts/bootstrap.sh installs it)")
    pytest.skip(f"{reason} is not available (scripts/bootstrap.sh installs it)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium, launched once per module."""
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, timeout=90_000)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def shots(request: pytest.FixtureRequest) -> Shots:
    return Shots(ARTIFACTS / Path(str(request.module.__file__)).stem)


@dataclass
class Tab:
    """One person's browser: a context of its own (its own cookies), one page, and a watch on both."""

    context: Any
    page: Any
    watch: Watch


@pytest.fixture
def new_tab(browser: Any) -> Iterator[Callable[..., Tab]]:
    """Open a fresh browser context (another person, or the same person before logging in); ``state``: the
    cookies of a browser saved earlier (Playwright's storage state); ``options``: more of Playwright's
    ``new_context`` options (e.g. ``java_script_enabled=False``)."""
    opened: list[Any] = []

    def open_tab(state: Any = None, **options: Any) -> Tab:
        context = browser.new_context(viewport={"width": 1366, "height": 900}, storage_state=state, **options)
        context.set_default_timeout(TIMEOUT_MS)
        context.set_default_navigation_timeout(TIMEOUT_MS)
        opened.append(context)
        watch = Watch(context)
        return Tab(context, context.new_page(), watch)

    yield open_tab
    for context in opened:
        context.close()


@pytest.fixture
def tab(new_tab: Callable[..., Tab]) -> Tab:
    return new_tab()


@pytest.fixture(scope="module")
def _signed_in() -> dict[str, Any]:
    return {}


@pytest.fixture
def as_person(new_tab: Callable[..., Tab], console: Console, _signed_in: dict[str, Any]) -> Callable[[str], Tab]:
    """A browser of ``user``, logged in and on the approval queue. The first time in a module it logs in through
    the provider's form; later it reuses that session's cookies (tests of the login itself use ``log_in``)."""
    def open_as(user: str) -> Tab:
        if user not in _signed_in:
            tab = new_tab()
            log_in(tab, console, user)
            _signed_in[user] = tab.context.storage_state()
            return tab
        tab = new_tab(_signed_in[user])
        tab.page.goto(f"{console.url}/approvals")
        assert tab.page.locator("#who").inner_text() == user
        return tab

    return open_as


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    """Another origin than every server under test (another port on 127.0.0.1)."""
    served = Site()
    yield served
    served.close()


@pytest.fixture(scope="module")
def foreign_site() -> Iterator[Site]:
    """Another site altogether (``localhost``, not ``127.0.0.1``: SameSite cookies stay home)."""
    served = Site(host="localhost")
    yield served
    served.close()


@pytest.fixture(scope="module")
def console(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """The demo gateway with the console on, and the OpenID Provider it logs people in with (per module;
    after the browser, so that a machine without one skips before starting anything)."""
    started = start_console(tmp_path_factory.mktemp("console"))
    yield started
    started.stop()
