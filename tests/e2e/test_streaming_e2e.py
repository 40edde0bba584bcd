"""Streamed progress and log notifications of a ``tools/call``, end to end (issue 13, streaming).

A real gateway in front of :mod:`tests.e2e.notify_service` over stdio (2025-era handshake, the
SDK client leg) and over HTTP (a 2026-07-28 upstream answering with SSE, the raw relay leg).
Callers: the official SDK client over streamable HTTP in both eras (with a progress callback and
a logging callback), and raw HTTP for the exact JSON answer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from typing import Any

import anyio
import httpx2
import pytest

from tests.e2e.harness import (
    REPO,
    GatewayProcess,
    cli_in_process,
    free_port,
    manifest_from_live,
    stop_child,
    wait_port,
    write_deployment,
)
from tests.e2e.notify_service import CANARY, WORK_TOOL
from tests.security.canaries import leaked

pytestmark = pytest.mark.timeout(300)
MODES = ("legacy", "2026-07-28")
TOOLS = ("notes.work", "notesh.work")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("streaming") / "deployment"
    http_port = free_port()
    service = subprocess.Popen([sys.executable, "-m", "tests.e2e.notify_service", "http", "--port", str(http_port)],
                               cwd=REPO)
    try:
        wait_port(http_port)
        config = {"version": 1, "identity": {"allow_insecure_dev_issuer": True}, "services": {
            "notes": {"transport": "stdio", "command": sys.executable,
                      "args": ["-m", "tests.e2e.notify_service", "stdio"], "cwd": str(REPO), "timeout_s": 20},
            "notesh": {"transport": "http", "url": f"http://127.0.0.1:{http_port}/mcp", "timeout_s": 20}}}
        write_deployment(root, config, [manifest_from_live("notes", WORK_TOOL),
                                        manifest_from_live("notesh", WORK_TOOL)])
        code, output = cli_in_process("pin", str(root))
        assert code == 0, output
        with GatewayProcess(root) as process:
            yield process
    finally:
        stop_child(service)


class Seen:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.events.append(("progress", message))

    async def log(self, params: Any) -> None:
        self.events.append(("log", params.data))


async def _call(gateway: GatewayProcess, mode: str, tool: str, arguments: dict[str, Any], *,
                level: str | None = None, user: str = "alice") -> tuple[Seen, Any]:
    seen = Seen()
    kwargs: dict[str, Any] = {"logging_callback": seen.log}
    if mode != "legacy":
        kwargs["log_level"] = level or "info"
    async with gateway.client(mode=mode, token=gateway.token(user=user), **kwargs) as client:
        if mode == "legacy" and level is not None:
            with warnings.catch_warnings():  # the SDK warns that logging is deprecated as of 2026-07-28
                warnings.simplefilter("ignore")
                await client.set_logging_level(level)
        result = await client.call_tool(tool, arguments, progress_callback=seen.progress)
    return seen, result


def _text(result: Any) -> str:
    return str(result.content[0].text)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tool", TOOLS)
def test_notifications_arrive_in_order_before_the_result(gateway: GatewayProcess, mode: str, tool: str) -> None:
    seen, result = anyio.run(lambda: _call(gateway, mode, tool, {"who": "ann", "steps": 3}, level="info"))
    assert _text(result) == "ann done"
    assert seen.events == [e for i in range(3) for e in (("progress", f"ann step {i}"), ("log", f"ann log {i}"))]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tool", TOOLS)
def test_a_canary_in_a_log_message_is_redacted(gateway: GatewayProcess, mode: str, tool: str) -> None:
    seen, _ = anyio.run(lambda: _call(gateway, mode, tool, {"who": "cy", "steps": 0, "canary": True}))
    logs = [data for kind, data in seen.events if kind == "log"]
    assert len(logs) == 1 and "[REDACTED:" in logs[0] and CANARY not in logs[0]
    assert leaked(json.dumps(seen.events)) == []


@pytest.mark.parametrize("tool", TOOLS)
def test_a_secret_split_across_two_log_messages_is_withheld(gateway: GatewayProcess, tool: str) -> None:
    seen, _ = anyio.run(lambda: _call(gateway, "2026-07-28", tool, {"who": "sp", "steps": 0, "split": True}))
    joined = "".join(str(data) for _, data in seen.events)
    assert CANARY not in joined
    assert len(seen.events) == 1  # the first half passed alone (harmless); the second was withheld


@pytest.mark.parametrize("tool", TOOLS)
def test_notifications_after_the_call_ended_are_dropped(gateway: GatewayProcess, tool: str) -> None:
    async def twice() -> tuple[Seen, Seen]:
        first, _ = await _call(gateway, "2026-07-28", tool, {"who": "la", "steps": 1, "late": True})
        second, _ = await _call(gateway, "2026-07-28", tool, {"who": "nx", "steps": 1})
        return first, second

    first, second = anyio.run(twice)
    assert all("late" not in str(data) for _, data in first.events + second.events)
    assert all("la " not in str(data) for _, data in second.events)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tool", TOOLS)
def test_concurrent_callers_never_see_each_others_notifications(gateway: GatewayProcess, mode: str,
                                                                tool: str) -> None:
    async def both() -> dict[str, Seen]:
        out: dict[str, Seen] = {}

        async def one(who: str) -> None:
            out[who], result = await _call(gateway, mode, tool, {"who": who, "steps": 4}, user=who)
            assert _text(result) == f"{who} done"

        async with anyio.create_task_group() as tg:
            for who in ("alice", "bob"):
                tg.start_soon(one, who)
        return out

    seen = anyio.run(both)
    for who, other in (("alice", "bob"), ("bob", "alice")):
        texts = [str(data) for _, data in seen[who].events]
        assert texts and all(t.startswith(f"{who} ") for t in texts), texts
        assert not any(t.startswith(f"{other} ") for t in texts)
        assert [t for t in texts if "step" in t] == [f"{who} step {i}" for i in range(4)]


@pytest.mark.parametrize("tool", TOOLS)
def test_set_level_of_one_caller_does_not_affect_another(gateway: GatewayProcess, tool: str) -> None:
    async def run() -> tuple[Seen, Seen]:
        quiet, _ = await _call(gateway, "legacy", tool, {"who": "q", "steps": 2}, level="error")
        loud, _ = await _call(gateway, "legacy", tool, {"who": "l", "steps": 2})
        return quiet, loud

    quiet, loud = anyio.run(run)
    assert [kind for kind, _ in quiet.events] == ["progress", "progress"]  # info and debug held back
    logs = [data for kind, data in loud.events if kind == "log"]
    assert logs == ["l log 0", "l debug 0", "l log 1", "l debug 1"]  # no level set: every level


@pytest.mark.parametrize("tool", TOOLS)
def test_a_plain_json_caller_gets_exactly_todays_answer(gateway: GatewayProcess, tool: str) -> None:
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": tool, "arguments": {"who": "pj", "steps": 2},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {}, "progressToken": "t1",
                  "io.modelcontextprotocol/logLevel": "debug"}}}
    headers = {**gateway.auth_headers(), "Content-Type": "application/json", "MCP-Protocol-Version": "2026-07-28",
               "Mcp-Method": "tools/call", "Mcp-Name": tool}
    plain = httpx2.post(gateway.url, json=body, headers={**headers, "Accept": "application/json"}, timeout=30)
    assert plain.status_code == 200 and plain.headers["content-type"] == "application/json"
    answer = plain.json()
    assert answer["id"] == 7 and answer["result"]["content"] == [{"type": "text", "text": "pj done"}]
    streamed = httpx2.post(gateway.url, json=body, headers={**headers, "Accept": "application/json, text/event-stream"},
                           timeout=30)
    assert streamed.headers["content-type"] == "text/event-stream"
    events = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert [e.get("method") for e in events[:-1]] == ["notifications/progress", "notifications/message",
                                                      "notifications/message"] * 2
    assert all(e["params"]["progressToken"] == "t1" for e in events if e.get("method") == "notifications/progress")
    assert events[-1] == answer  # the last event is exactly the JSON answer
