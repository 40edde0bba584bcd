"""Streaming as it happens, and cancellation by a caller who goes away (issue 13), end to end.

A real gateway in front of :mod:`tests.e2e.notify_service` over stdio (the SDK client leg) and over
HTTP (a 2026-07-28 upstream: the raw relay leg). The service's ``hold`` calls send their
notifications and then hold the result back: over HTTP until the test releases it, over stdio until
the gateway cancels it. What the service saw is written to a journal file: the test waits for a
line there, never for a length of time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from tests.e2e.audit_load import STORE_FILE, read_chain
from tests.e2e.harness import (
    REPO,
    GatewayProcess,
    free_port,
    manifest_from_live,
    run_cli,
    stop_child,
    wait_port,
    write_deployment,
)
from tests.e2e.notify_service import WORK_TOOL

pytestmark = pytest.mark.timeout(300)
MODERN = "2026-07-28"
SEEN = {"notes.work": "cancelled", "notesh.work": "gone"}  # what each upstream journals when cancelled


class Deployment:
    def __init__(self, gateway: GatewayProcess, upstream_url: str, journal: Path) -> None:
        self.gateway, self.upstream_url, self.journal = gateway, upstream_url, journal

    async def journaled(self, line: str, timeout_s: float = 60.0) -> None:
        """Wait until the service journaled ``line`` (an event it exposes; the bound only fails a broken run)."""
        with anyio.fail_after(timeout_s):
            while line not in (self.journal.read_text().splitlines() if self.journal.exists() else []):
                await anyio.sleep(0.05)

    async def release(self, who: str) -> None:
        """Let the HTTP service's held call of ``who`` send its result."""
        body = {"jsonrpc": "2.0", "id": 1, "method": "test/release", "params": {"who": who}}
        async with httpx2.AsyncClient(timeout=30) as http:
            response = await http.post(self.upstream_url, json=body)
        assert response.status_code == 200

    async def records_of(self, who: str, timeout_s: float = 60.0) -> list[tuple[str, Any]]:
        """(kind, outcome record fields) of the call whose arguments name ``who``, once its outcome is durable."""
        with anyio.fail_after(timeout_s):
            while True:
                records = await read_chain(self.gateway.state_dir / STORE_FILE)
                ids = {r.request_id for r in records if r.kind == "decision"
                       and (r.fields.get("arguments") or {}).get("who") == who}
                mine = [(r.kind, r.fields) for r in records
                        if r.request_id in ids and r.kind in ("decision", "outcome")]
                if any(kind == "outcome" for kind, _ in mine):
                    return mine
                await anyio.sleep(0.05)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Any:
    base = tmp_path_factory.mktemp("cancellation")
    root, journal = base / "deployment", base / "journal.txt"
    http_port = free_port()
    service = subprocess.Popen([sys.executable, "-m", "tests.e2e.notify_service", "http", "--port", str(http_port)],
                               cwd=REPO, env={**os.environ, "NOTIFY_JOURNAL": str(journal)})
    try:
        wait_port(http_port)
        config = {"version": 1, "identity": {"allow_insecure_dev_issuer": True}, "services": {
            "notes": {"transport": "stdio", "command": sys.executable, "env": {"NOTIFY_JOURNAL": str(journal)},
                      "args": ["-m", "tests.e2e.notify_service", "stdio"], "cwd": str(REPO), "timeout_s": 60,
                      "sandbox": {"writable_paths": [str(base)]}},  # the journal it writes
            "notesh": {"transport": "http", "url": f"http://127.0.0.1:{http_port}/mcp", "timeout_s": 60}}}
        write_deployment(root, config, [manifest_from_live("notes", WORK_TOOL),
                                        manifest_from_live("notesh", WORK_TOOL)])
        done = run_cli("pin", str(root))
        assert done.returncode == 0, done.stdout + done.stderr
        with GatewayProcess(root) as process:
            yield Deployment(process, f"http://127.0.0.1:{http_port}/mcp", journal)
            log = process.log()
        assert "Traceback" not in log, log  # no stack trace for a caller who went away
    finally:
        stop_child(service)


def test_progress_reaches_the_caller_before_the_upstream_sends_the_result(deployment: Deployment) -> None:
    """The relay streams: the upstream sends its result only once the caller's SDK client saw the first
    progress (the test releases it then), so a relay that waited for the whole answer could never finish."""
    seen: list[str | None] = []

    async def run() -> Any:
        first = anyio.Event()

        async def progress(value: float, total: float | None, message: str | None) -> None:
            seen.append(message)
            first.set()

        async with anyio.create_task_group() as tg, \
                deployment.gateway.client(mode=MODERN, token=deployment.gateway.token()) as client:
            async def release_after_first() -> None:
                await first.wait()
                await deployment.release("ord")

            tg.start_soon(release_after_first)
            return await client.call_tool("notesh.work", {"who": "ord", "steps": 1, "hold": True},
                                          progress_callback=progress)

    result = anyio.run(run)
    assert result.content[0].text == "ord done" and not result.is_error
    assert seen == ["ord step 0"]


@pytest.mark.parametrize("tool", list(SEEN))
def test_a_caller_who_goes_away_mid_stream_cancels_the_upstream_call(deployment: Deployment, tool: str) -> None:
    """The SDK client (2026-07-28) is cancelled after the first streamed progress and closes its
    connection: the gateway cancels the call (the relay closes its request stream; the SDK client
    sends notifications/cancelled to the stdio child), and the outcome record says the caller did."""
    who = f"gone-{tool.split('.')[0]}"

    async def run() -> list[tuple[str, Any]]:
        first = anyio.Event()

        async def progress(value: float, total: float | None, message: str | None) -> None:
            first.set()

        async with deployment.gateway.client(mode=MODERN, token=deployment.gateway.token()) as client:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: client.call_tool(tool, {"who": who, "steps": 1, "hold": True},
                                                       progress_callback=progress))
                await first.wait()  # the call is in flight and its answer is an event stream
                tg.cancel_scope.cancel()
        await deployment.journaled(f"{SEEN[tool]} {who}")
        return await deployment.records_of(who)

    records = anyio.run(run)
    assert [(kind, fields.get("outcome")) for kind, fields in records] == [("decision", None),
                                                                           ("outcome", "cancelled")]
    outcome = records[1][1]
    assert outcome["cancelled_by"] == "caller" and outcome["output"]["bytes"] == 0


@pytest.mark.parametrize("tool", list(SEEN))
def test_a_caller_who_goes_away_after_the_result_cancels_nothing(deployment: Deployment, tool: str) -> None:
    who = f"after-{tool.split('.')[0]}"

    async def run() -> list[tuple[str, Any]]:
        async with deployment.gateway.client(mode=MODERN, token=deployment.gateway.token()) as client:
            result = await client.call_tool(tool, {"who": who, "steps": 1}, progress_callback=_ignore)
            assert result.content[0].text == f"{who} done"
        return await deployment.records_of(who)

    records = anyio.run(run)
    assert [(kind, fields.get("outcome")) for kind, fields in records] == [("decision", None), ("outcome", "ok")]
    assert "cancelled_by" not in records[1][1]
    assert f"{SEEN[tool]} {who}" not in (deployment.journal.read_text() if deployment.journal.exists() else "")


async def _ignore(value: float, total: float | None, message: str | None) -> None:
    pass


@pytest.mark.parametrize("mode", ["legacy", MODERN])
@pytest.mark.parametrize("tool", list(SEEN))
def test_notifications_after_the_result_reach_no_one(deployment: Deployment, mode: str, tool: str) -> None:
    """An upstream sends a log message and a progress notification after its result: neither reaches
    the finished answer nor the next caller's call; the relay counts them as ``after_end``."""
    late, nxt = f"late-{mode[:3]}-{tool.split('.')[0]}", f"next-{mode[:3]}-{tool.split('.')[0]}"

    async def call(who: str, user: str, **arguments: Any) -> list[str]:
        seen: list[str] = []

        async def progress(value: float, total: float | None, message: str | None) -> None:
            seen.append(str(message))

        async def log(params: Any) -> None:
            seen.append(str(params.data))

        kwargs: dict[str, Any] = {"logging_callback": log} | ({} if mode == "legacy" else {"log_level": "debug"})
        async with deployment.gateway.client(mode=mode, token=deployment.gateway.token(user=user), **kwargs) as client:
            result = await client.call_tool(tool, {"who": who, "steps": 1, **arguments}, progress_callback=progress)
        assert result.content[0].text == f"{who} done"
        return seen

    async def run() -> tuple[list[str], list[str], list[tuple[str, Any]]]:
        first = await call(late, "alice", late=True)
        second = await call(nxt, "bob")
        return first, second, await deployment.records_of(late)

    first, second, records = anyio.run(run)
    assert first == [f"{late} step 0", f"{late} log 0", f"{late} debug 0"]
    assert second == [f"{nxt} step 0", f"{nxt} log 0", f"{nxt} debug 0"]
    if tool == "notesh.work":  # the relay reads them from the call's own answer, after its response
        assert records[-1][1]["content"]["notifications"]["after_end"] == 2


def test_a_2025_era_caller_who_goes_away_does_not_cancel(deployment: Deployment) -> None:
    """2025-era: a disconnect "SHOULD NOT be interpreted as the client cancelling its request". The
    relayed call keeps its upstream connection; once the test releases it, it ends ``ok``."""
    who = "legacy-gone"

    async def run() -> list[tuple[str, Any]]:
        first = anyio.Event()

        async def progress(value: float, total: float | None, message: str | None) -> None:
            first.set()

        async with deployment.gateway.client(mode="legacy", token=deployment.gateway.token()) as client:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: client.call_tool("notesh.work", {"who": who, "steps": 1, "hold": True},
                                                       progress_callback=progress))
                await first.wait()
                tg.cancel_scope.cancel()
        await deployment.release(who)
        return await deployment.records_of(who)

    records = anyio.run(run)
    assert [(kind, fields.get("outcome")) for kind, fields in records] == [("decision", None), ("outcome", "ok")]
    assert f"gone {who}" not in (deployment.journal.read_text() if deployment.journal.exists() else "")
