"""Helpers of the browser tests: the system Chromium, screenshots kept as artifacts, a watch on what a page
does (requests, dialogs, Content-Security-Policy violations, script errors), the agent's async calls from
the synchronous Playwright tests, and a site of another origin (a hostile page)."""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from tests.e2e.harness import REPO

T = TypeVar("T")
CHROMIUM = os.environ.get("PORTCULLIS_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("PORTCULLIS_TEST_ARTIFACTS", REPO / "test-artifacts")) / "console"
TIMEOUT_MS = 30_000  # every Playwright wait: generous, the machine is shared and loaded


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Shots:
    """Full-page PNG screenshots under ``test-artifacts/console/<module>/`` (one per page a test shows)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("*.png"):
            old.unlink()

    def shoot(self, page: Any, name: str) -> Path:
        path = self.directory / (re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") + ".png")
        page.screenshot(path=str(path), full_page=True)
        return path


class Watch:
    """What the pages of one browser context did: every request, every dialog (dismissed), every CSP
    violation Chromium reports, every uncaught script error."""

    def __init__(self, context: Any) -> None:
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.csp_violations: list[str] = []
        self.errors: list[str] = []
        context.on("request", lambda request: self.requests.append(request.url))
        context.on("dialog", self._dialog)
        context.on("console", self._console)
        context.on("weberror", lambda error: self.errors.append(str(error.error)))

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            self.csp_violations.append(message.text)

    def origins(self) -> set[str]:
        return {origin(url) for url in self.requests if not url.startswith(("data:", "about:"))}

    def assert_inert(self, page: Any) -> None:
        """No script of the page's content ran: no dialog, no ``window.__pwned``, nothing the CSP had to
        block (an escaping bug the CSP caught is still an escaping bug), no script error."""
        assert page.evaluate("typeof window.__pwned") == "undefined", "hostile script ran"
        assert not self.dialogs, self.dialogs
        assert not self.csp_violations, self.csp_violations
        assert not self.errors, self.errors


def run_async(make: Callable[[], Awaitable[T]], timeout: float = 120) -> T:
    """Run a coroutine to completion on a thread of its own (Playwright's sync API owns this thread's loop)."""
    async def main() -> T:
        return await make()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result(timeout)


class Site:
    """A plain HTTP server in a thread serving pages set by the test: another origin (another port, or
    ``localhost`` for another site) than the console's, e.g. a hostile page."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        pages: dict[str, bytes] = {}
        self._pages = pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = pages.get(urlsplit(self.path).path)
                self.send_response(200 if body is not None else 404)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def page(self, path: str, html: str) -> str:
        self._pages[path] = html.encode()
        return self.base + path

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
