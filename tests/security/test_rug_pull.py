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

from tests.e2e.harness import (
    REPO,
    GatewayProcess,
    free_port,
    manifest_from_live,
    run_cli,
    run_cli_in_process,
    write_deployment,
)

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


def era_groups(module: str) -> list[Any]:
    """The eras as parameters, each in an xdist group of its own: an era's rows of ``module`` (a path under
    tests/) run on one worker, so the gateway they share starts once; the other era's may run on another."""
    return [pytest.param(era, marks=pytest.mark.xdist_group(f"{module}-{era.replace(' ', '-')}")) for era in ERAS]


ERA_GROUPS = era_groups("security/test_rug_pull.py")


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
    """One gateway in front of fresh services of one era, ``pools`` naming how many each pool holds; each row
    takes one from its pool (:meth:`take`).

    The services are pinned with the pins the real ``portcullis pin`` wrote for one service of the era (a pin
    hashes the definition, not the service's name). The ``watched`` pool's services get health checks every
    0.2 s, the others QUIET_S apart."""

    def __init__(self, tmp: Path, era: str, pools: dict[str, int], admin: dict[str, Any] | None = None) -> None:
        module = ERAS[era]
        template = pinned_manifests(deployment(tmp / "template", module, tmp / "template.log"))
        services: dict[str, dict[str, Any]] = {}
        manifests: list[dict[str, Any]] = []
        self._free: dict[str, list[tuple[str, Path]]] = {pool: [] for pool in pools}
        (tmp / "logs").mkdir()
        for pool, count in pools.items():
            for _ in range(count):
                name = f"rug{len(services)}"
                log = tmp / "logs" / f"{name}.log"
                services[name] = _stdio_service(module, log, 0.2 if pool == "watched" else QUIET_S)
                manifests += [{**m, "service": name} for m in template]
                self._free[pool].append((name, log))
        config = _gateway_config(services) if admin is None else {**_gateway_config(services), "admin": admin}
        root = write_deployment(tmp / "deployment", config, manifests)
        self.gateway = GatewayProcess(root)
        try:
            self.gateway.wait_ready(timeout=240)  # every service of the fleet starts before /healthz is 200
        except BaseException:
            self.gateway.stop()
            raise
        self.started = time.monotonic()

    def left(self) -> dict[str, int]:
        return {pool: len(free) for pool, free in self._free.items()}

    def take(self, pool: str) -> Rig:
        assert self._free[pool], f"more rows than the fleet's {pool} pool has services: see Fleets.take"
        name, log = self._free[pool].pop(0)
        return Rig(self.gateway, log, name)


class Fleets:
    """A module's fleets, each started on first use: one per era and kind of row, with one service for each
    collected row of this module in that era whose fixtures name one of the fleet's pools."""

    def __init__(self, session: pytest.Session, tmp: pytest.TempPathFactory, module: Path) -> None:
        self._session, self._tmp, self._module, self._fleets = session, tmp, module, dict[Any, Fleet]()

    def size(self, era: str, fixture: str) -> int:
        """How many collected rows of the module in ``era`` use ``fixture`` (each needs a service)."""
        return sum(1 for item in self._session.items
                   if item.path == self._module and fixture in getattr(item, "fixturenames", ())
                   and getattr(item, "callspec", None) is not None and item.callspec.params.get("era") == era)

    def take(self, era: str, pool: str, pools: tuple[str, ...], *, admin: dict[str, Any] | None = None) -> Rig:
        """A fresh service from ``pool`` of the era's fleet of ``pools``; a fleet older than MAX_AGE_S is first
        replaced by one holding the services it had left."""
        key = (era, pools)
        fleet = self._fleets.get(key)
        if fleet is None:
            self._fleets[key] = Fleet(self._tmp.mktemp("rug-fleet"), era,
                                      {name: self.size(era, name) for name in pools}, admin)
        elif time.monotonic() - fleet.started > MAX_AGE_S:
            fleet.gateway.stop()
            self._fleets[key] = Fleet(self._tmp.mktemp("rug-fleet"), era, fleet.left(), admin)
        return self._fleets[key].take(pool)

    def __enter__(self) -> Fleets:
        return self

    def __exit__(self, *exc: object) -> None:
        for fleet in self._fleets.values():
            fleet.gateway.stop()


@pytest.fixture(scope="module")
def fleets(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleets]:
    with Fleets(request.session, tmp_path_factory, request.path) as started:
        yield started


@pytest.fixture
def rig(fleets: Fleets, era: str) -> Rig:
    """A fresh service, health checks minutes apart: what the gateway does here, it does because it was told."""
    return fleets.take(era, "rig", ("rig",))


@pytest.fixture
def watched(fleets: Fleets, era: str) -> Rig:
    """A fresh service, health checks every 0.2 s: for services that change without saying so. Its gateway starts
    for it (a ping slower than 0.2 s on a loaded machine fails a check: a shared gateway would run the checks for
    as long as the whole fleet runs)."""
    return fleets.take(era, "watched", ("watched",))


@pytest.fixture
def listened(fleets: Fleets, era: str) -> Rig:
    """A fresh service behind a gateway that only the rows watching what the gateway tells its callers share
    (the other rows' changes would be told too)."""
    return fleets.take(era, "listened", ("listened",))


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


HTTP_GROUP = pytest.mark.xdist_group("security/test_rug_pull.py-http")  # their shared gateway starts once


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
        # the real entry point ran above; the other callers run the same command in this process
        ci = run_cli_in_process("pin", "--check", "--gateway", gateway.admin_base, env={
            "PORTCULLIS_TOKEN": gateway.token(user=None, agent=None, client="ci-pipeline")})
        refusals = {
            "no token": run_cli_in_process("pin", "--check", "--gateway", gateway.admin_base,
                                       env={"PORTCULLIS_TOKEN": ""}),
            "not an operator": run_cli_in_process("pin", "--check", "--gateway", gateway.admin_base, "--token",
                                              gateway.token(user="mallory")),
            "forged token": run_cli_in_process("pin", "--check", "--gateway", gateway.admin_base, "--token",
                                           operator[:-4] + "AAAA"),
            "without --check": run_cli_in_process("pin", "--gateway", gateway.admin_base, "--token", operator),
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


# "none" first: it hears nothing from a gateway whose services changed nothing yet
@pytest.mark.parametrize("kind", ["none", "description"])
async def test_callers_hear_of_a_change_of_the_exposed_tools_only(listened: Rig, kind: str) -> None:
    """Subscribed callers of both eras get the gateway's own tools/list_changed when the exposed tools changed
    (a quarantine), never the upstream's announcement itself: an announcement that changed nothing pinned
    tells them nothing."""
    rig = listened
    heard: list[Any] = []

    async def handler(message: Any) -> None:
        if isinstance(getattr(message, "root", message), types.ToolListChangedNotification):
            heard.append(message)

    async with rig.gateway.client(mode="legacy", message_handler=handler) as legacy, \
            rig.gateway.client(mode="2026-07-28") as modern, modern.listen(tools_list_changed=True) as subscription:
        await anyio.sleep(0.5)  # the legacy session's GET stream is open
        assert await rig.outcome(legacy, "mutate", {"kind": kind}) == f"mutated {kind}"
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
        assert f"{rig.service}.echo" not in {t.name for t in (await modern.list_tools()).tools}
