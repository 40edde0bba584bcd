"""Rug pulls: a stdio service changes its tool definitions while the gateway runs.

Two real child processes stand in for the two eras: a 2025-era service pushing
``notifications/tools/list_changed`` on raw JSON-RPC (exact wire order under test control), and a
2026-07-28 service on the official SDK announcing changes on a ``subscriptions/listen`` stream.
Each row starts its own gateway. What must hold: no call is forwarded to a tool whose changed
definition is pending verification; tools that did not change keep working; a storm of
notifications costs a bounded number of re-listings; nobody's calls hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import yaml
from mcp import Client, MCPError, StdioServerParameters, types
from mcp.client.subscriptions import ToolsListChanged

from tests.e2e.harness import REPO, GatewayProcess, free_port, manifest_from_live, run_cli, write_deployment

ERAS = {"2025 push": "tests.security.rug_legacy_service", "2026 listen": "tests.security.rug_modern_service"}
DECLARED = ("echo", "other", "mutate", "slow_mutate")
UNKNOWN = "Unknown tool"


def _live(module: str) -> dict[str, dict[str, Any]]:
    async def listing() -> list[Any]:
        params = StdioServerParameters(command=sys.executable, args=["-m", module], cwd=str(REPO))
        async with Client(params, cache=None) as client:
            return (await client.list_tools()).tools

    tools = asyncio.run(listing())
    return {t.name: t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in tools}


_LIVE: dict[str, dict[str, dict[str, Any]]] = {}


def deployment(root: Path, module: str, log: Path, *, health_interval_s: float = 60.0) -> Path:
    if module not in _LIVE:
        _LIVE[module] = _live(module)
    gateway = {"version": 1, "identity": {"allow_insecure_dev_issuer": True}, "services": {
        "rug": {"transport": "stdio", "command": sys.executable, "args": ["-m", module], "cwd": str(REPO),
                "env": {"RUG_LOG": str(log)}, "health_interval_s": health_interval_s, "refresh_s": 3600,
                "sandbox": {"writable_paths": [str(log.parent)]}}}}  # the log it appends to
    write_deployment(root, gateway, [manifest_from_live("rug", _LIVE[module][name]) for name in DECLARED])
    done = run_cli("pin", str(root))
    assert done.returncode == 0, done.stdout + done.stderr
    return root


@pytest.fixture(params=list(ERAS))
def era(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Rig:
    """A gateway in front of one rug service, and the service's own log of what it ran."""

    def __init__(self, gateway: GatewayProcess, log: Path) -> None:
        self.gateway, self.log = gateway, log

    def entries(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def echo_runs_after_a_change(self) -> list[dict[str, Any]]:
        return [e for e in self.entries() if e.get("tool") == "echo" and e["echo_version"] > 0]

    def listings(self) -> int:
        return sum(1 for e in self.entries() if e.get("list"))


@contextlib.contextmanager
def running(tmp_path: Path, era: str, *, health_interval_s: float) -> Iterator[Rig]:
    log = tmp_path / "rug.log"
    root = deployment(tmp_path / "deployment", ERAS[era], log, health_interval_s=health_interval_s)
    with GatewayProcess(root) as gateway:
        yield Rig(gateway, log)


@pytest.fixture
def rig(tmp_path: Path, era: str) -> Iterator[Rig]:
    """Health checks a minute apart: what the gateway does here, it does because it was told."""
    with running(tmp_path, era, health_interval_s=60.0) as started:
        yield started


@pytest.fixture
def watched(tmp_path: Path, era: str) -> Iterator[Rig]:
    """Health checks every 0.2 s: for services that change without saying so."""
    with running(tmp_path, era, health_interval_s=0.2) as started:
        yield started


def logged(rig: Rig, text: str, seconds: float = 30) -> bool:
    """Whether the gateway logs ``text`` within ``seconds`` (its stdout reaches the file in blocks)."""
    deadline = time.monotonic() + seconds
    while text not in rig.gateway.log():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


async def outcome(client: Any, name: str, arguments: dict[str, Any] | None = None) -> str:
    """The text a call answered, or its error message."""
    try:
        result = await client.call_tool(f"rug.{name}", arguments or ({"text": "hi"} if name == "echo" else {}))
    except MCPError as exc:
        return exc.error.message
    return "error" if result.is_error else result.content[0].text


# A change to each field the pin covers: the changed tool must never run again once announced.
CHANGES = ["description", "schema", "annotations", "remove"]


@pytest.mark.parametrize("kind", CHANGES)
async def test_a_call_right_after_an_announced_change_never_reaches_the_changed_tool(rig: Rig, kind: str) -> None:
    """Notification, then at once a call of the changed tool while the service takes a second to answer the
    re-listing: the call is held until the listing is checked, then refused as unknown; the other tools of
    the service keep answering."""
    async with rig.gateway.client() as client:
        assert await outcome(client, "echo") == "hi"
        assert await outcome(client, "mutate", {"kind": kind, "list_delay": 1.0}) == f"mutated {kind}"
        assert await outcome(client, "echo") == UNKNOWN
        assert await outcome(client, "other") == "other"
        assert await outcome(client, "echo") == UNKNOWN
        names = {t.name for t in (await client.list_tools()).tools}
    assert rig.echo_runs_after_a_change() == []
    assert "rug.echo" not in names and "rug.other" in names


@pytest.mark.parametrize("kind", ["none", "add", "title"])
async def test_an_announcement_without_a_pinned_change_releases_every_tool(rig: Rig, kind: str) -> None:
    """No change, a new tool, or a field the pin does not cover (and callers never see): re-checked, released;
    a new tool without a manifest stays unexposed."""
    async with rig.gateway.client() as client:
        assert await outcome(client, "mutate", {"kind": kind, "list_delay": 0.5}) == f"mutated {kind}"
        assert [await outcome(client, "echo"), await outcome(client, "other")] == ["hi", "other"]
        assert await outcome(client, "extra") == UNKNOWN
        names = {t.name for t in (await client.list_tools()).tools}
    assert {"rug.echo", "rug.other"} <= names and "rug.extra" not in names


async def test_a_notification_storm_costs_bounded_relistings_and_calls_still_answer(rig: Rig) -> None:
    """300 notifications at once: calls keep answering, and the service is re-listed at most about ten
    times a second (not once per notification)."""
    started = time.monotonic()
    async with rig.gateway.client() as client:
        before = rig.listings()
        assert await outcome(client, "mutate", {"kind": "none", "notify": 300}) == "mutated none"
        answers = [await outcome(client, "other") for _ in range(20)]
        answers.append(await outcome(client, "echo"))
    elapsed = time.monotonic() - started
    assert answers == ["other"] * 20 + ["hi"]
    assert rig.listings() - before <= elapsed / 0.1 + 5


async def test_a_change_announced_mid_call_lets_that_call_finish_and_holds_the_next(rig: Rig) -> None:
    """A call in flight when the tool changes completes; the call after it is refused."""
    async with rig.gateway.client() as client:
        await outcome(client, "mutate", {"kind": "none", "list_delay": 2.0})  # re-listings take two seconds
        finished = await outcome(client, "slow_mutate", {"kind": "description", "seconds": 1.0})
        after = await outcome(client, "echo")
        other = await outcome(client, "other")
    assert (finished, after, other) == ("slow done", UNKNOWN, "other")
    assert rig.echo_runs_after_a_change() == []


async def test_calls_racing_an_announced_change_and_calls_after_it(rig: Rig) -> None:
    """Ten echo calls in flight while the tool changes may run or be refused; ten started once the change
    was announced are all refused, and the service ran exactly the echo calls that answered."""
    async with rig.gateway.client() as client:
        racing = [asyncio.create_task(outcome(client, "echo")) for _ in range(10)]
        assert await outcome(client, "mutate", {"kind": "description", "list_delay": 1.0}) == "mutated description"
        after = await asyncio.gather(*(outcome(client, "echo") for _ in range(10)))
        raced = await asyncio.gather(*racing)
    assert after == [UNKNOWN] * 10
    assert set(raced) <= {"hi", UNKNOWN}
    assert sum(1 for e in rig.entries() if e.get("tool") == "echo") == raced.count("hi")


async def test_an_unannounced_change_is_quarantined_by_the_next_health_check(watched: Rig) -> None:
    """A service that changes without saying so is caught by the health check (a tools/list first page)."""
    rig = watched
    async with rig.gateway.client() as client:
        assert await outcome(client, "mutate", {"kind": "description", "notify": 0}) == "mutated description"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and await outcome(client, "echo") != UNKNOWN:
            await asyncio.sleep(0.05)
        assert await outcome(client, "echo") == UNKNOWN
        assert await outcome(client, "other") == "other"
    assert logged(rig, "live definition differs from the pin")


async def test_a_service_that_stalls_its_relisting_gets_no_calls(rig: Rig) -> None:
    """Announced change, then tools/list answers only after 20 s: calls are refused once the 5 s verdict wait
    runs out (not forwarded, not hung)."""
    async with rig.gateway.client() as client:
        assert await outcome(client, "mutate", {"kind": "description", "list_delay": 20.0}) == "mutated description"
        started = time.monotonic()
        assert await outcome(client, "echo") == UNKNOWN
        waited = time.monotonic() - started
    assert rig.echo_runs_after_a_change() == []
    assert waited < 19  # refused at the verdict wait, before the stalled listing came back
    assert logged(rig, "not re-verified in time")


async def test_an_unannounced_removal_is_quarantined_after_the_upstream_refuses_a_call(rig: Rig) -> None:
    """The service drops a tool silently; the first call the upstream refuses makes the gateway re-list at once
    (health checks are a minute apart), so later calls are refused at the gateway."""
    async with rig.gateway.client() as client:
        assert await outcome(client, "mutate", {"kind": "remove", "notify": 0}) == "mutated remove"
        first = await outcome(client, "echo")
        assert first != "hi"
        assert await until_unknown(client, "echo") == UNKNOWN
        assert await outcome(client, "other") == "other"
    assert logged(rig, "the service no longer offers this tool")


# ----------------------------------------------------------------------------- HTTP (the relay)


@pytest.fixture
def http_rig(tmp_path: Path) -> Iterator[Rig]:
    """The 2026-07-28 service over Streamable HTTP: the relay keeps a subscriptions/listen stream open."""
    port, log = free_port(), tmp_path / "rug.log"
    env = {**os.environ, "RUG_HTTP_PORT": str(port), "RUG_LOG": str(log)}
    service = subprocess.Popen([sys.executable, "-m", ERAS["2026 listen"]], cwd=REPO, env=env)
    try:
        url = f"http://127.0.0.1:{port}/mcp"
        deadline = time.monotonic() + 60
        while True:
            try:
                live = asyncio.run(_http_live(url))
                break
            except Exception:
                if time.monotonic() > deadline or service.poll() is not None:
                    raise
                time.sleep(0.2)
        gateway = {"version": 1, "identity": {"allow_insecure_dev_issuer": True}, "services": {
            "rug": {"transport": "http", "url": url, "health_interval_s": 60.0, "refresh_s": 3600}}}
        root = write_deployment(tmp_path / "deployment", gateway,
                                [manifest_from_live("rug", live[name]) for name in DECLARED])
        done = run_cli("pin", str(root))
        assert done.returncode == 0, done.stdout + done.stderr
        with GatewayProcess(root) as process:
            yield Rig(process, log)
    finally:
        service.terminate()
        service.wait(timeout=10)


async def _http_live(url: str) -> dict[str, dict[str, Any]]:
    async with Client(url, cache=None) as client:
        tools = (await client.list_tools()).tools
    return {t.name: t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in tools}


async def until_unknown(client: Any, name: str, seconds: float = 30) -> str:
    """Call ``name`` until it is refused as unknown (or ``seconds`` pass); the last answer."""
    deadline = time.monotonic() + seconds
    answer = await outcome(client, name)
    while answer != UNKNOWN and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        answer = await outcome(client, name)
    return answer


@pytest.mark.parametrize("kind", ["description", "schema", "remove"])
async def test_over_http_an_announced_change_is_quarantined_without_waiting_for_a_health_check(
        http_rig: Rig, kind: str) -> None:
    """The listen stream delivers the change (health checks are a minute apart); the tool is quarantined and
    the other tools keep answering. (Over HTTP the announcement and an answer travel on different streams, so
    unlike stdio a call racing the announcement can still pass: see docs/decisions.md.)"""
    started = time.monotonic()
    async with http_rig.gateway.client() as client:
        assert await outcome(client, "echo") == "hi"
        assert await outcome(client, "mutate", {"kind": kind}) == f"mutated {kind}"
        assert await until_unknown(client, "echo") == UNKNOWN
        assert await outcome(client, "other") == "other"
    assert time.monotonic() - started < 60  # sooner than the first health check could have
    assert kind == "remove" or logged(http_rig, "live definition differs from the pin")


async def test_over_http_a_storm_costs_bounded_relistings(http_rig: Rig) -> None:
    """300 announcements on the listen stream: calls answer; re-listings stay near ten a second."""
    started = time.monotonic()
    async with http_rig.gateway.client() as client:
        before = http_rig.listings()
        assert await outcome(client, "mutate", {"kind": "none", "notify": 300}) == "mutated none"
        answers = [await outcome(client, "other") for _ in range(20)]
    elapsed = time.monotonic() - started
    assert answers == ["other"] * 20
    assert http_rig.listings() - before <= elapsed / 0.1 + 5


# ----------------------------------------------------------------------------- pin --check --gateway


def test_pin_check_against_the_running_gateway_sees_a_change_a_fresh_child_does_not(tmp_path: Path) -> None:
    """The running child changed echo; a fresh child (plain `pin --check`) still serves the old definition,
    so only `pin --check --gateway` reports the drift. The report needs a caller in admin.operators."""
    log = tmp_path / "rug.log"
    root = deployment(tmp_path / "deployment", ERAS["2025 push"], log)
    config = yaml.safe_load((root / "gateway.yaml").read_text())
    config["admin"] = {"operators": ["user:ops-alice", "client:ci-*"]}
    (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with GatewayProcess(root) as gateway:
        async def change() -> str:
            async with gateway.client() as client:
                await outcome(client, "mutate", {"kind": "description"})
                return await outcome(client, "echo")

        assert asyncio.run(change()) == UNKNOWN
        fresh = run_cli("pin", str(root), "--check")
        operator = gateway.token(user="ops-alice")
        seen = run_cli("pin", "--check", "--gateway", gateway.admin_base, "--token", operator)
        ci = run_cli("pin", "--check", "--gateway", gateway.admin_base, env={
            "PORTCULLIS_TOKEN": gateway.token(user=None, agent=None, client="ci-pipeline")})
        refusals = {
            "no token": run_cli("pin", "--check", "--gateway", gateway.admin_base, env={"PORTCULLIS_TOKEN": ""}),
            "not an operator": run_cli("pin", "--check", "--gateway", gateway.admin_base, "--token",
                                       gateway.token(user="mallory")),
            "forged token": run_cli("pin", "--check", "--gateway", gateway.admin_base, "--token",
                                    operator[:-4] + "AAAA"),
            "without --check": run_cli("pin", "--gateway", gateway.admin_base, "--token", operator),
        }
        raw = {method: httpx2.request(method, f"{gateway.admin_base}/pins", headers={
            "Authorization": f"Bearer {operator}"}).status_code for method in ("GET", "POST", "DELETE")}
        anonymous = httpx2.get(f"{gateway.admin_base}/pins").status_code
    assert fresh.returncode == 0, fresh.stdout  # the fresh child has nothing to report
    assert seen.returncode == 1 and "changed" in seen.stdout and "rug.echo" in seen.stdout, seen.stdout + seen.stderr
    assert ci.returncode == 1 and "changed" in ci.stdout
    assert {name: done.returncode for name, done in refusals.items()} == dict.fromkeys(refusals, 2)
    assert "admin.operators" in refusals["not an operator"].stderr
    assert raw == {"GET": 200, "POST": 405, "DELETE": 405} and anonymous == 401


@pytest.mark.parametrize("kind", ["description", "none"])
async def test_callers_hear_of_a_change_of_the_exposed_tools_only(rig: Rig, kind: str) -> None:
    """Subscribed callers of both eras get the gateway's own tools/list_changed when the exposed tools changed
    (a quarantine), never the upstream's announcement itself: an announcement that changed nothing pinned
    tells them nothing."""
    heard: list[Any] = []

    async def handler(message: Any) -> None:
        if isinstance(getattr(message, "root", message), types.ToolListChangedNotification):
            heard.append(message)

    async with rig.gateway.client(mode="legacy", message_handler=handler) as legacy, \
            rig.gateway.client(mode="2026-07-28") as modern, modern.listen(tools_list_changed=True) as subscription:
        await anyio.sleep(0.5)  # the legacy session's GET stream is open
        assert await outcome(legacy, "mutate", {"kind": kind}) == f"mutated {kind}"
        events: list[Any] = []
        with anyio.move_on_after(3 if kind == "none" else 15):
            async for event in subscription:
                events.append(event)
                break
        if kind == "none":
            assert events == [] and heard == []
            return
        assert events == [ToolsListChanged()]
        with anyio.fail_after(10):
            while not heard:
                await anyio.sleep(0.05)
        assert "rug.echo" not in {t.name for t in (await modern.list_tools()).tools}
