"""Server-to-client requests relayed to 2025-era callers, end to end (issue 13, push channel).

A real gateway in front of :mod:`tests.e2e.asking_service` (its tools elicit, sample and ask for
roots mid-call) over stdio (``asker``: every kind allowed) and over HTTP (``askerh``: only form
elicitation allowed), both with ``protocol: legacy`` so the upstream leg is a session. Callers: the
official SDK client in legacy mode (``mode="legacy"``) with callbacks, without them (nothing
declared), and in 2026-07-28 mode (no push channel). The audit trail is read back.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, types

from tests.e2e.asking_service import build_server
from tests.e2e.audit_load import STORE_FILE, read_chain
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

pytestmark = pytest.mark.timeout(300)
REFUSED = "refused -31040 Client request refused"


async def _live_tools() -> list[dict[str, Any]]:
    async with Client(build_server(), cache=None) as client:
        return [t.model_dump(by_alias=True, mode="json", exclude_none=True) for t in (await client.list_tools()).tools]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("client-requests") / "deployment"
    http_port = free_port()
    service = subprocess.Popen([sys.executable, "-m", "tests.e2e.asking_service", "http", "--port", str(http_port)],
                               cwd=REPO)
    try:
        wait_port(http_port)
        config = {"version": 1, "identity": {"allow_insecure_dev_issuer": True}, "services": {
            "asker": {"transport": "stdio", "command": sys.executable, "args": ["-m", "tests.e2e.asking_service",
                                                                                 "stdio"],
                      "cwd": str(REPO), "timeout_s": 20, "protocol": "legacy",
                      "client_requests": {"sampling": True, "elicitation_form": True, "roots": True}},
            "askerh": {"transport": "http", "url": f"http://127.0.0.1:{http_port}/mcp", "timeout_s": 20,
                       "protocol": "legacy", "client_requests": {"elicitation_form": True}}}}
        tools = anyio.run(_live_tools)
        write_deployment(root, config, [manifest_from_live(svc, tool) for svc in ("asker", "askerh")
                                        for tool in tools])
        code, output = cli_in_process("pin", str(root))
        assert code == 0, output
        with GatewayProcess(root) as process:
            yield process
    finally:
        stop_child(service)


class Caller:
    """A 2025-era caller's callbacks: what it was asked, and its answers."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, Any]] = []

    async def elicit(self, ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.asked.append(("elicit", params.message))
        return types.ElicitResult(action="accept", content={"name": "Ada"})

    async def sample(self, ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        self.asked.append(("sample", params.messages[0].content.text))  # type: ignore[union-attr]
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="forty-two"),
                                         model="test-model")

    async def roots(self, ctx: Any) -> types.ListRootsResult:
        self.asked.append(("roots", None))
        return types.ListRootsResult(roots=[types.Root(uri="file:///work/project", name="project")])

    def callbacks(self) -> dict[str, Any]:
        return {"elicitation_callback": self.elicit, "sampling_callback": self.sample,
                "list_roots_callback": self.roots}


async def _call(gateway: GatewayProcess, tool: str, arguments: dict[str, Any], *, mode: str = "legacy",
                caller: Caller | None = None) -> str:
    kwargs = caller.callbacks() if caller is not None else {}
    async with gateway.client(mode=mode, token=gateway.token(), **kwargs) as client:
        result = await client.call_tool(tool, arguments)
    assert not result.is_error, result
    return str(result.content[0].text)


async def _client_requests(gateway: GatewayProcess, tool: str) -> list[dict[str, Any]]:
    """The client_requests of the last outcome record of ``tool``."""
    records = await read_chain(gateway.state_dir / STORE_FILE)
    decisions = {r.request_id: r for r in records if r.kind == "decision" and r.fields["tool"]["name"] == tool}
    outcomes = [r for r in records if r.kind == "outcome" and r.request_id in decisions]
    return list(outcomes[-1].fields.get("client_requests", []))


@pytest.mark.parametrize(("tool", "arguments", "answer", "kind"), [
    ("asker.ask_name", {"message": "Who are you?"}, 'elicited action=accept content={"name": "Ada"}',
     "elicitation_form"),
    ("asker.ask_llm", {"prompt": "Six times seven?"}, "sampled forty-two", "sampling"),
    ("asker.ask_roots", {}, "roots file:///work/project", "roots"),
    ("askerh.ask_name", {"message": "Who are you?"}, 'elicited action=accept content={"name": "Ada"}',
     "elicitation_form"),
])
def test_an_allowed_client_request_is_relayed_answered_and_recorded(gateway: GatewayProcess, tool: str,
                                                                    arguments: dict[str, Any], answer: str,
                                                                    kind: str) -> None:
    """The caller is asked on its call's stream, its answer reaches the upstream, the outcome record says so."""
    caller = Caller()
    assert anyio.run(lambda: _call(gateway, tool, arguments, caller=caller)) == answer
    assert len(caller.asked) == 1
    records = anyio.run(_client_requests, gateway, tool)
    assert records == [{"kind": kind, "service": tool.split(".")[0], "outcome": "relayed", "reason": None,
                        "tool": tool}]


def test_a_kind_the_service_may_not_ask_is_refused_and_recorded(gateway: GatewayProcess) -> None:
    """askerh allows form elicitation only: its sampling request gets -31040, the caller is never asked."""
    caller = Caller()
    assert anyio.run(lambda: _call(gateway, "askerh.ask_llm", {"prompt": "hi"}, caller=caller)) == REFUSED
    assert anyio.run(lambda: _call(gateway, "askerh.ask_roots", {}, caller=caller)) == REFUSED
    assert caller.asked == []
    for tool, kind in (("askerh.ask_llm", "sampling"), ("askerh.ask_roots", "roots")):
        assert anyio.run(_client_requests, gateway, tool) == [
            {"kind": kind, "service": "askerh", "outcome": "refused", "reason": "not_allowed", "tool": tool}]


def test_a_caller_that_did_not_declare_the_capability_is_never_asked(gateway: GatewayProcess) -> None:
    """No callbacks, so no capabilities in initialize: refused (not_declared), the upstream gets an error."""
    assert anyio.run(lambda: _call(gateway, "asker.ask_name", {"message": "Who?"})) == REFUSED
    assert anyio.run(_client_requests, gateway, "asker.ask_name")[-1]["reason"] == "not_declared"


def test_a_2026_caller_has_no_push_channel(gateway: GatewayProcess) -> None:
    """2026-07-28 forbids server requests on a POST stream: the upstream's push request is refused."""
    caller = Caller()
    assert anyio.run(lambda: _call(gateway, "asker.ask_roots", {}, mode="2026-07-28", caller=caller)) == REFUSED
    assert caller.asked == []


def test_a_refused_answer_never_leaks_into_another_callers_call(gateway: GatewayProcess) -> None:
    """Two legacy callers at once on the HTTP leg: each gets its own answer back."""
    class Named(Caller):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        async def elicit(self, ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
            await anyio.sleep(0.05)
            return types.ElicitResult(action="accept", content={"name": self.name})

    async def both() -> dict[str, str]:
        out: dict[str, str] = {}

        async def one(name: str) -> None:
            out[name] = await _call(gateway, "askerh.ask_name", {"message": "Who?"}, caller=Named(name))

        async with anyio.create_task_group() as tg:
            for name in ("ann", "bob"):
                tg.start_soon(one, name)
        return out

    out = anyio.run(both)
    assert out == {name: f"elicited action=accept content={json.dumps({'name': name})}" for name in ("ann", "bob")}


def test_client_requests_and_answers_are_counted(gateway: GatewayProcess) -> None:
    """The metrics count client requests by kind and outcome, and callers' answers by outcome (no content)."""
    caller = Caller()
    anyio.run(lambda: _call(gateway, "asker.ask_roots", {}, caller=caller))
    anyio.run(lambda: _call(gateway, "askerh.ask_llm", {"prompt": "hi"}, caller=caller))
    scrape = httpx2.get(f"{gateway.admin_base}/metrics", timeout=10).text
    assert 'portcullis_client_requests_total{kind="roots",outcome="relayed"}' in scrape
    assert 'portcullis_client_requests_total{kind="sampling",outcome="refused"}' in scrape
    assert 'portcullis_client_answers_total{outcome="matched"}' in scrape
    assert "project" not in scrape


class RawSession:
    """A 2025-era caller over raw HTTP: its own sealed session, its own token."""

    def __init__(self, gateway: GatewayProcess, user: str, capabilities: dict[str, Any]) -> None:
        self.gateway = gateway
        self.headers = {"Authorization": f"Bearer {gateway.token(user=user)}", "Content-Type": "application/json",
                        "Accept": "application/json, text/event-stream"}
        self.capabilities = capabilities

    async def open(self, http: httpx2.AsyncClient) -> RawSession:
        init = await http.post(self.gateway.url, headers=self.headers, json={
            "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": self.capabilities,
                "clientInfo": {"name": "raw", "version": "1"}}})
        assert init.status_code == 200, init.text
        self.headers = {**self.headers, "Mcp-Session-Id": init.headers["mcp-session-id"],
                        "MCP-Protocol-Version": "2025-11-25"}
        await self.post(http, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        return self

    async def post(self, http: httpx2.AsyncClient, body: Any, **headers: str) -> httpx2.Response:
        return await http.post(self.gateway.url, headers={**self.headers, **headers}, content=json.dumps(body))


def _events(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in lines if line.startswith("data: ")]


def test_hostile_answers_are_dropped_alike_and_only_the_callers_own_answer_counts(gateway: GatewayProcess) -> None:
    """Another session, another principal, a forged id, a malformed shape: each gets the same 202 and changes
    nothing; the caller's own answer settles the request; a duplicate after it is dropped too."""
    async def run() -> tuple[list[dict[str, Any]], dict[str, int]]:
        async with httpx2.AsyncClient(timeout=30) as http:
            ann = await RawSession(gateway, "ann", {"elicitation": {}}).open(http)
            other_session = await RawSession(gateway, "ann", {"elicitation": {}}).open(http)
            mallory = await RawSession(gateway, "mallory", {"elicitation": {}}).open(http)
            statuses: dict[str, int] = {}
            lines: list[str] = []
            call = {"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                    "params": {"name": "askerh.ask_name", "arguments": {"message": "Who?"}}}
            async with http.stream("POST", gateway.url, headers=ann.headers, content=json.dumps(call)) as stream:
                assert stream.headers["content-type"] == "text/event-stream"
                async for line in stream.aiter_lines():
                    lines.append(line)
                    asked = [e for e in _events([line]) if e.get("method") == "elicitation/create"]
                    if not asked:
                        continue
                    rid = asked[0]["id"]
                    good = {"jsonrpc": "2.0", "id": rid, "result": {"action": "accept", "content": {"name": "Ann"}}}
                    evil = {"jsonrpc": "2.0", "id": rid, "result": {"action": "accept", "content": {"name": "Eve"}}}
                    statuses["other session"] = (await other_session.post(http, evil)).status_code
                    statuses["other principal"] = (await mallory.post(http, evil)).status_code
                    statuses["stolen session"] = (await mallory.post(http, evil, **{
                        "Mcp-Session-Id": ann.headers["Mcp-Session-Id"]})).status_code
                    statuses["forged id"] = (await ann.post(http, {**evil, "id": "pcr-" + "A" * 32})).status_code
                    statuses["notification"] = (await ann.post(http, {"jsonrpc": "2.0", "method": "x"})).status_code
                    statuses["own"] = (await ann.post(http, good)).status_code
                    statuses["duplicate"] = (await ann.post(http, evil)).status_code
            return _events(lines), statuses

    events, statuses = anyio.run(run)
    assert statuses == {"other session": 202, "other principal": 202, "stolen session": 404, "forged id": 202,
                        "notification": 202, "own": 202, "duplicate": 202}
    assert events[-1]["id"] == 5
    assert events[-1]["result"]["content"][0]["text"] == 'elicited action=accept content={"name": "Ann"}'
    assert "Eve" not in json.dumps(events)
    scrape = httpx2.get(f"{gateway.admin_base}/metrics", timeout=10).text
    for outcome in ("foreign_session", "foreign_principal", "unknown", "duplicate"):
        assert f'portcullis_client_answers_total{{outcome="{outcome}"}}' in scrape, outcome


def test_a_caller_without_an_event_stream_is_not_asked(gateway: GatewayProcess) -> None:
    """Accept without text/event-stream: a plain JSON answer, the upstream's request refused (no_stream)."""
    async def run() -> httpx2.Response:
        async with httpx2.AsyncClient(timeout=30) as http:
            ann = await RawSession(gateway, "ann", {"elicitation": {}}).open(http)
            return await ann.post(http, {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {
                "name": "asker.ask_name", "arguments": {"message": "Who?"}}}, Accept="application/json")

    answer = anyio.run(run)
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["result"]["content"][0]["text"] == REFUSED
    assert anyio.run(_client_requests, gateway, "asker.ask_name")[-1]["reason"] == "no_stream"
