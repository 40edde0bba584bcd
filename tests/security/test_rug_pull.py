"""Rug pulls: a stdio service changes its tool definitions while the gateway runs.

Two real child processes stand in for the two eras: a 2025-era service pushing
``notifications/tools/list_changed`` on raw JSON-RPC (exact wire order under test control), and a
2026-07-28 service on the official SDK announcing changes on a ``subscriptions/listen`` stream.
Each row gets a fresh service of its own: the rows of one era share one gateway in front of one service
per row (a gateway start is the expensive part), so what one row's service does cannot leak into another
row's answers, logs or counts. What must hold: no call is forwarded to a tool whose changed
definition is pending verification; tools that did not change keep working; a storm of
notifications costs a bounded number of re-listings; nobody's calls hang.
"""

from __future__ import annotations

import asyncio
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


def _gateway_config(services: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"version": 1, "identity": {"allow_insecure_dev_issuer": True}, "services": services}


def _stdio_service(module: str, log: Path, health_interval_s: float) -> dict[str, Any]:
    return {"transport": "stdio", "command": sys.executable, "args": ["-m", module], "cwd": str(REPO),
            "env": {"RUG_LOG": str(log)}, "health_interval_s": health_interval_s, "refresh_s": 3600,
            "sandbox": {"writable_paths": [str(log.parent)]}}  # the log it appends to


def deployment(root: Path, module: str, log: Path, *, health_interval_s: float = 60.0) -> Path:
    """One service ``rug`` of ``module`` behind a gateway, its tools pinned by the real ``portcullis pin``."""
    if module not in _LIVE:
        _LIVE[module] = _live(module)
    write_deployment(root, _gateway_config({"rug": _stdio_service(module, log, health_interval_s)}),
                     [manifest_from_live("rug", _LIVE[module][name]) for name in DECLARED])
    done = run_cli("pin", str(root))
    assert done.returncode == 0, done.stdout + done.stderr
    return root


def pinned_manifests(root: Path) -> list[dict[str, Any]]:
    """The manifests of service ``rug`` in a deployment pinned by :func:`deployment`, each with its pin."""
    manifests = [yaml.safe_load((root / "tools" / "rug" / f"{name}.yml").read_text()) for name in DECLARED]
    assert all(m.get("pin") for m in manifests), manifests
    return manifests


ERA_GROUPS = [pytest.param(era, marks=pytest.mark.xdist_group(f"security/test_rug_pull.py::{era}")) for era in ERAS]


@pytest.fixture(params=ERA_GROUPS)
def era(request: pytest.FixtureRequest) -> str:
    """An era; its rows run on one worker (their shared gateway starts once), the other era's on another."""
    return str(request.param)


class Rig:
    """A gateway in front of one rug service (named ``service``), and the service's own log of what it ran."""

    def __init__(self, gateway: GatewayProcess, log: Path, service: str = "rug") -> None:
        self.gateway, self.log, self.service = gateway, log, service

    def entries(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def echo_runs_after_a_change(self) -> list[dict[str, Any]]:
        return [e for e in self.entries() if e.get("tool") == "echo" and e["echo_version"] > 0]

    def listings(self) -> int:
        return sum(1 for e in self.entries() if e.get("list"))

    async def outcome(self, client: Any, name: str, arguments: dict[str, Any] | None = None) -> str:
        return await outcome(client, name, arguments, service=self.service)


# Health checks of a fleet's rows (bar the watched ones) are QUIET_S apart, and a fleet older than MAX_AGE_S is
# replaced before a row takes a service: no health check falls inside a row, so what a row sees the gateway do,
# it did because the row told it (an announcement, a refused call), exactly as with a gateway of its own.
QUIET_S = 300.0
MAX_AGE_S = 150.0


class Fleet:
    """One gateway in front of ``count`` fresh services of one era; each row takes one (:meth:`take`).

    The services are pinned with the pins the real ``portcullis pin`` wrote for one service of the era (a pin
    hashes the definition, not the service's name). ``watched`` services get health checks every 0.2 s."""

    def __init__(self, tmp: Path, era: str, count: int, watched: int) -> None:
        module = ERAS[era]
        template = pinned_manifests(deployment(tmp / "template", module, tmp / "template.log"))
        services: dict[str, dict[str, Any]] = {}
        manifests: list[dict[str, Any]] = []
        self._free: dict[bool, list[tuple[str, Path]]] = {False: [], True: []}
        for index in range(count + watched):
            name, log, is_watched = f"rug{index}", tmp / "logs" / f"rug{index}.log", index >= count
            services[name] = _stdio_service(module, log, 0.2 if is_watched else QUIET_S)
            manifests += [{**m, "service": name} for m in template]
            self._free[is_watched].append((name, log))
        (tmp / "logs").mkdir()
        root = write_deployment(tmp / "deployment", _gateway_config(services), manifests)
        self.gateway = GatewayProcess(root)
        try:
            self.gateway.wait_ready(timeout=240)  # every service of the fleet starts before /healthz is 200
        except BaseException:
            self.gateway.stop()
            raise
        self.started = time.monotonic()

    def left(self, watched: bool) -> int:
        return len(self._free[watched])

    def take(self, *, watched: bool) -> Rig:
        assert self._free[watched], "more rows than the fleet has services: count them in Fleets.size"
        name, log = self._free[watched].pop(0)
        return Rig(self.gateway, log, name)


class Fleets:
    """The module's fleets, started on first use: one per era, with one service per row of that era."""

    def __init__(self, session: pytest.Session, tmp: pytest.TempPathFactory) -> None:
        self._session, self._tmp, self._fleets = session, tmp, dict[str, Fleet]()

    def size(self, era: str, fixture: str) -> int:
        """How many collected rows of this module in ``era`` use ``fixture`` (each needs a service)."""
        return sum(1 for item in self._session.items
                   if item.path == Path(__file__) and fixture in getattr(item, "fixturenames", ())
                   and getattr(item, "callspec", None) is not None and item.callspec.params.get("era") == era)

    def take(self, era: str, *, watched: bool) -> Rig:
        fleet = self._fleets.get(era)
        if fleet is not None and time.monotonic() - fleet.started > MAX_AGE_S:
            fleet.gateway.stop()
            self._fleets[era] = Fleet(self._tmp.mktemp("rug-fleet"), era, fleet.left(False), fleet.left(True))
        elif fleet is None:
            self._fleets[era] = Fleet(self._tmp.mktemp("rug-fleet"), era, self.size(era, "rig"),
                                      self.size(era, "watched"))
        return self._fleets[era].take(watched=watched)

    def stop(self) -> None:
        for fleet in self._fleets.values():
            fleet.gateway.stop()


@pytest.fixture(scope="module")
def fleets(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleets]:
    started = Fleets(request.session, tmp_path_factory)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def rig(fleets: Fleets, era: str) -> Rig:
    """A fresh service, health checks a minute apart: what the gateway does here, it does because it was told."""
    return fleets.take(era, watched=False)


@pytest.fixture
def watched(fleets: Fleets, era: str) -> Rig:
    """A fresh service, health checks every 0.2 s: for services that change without saying so."""
    return fleets.take(era, watched=True)


@pytest.fixture
def own_rig(tmp_path: Path, era: str) -> Iterator[Rig]:
    """A service behind a gateway of its own: for rows that watch everything the gateway tells its callers."""
    log = tmp_path / "rug.log"
    with GatewayProcess(deployment(tmp_path / "deployment", ERAS[era], log)) as gateway:
        yield Rig(gateway, log)


def logged(rig: Rig, text: str, seconds: float = 30) -> bool:
    """Whether the gateway logs ``text`` about ``rig``'s service within ``seconds`` (its stdout reaches the file
    in blocks; other services of the same gateway log too, so the line must name this one)."""
    marks = (f'"{rig.service}.', f'"service":"{rig.service}"')
    deadline = time.monotonic() + seconds
    while not any(text in line and any(mark in line for mark in marks) for line in rig.gateway.log().splitlines()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


async def outcome(client: Any, name: str, arguments: dict[str, Any] | None = None, *, service: str = "rug") -> str:
    """The text a call of ``service``'s tool ``name`` answered, or its error message."""
    try:
        result = await client.call_tool(f"{service}.{name}", arguments or ({"text": "hi"} if name == "echo" else {}))
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
        assert await rig.outcome(client, "echo") == "hi"
        assert await rig.outcome(client, "mutate", {"kind": kind, "list_delay": 1.0}) == f"mutated {kind}"
        assert await rig.outcome(client, "echo") == UNKNOWN
        assert await rig.outcome(client, "other") == "other"
        assert await rig.outcome(client, "echo") == UNKNOWN
        names = {t.name for t in (await client.list_tools()).tools}
    assert rig.echo_runs_after_a_change() == []
    assert f"{rig.service}.echo" not in names and f"{rig.service}.other" in names


@pytest.mark.parametrize("kind", ["none", "add", "title"])
async def test_an_announcement_without_a_pinned_change_releases_every_tool(rig: Rig, kind: str) -> None:
    """No change, a new tool, or a field the pin does not cover (and callers never see): re-checked, released;
    a new tool without a manifest stays unexposed."""
    async with rig.gateway.client() as client:
        assert await rig.outcome(client, "mutate", {"kind": kind, "list_delay": 0.5}) == f"mutated {kind}"
        assert [await rig.outcome(client, "echo"), await rig.outcome(client, "other")] == ["hi", "other"]
        assert await rig.outcome(client, "extra") == UNKNOWN
        names = {t.name for t in (await client.list_tools()).tools}
    assert {f"{rig.service}.echo", f"{rig.service}.other"} <= names and f"{rig.service}.extra" not in names


async def test_a_notification_storm_costs_bounded_relistings_and_calls_still_answer(rig: Rig) -> None:
    """300 notifications at once: calls keep answering, and the service is re-listed at most about ten
    times a second (not once per notification)."""
    started = time.monotonic()
    async with rig.gateway.client() as client:
        before = rig.listings()
        assert await rig.outcome(client, "mutate", {"kind": "none", "notify": 300}) == "mutated none"
        answers = [await rig.outcome(client, "other") for _ in range(20)]
        answers.append(await rig.outcome(client, "echo"))
    elapsed = time.monotonic() - started
    assert answers == ["other"] * 20 + ["hi"]
    assert rig.listings() - before <= elapsed / 0.1 + 5


async def test_a_change_announced_mid_call_lets_that_call_finish_and_holds_the_next(rig: Rig) -> None:
    """A call in flight when the tool changes completes; the call after it is refused."""
    async with rig.gateway.client() as client:
        await rig.outcome(client, "mutate", {"kind": "none", "list_delay": 2.0})  # re-listings take two seconds
        finished = await rig.outcome(client, "slow_mutate", {"kind": "description", "seconds": 1.0})
        after = await rig.outcome(client, "echo")
        other = await rig.outcome(client, "other")
    assert (finished, after, other) == ("slow done", UNKNOWN, "other")
    assert rig.echo_runs_after_a_change() == []


async def test_calls_racing_an_announced_change_and_calls_after_it(rig: Rig) -> None:
    """Ten echo calls in flight while the tool changes may run or be refused; ten started once the change
    was announced are all refused, and the service ran exactly the echo calls that answered."""
    async with rig.gateway.client() as client:
        racing = [asyncio.create_task(rig.outcome(client, "echo")) for _ in range(10)]
        assert await rig.outcome(client, "mutate", {"kind": "description", "list_delay": 1.0}) == "mutated description"
        after = await asyncio.gather(*(rig.outcome(client, "echo") for _ in range(10)))
        raced = await asyncio.gather(*racing)
    assert after == [UNKNOWN] * 10
    assert set(raced) <= {"hi", UNKNOWN}
    assert sum(1 for e in rig.entries() if e.get("tool") == "echo") == raced.count("hi")


async def test_an_unannounced_change_is_quarantined_by_the_next_health_check(watched: Rig) -> None:
    """A service that changes without saying so is caught by the health check (a tools/list first page)."""
    rig = watched
    async with rig.gateway.client() as client:
        assert await rig.outcome(client, "mutate", {"kind": "description", "notify": 0}) == "mutated description"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and await rig.outcome(client, "echo") != UNKNOWN:
            await asyncio.sleep(0.05)
        assert await rig.outcome(client, "echo") == UNKNOWN
        assert await rig.outcome(client, "other") == "other"
    assert logged(rig, "live definition differs from the pin")


async def test_a_service_that_stalls_its_relisting_gets_no_calls(rig: Rig) -> None:
    """Announced change, then tools/list answers only after 20 s: calls are refused once the 5 s verdict wait
    runs out (not forwarded, not hung)."""
    async with rig.gateway.client() as client:
        assert await rig.outcome(client, "mutate", {"kind": "description", "list_delay": 20.0}) == "mutated description"
        started = time.monotonic()
        assert await rig.outcome(client, "echo") == UNKNOWN
        waited = time.monotonic() - started
    assert rig.echo_runs_after_a_change() == []
    assert waited < 19  # refused at the verdict wait, before the stalled listing came back
    assert logged(rig, "not re-verified in time")


async def test_an_unannounced_removal_is_quarantined_after_the_upstream_refuses_a_call(rig: Rig) -> None:
    """The service drops a tool silently; the first call the upstream refuses makes the gateway re-list at once
    (health checks are minutes apart), so later calls are refused at the gateway."""
    async with rig.gateway.client() as client:
        assert await rig.outcome(client, "mutate", {"kind": "remove", "notify": 0}) == "mutated remove"
        first = await rig.outcome(client, "echo")
        assert first != "hi"
        assert await until_unknown(client, "echo", service=rig.service) == UNKNOWN
        assert await rig.outcome(client, "other") == "other"
    assert logged(rig, "the service no longer offers this tool")


# ----------------------------------------------------------------------------- HTTP (the relay)


HTTP_GROUP = pytest.mark.xdist_group("security/test_rug_pull.py::http")  # their shared gateway starts once


def _http_service(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The 2026-07-28 service over Streamable HTTP, started (not yet answering); and its MCP URL."""
    port = free_port()
    env = {**os.environ, "RUG_HTTP_PORT": str(port), "RUG_LOG": str(log)}
    return subprocess.Popen([sys.executable, "-m", ERAS["2026 listen"]], cwd=REPO, env=env), \
        f"http://127.0.0.1:{port}/mcp"


def _listed_when_up(service: subprocess.Popen[bytes], url: str) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + 60
    while True:
        try:
            return asyncio.run(_http_live(url))
        except Exception:
            if time.monotonic() > deadline or service.poll() is not None:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="module")
def http_rigs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Rig]]:
    """One fresh HTTP service per row that uses ``http_rig``, all behind one gateway, pinned by the real
    ``portcullis pin``. Health checks are QUIET_S apart (the few rows finish long before the first): what tells
    the gateway of a change is the listen stream."""
    rows = sum(1 for item in request.session.items
               if item.path == Path(__file__) and "http_rig" in getattr(item, "fixturenames", ()))
    tmp = tmp_path_factory.mktemp("rug-http")
    (tmp / "logs").mkdir()
    services = [(f"rug{i}", tmp / "logs" / f"rug{i}.log") for i in range(rows)]
    started = [_http_service(log) for _, log in services]
    try:
        lives = [_listed_when_up(process, url) for process, url in started]
        urls = {name: url for (name, _), (_, url) in zip(services, started, strict=True)}
        gateway = _gateway_config({name: {"transport": "http", "url": url, "health_interval_s": QUIET_S,
                                          "refresh_s": 3600} for name, url in urls.items()})
        manifests = [manifest_from_live(name, live[tool]) for (name, _), live in zip(services, lives, strict=True)
                     for tool in DECLARED]
        root = write_deployment(tmp / "deployment", gateway, manifests)
        done = run_cli("pin", str(root))
        assert done.returncode == 0, done.stdout + done.stderr
        with GatewayProcess(root) as process:
            yield [Rig(process, log, name) for name, log in services]
    finally:
        for process, _ in started:
            process.terminate()
        for process, _ in started:
            process.wait(timeout=10)


@pytest.fixture
def http_rig(http_rigs: list[Rig]) -> Rig:
    """A fresh 2026-07-28 service over Streamable HTTP: the relay keeps a subscriptions/listen stream open."""
    return http_rigs.pop(0)


async def _http_live(url: str) -> dict[str, dict[str, Any]]:
    async with Client(url, cache=None) as client:
        tools = (await client.list_tools()).tools
    return {t.name: t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in tools}


async def until_unknown(client: Any, name: str, seconds: float = 30, *, service: str = "rug") -> str:
    """Call ``service``'s ``name`` until it is refused as unknown (or ``seconds`` pass); the last answer."""
    deadline = time.monotonic() + seconds
    answer = await outcome(client, name, service=service)
    while answer != UNKNOWN and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        answer = await outcome(client, name, service=service)
    return answer


@HTTP_GROUP
@pytest.mark.parametrize("kind", ["description", "schema", "remove"])
async def test_over_http_an_announced_change_is_quarantined_without_waiting_for_a_health_check(
        http_rig: Rig, kind: str) -> None:
    """The listen stream delivers the change (health checks are minutes apart); the tool is quarantined and
    the other tools keep answering. (Over HTTP the announcement and an answer travel on different streams, so
    unlike stdio a call racing the announcement can still pass: see docs/decisions.md.)"""
    started = time.monotonic()
    async with http_rig.gateway.client() as client:
        assert await http_rig.outcome(client, "echo") == "hi"
        assert await http_rig.outcome(client, "mutate", {"kind": kind}) == f"mutated {kind}"
        assert await until_unknown(client, "echo", service=http_rig.service) == UNKNOWN
        assert await http_rig.outcome(client, "other") == "other"
    assert time.monotonic() - started < 60  # sooner than the first health check could have
    assert kind == "remove" or logged(http_rig, "live definition differs from the pin")


@HTTP_GROUP
async def test_over_http_a_storm_costs_bounded_relistings(http_rig: Rig) -> None:
    """300 announcements on the listen stream: calls answer; re-listings stay near ten a second."""
    started = time.monotonic()
    async with http_rig.gateway.client() as client:
        before = http_rig.listings()
        assert await http_rig.outcome(client, "mutate", {"kind": "none", "notify": 300}) == "mutated none"
        answers = [await http_rig.outcome(client, "other") for _ in range(20)]
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
async def test_callers_hear_of_a_change_of_the_exposed_tools_only(own_rig: Rig, kind: str) -> None:
    """Subscribed callers of both eras get the gateway's own tools/list_changed when the exposed tools changed
    (a quarantine), never the upstream's announcement itself: an announcement that changed nothing pinned
    tells them nothing."""
    rig = own_rig  # a gateway of its own: its callers hear of nothing but this service
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
