"""Policy versions end to end: broken pushes refused whole, rollback, SIGHUP, and a reload under load.

One gateway (the demo deployment without analytics, its Rego and fixtures) for the whole module; calls with the
official SDK client. Version A is the demo; version B takes the billing-bot agent out of
``billing.get_invoice``'s allowed callers (and drops the fixtures that expect the old answer).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import MCPError

from portcullis.policy.policy_set import collect
from tests.e2e.harness import GatewayProcess, audit_fields, copy_demo_with_operators, run_cli

TOOL = "billing.get_invoice"
ARGS = {"invoice_id": "INV-1001"}
OPERATOR = "issuer:dev/user:ops"
GET_INVOICE = "tools/billing/get_invoice.yml"


class Rig:
    def __init__(self, gateway: GatewayProcess, root: Path) -> None:
        self.gateway, self.root = gateway, root
        self.a = collect(root)
        self.b = {k: v for k, v in self.a.items() if not k.startswith("policy/fixtures/")}
        self.b[GET_INVOICE] = self.a[GET_INVOICE].replace('"issuer:dev/agent:billing-bot", ', "")
        assert self.b[GET_INVOICE] != self.a[GET_INVOICE]
        self.ops = {"Authorization": f"Bearer {gateway.token(user='ops', agent=None)}"}

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None,
              headers: dict[str, str] | None = None) -> httpx2.Response:
        return httpx2.request(method, self.gateway.admin_base + path, json=body, timeout=120,
                              headers=self.ops if headers is None else headers)

    def push(self, files: dict[str, str], message: str = "test") -> httpx2.Response:
        return self.admin("POST", "/policy/reload", {"files": files, "message": message})

    def status(self) -> Any:
        return self.admin("GET", "/policy").json()

    def readyz(self) -> Any:
        return httpx2.get(self.gateway.admin_base + "/readyz", timeout=10).json()

    def cli(self, *args: str) -> Any:
        return run_cli("policy", *args, "--admin-url", self.gateway.admin_base,
                       env={"PORTCULLIS_TOKEN": self.ops["Authorization"].removeprefix("Bearer ")})

    def audit(self, kind: str) -> list[dict[str, Any]]:
        return audit_fields(self.gateway.state_dir, kind)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    # billing (the pushed policy's subject) and files (a tool removed and added back); analytics is never called
    root = copy_demo_with_operators(tmp_path_factory.mktemp("reload") / "deployment", OPERATOR,
                                    services=("billing", "files"))
    with GatewayProcess(root) as gateway:
        yield Rig(gateway, root)


async def answer(client: Any) -> str:
    """``allowed`` or ``denied``: both are answers; anything else fails the test."""
    try:
        result = await client.call_tool(TOOL, ARGS)
    except MCPError as exc:
        assert exc.error.message in ("Unknown tool", "Permission denied"), exc.error.message
        return "denied"
    assert not result.is_error, result
    return "allowed"


def _broken(rig: Rig, kind: str) -> dict[str, str]:
    files = dict(rig.a)
    if kind == "yaml_syntax":
        files[GET_INVOICE] = files[GET_INVOICE] + "\npolicy: [unclosed\n"
    elif kind == "schema":
        files[GET_INVOICE] = files[GET_INVOICE].replace("risk:", "risk_level:", 1)
    elif kind == "rego_compile":
        files["policy/portcullis_demo.rego"] += "\nthis is not rego {\n"
    elif kind == "empty_policy":
        files = {k: re.sub(r"(?ms)^policy:.*?(?=^\S|\Z)", "", v) if k.startswith("tools/") else v
                 for k, v in files.items() if not k.startswith("policy/fixtures/")}
    elif kind == "lint_error":  # allowed and denied the same caller: it can never allow anyone
        files = {k: v for k, v in files.items() if not k.startswith("policy/fixtures/")}
        files[GET_INVOICE] = files[GET_INVOICE].replace('denied_callers: ["app:public-chat"]',
                                                        'denied_callers: ["issuer:dev/role:finance"]')
    elif kind == "fixtures":
        files[GET_INVOICE] = rig.b[GET_INVOICE]  # the demo's fixtures expect billing-bot to be allowed
    elif kind == "file_name":
        files["../gateway.yaml"] = "version: 1\n"
    return files


BROKEN = {"yaml_syntax": "policy set does not load (YAML or schema)",
          "schema": "policy set does not load (YAML or schema)", "rego_compile": "Rego does not compile",
          "empty_policy": "no tool has a policy", "lint_error": "policy lint errors",
          "fixtures": "golden fixtures fail", "file_name": "policy set files refused"}


@pytest.mark.parametrize("kind", list(BROKEN))
async def test_a_broken_push_is_refused_whole_and_the_old_version_serves(rig: Rig, kind: str) -> None:
    before = rig.status()
    response = rig.push(_broken(rig, kind), f"broken {kind}")
    assert response.status_code == 422, response.text
    assert response.json()["reason"] == BROKEN[kind]
    assert str(rig.gateway.state_dir) not in response.text and "Traceback" not in response.text
    after = rig.status()
    assert (after["version"], after["engine_version"]) == (before["version"], before["engine_version"])
    assert after["status"] == "degraded" and after["reason"] == BROKEN[kind]
    ready = rig.readyz()
    assert ready["status"] == "degraded" and ready["policy"]["reason"] == BROKEN[kind]
    public = httpx2.get(rig.gateway.base + "/healthz", timeout=10).json()  # the agents' listener says nothing of it
    assert public["status"] == "ok" and "policy" not in public
    assert after["history"][0]["action"] == "refused" and after["history"][0]["author"] == "ops"
    async with rig.gateway.client() as client:
        assert await answer(client) == "allowed"


async def test_apply_rollback_and_sighup(rig: Rig, tmp_path: Path) -> None:
    start = rig.status()
    newer = tmp_path / "b"
    for name, text in rig.b.items():
        (newer / name).parent.mkdir(parents=True, exist_ok=True)
        (newer / name).write_text(text)
    applied = rig.cli("apply", str(newer), "-m", "take billing-bot off get_invoice")
    assert applied.returncode == 0, applied.stderr
    status = rig.status()
    assert status["status"] == "ok" and status["version"] != start["version"]
    assert rig.readyz().get("status") != "degraded"
    async with rig.gateway.client() as client:
        assert await answer(client) == "denied"
        listed = (await client.list_resources()).resources  # reads run on the swapped surface engine
        assert listed and (await client.read_resource(str(listed[0].uri))).contents
        back = rig.cli("rollback", "-m", "undo")
        assert back.returncode == 0, back.stderr
        assert await answer(client) == "allowed"
        assert rig.status()["version"] == start["version"]
        # SIGHUP re-reads the deployment directory
        (rig.root / GET_INVOICE).write_text(rig.b[GET_INVOICE])
        for name in list(rig.a):
            if name.startswith("policy/fixtures/"):
                (rig.root / name).rename(tmp_path / Path(name).name)
        rig.gateway.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while await answer(client) == "allowed" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert await answer(client) == "denied"
        assert rig.status()["history"][0]["author"] == "signal:SIGHUP"
        rolled = rig.cli("rollback", start["version"], "-m", "back to the start")
        assert rolled.returncode == 0, rolled.stderr
        assert await answer(client) == "allowed"
    history = rig.cli("history")
    assert history.returncode == 0 and "rolled_back" in history.stdout and "refused" in history.stdout
    shown = rig.admin("GET", f"/policy/versions/{start['engine_version']}").json()  # a decision record's pv-
    assert shown["id"] == start["version"] and shown["files"][GET_INVOICE] == rig.a[GET_INVOICE]
    audited = rig.audit("policy_version")
    assert {"applied", "rolled_back"} <= {r["action"] for r in audited}
    assert any(r["action"] == "applied" and r["author"] == "ops" and r["message"] == "take billing-bot off get_invoice"
               for r in audited)


async def test_a_version_can_remove_and_add_back_a_tool(rig: Rig) -> None:
    """The catalog follows the version's manifests: a removed tool is gone at once, one added back is
    served after its service's fresh listing is checked (calls are held meanwhile, never failed)."""
    without = {k: v for k, v in rig.a.items()
               if k != "tools/files/list_dir.yml" and not k.startswith("policy/fixtures/")}
    async with rig.gateway.client() as client:
        assert "files.list_dir" in {t.name for t in (await client.list_tools()).tools}
        assert rig.push(without, "remove list_dir").status_code == 200
        assert "files.list_dir" not in {t.name for t in (await client.list_tools()).tools}
        with pytest.raises(MCPError, match="Unknown tool"):
            await client.call_tool("files.list_dir", {"path": "."})
        assert await answer(client) == "allowed"  # the other tools are untouched
        assert rig.push(rig.a, "add list_dir back").status_code == 200
        result = await client.call_tool("files.list_dir", {"path": "."})  # held until the listing is checked
        assert not result.is_error, result
        assert "files.list_dir" in {t.name for t in (await client.list_tools()).tools}


@pytest.mark.parametrize("who", ["nobody", "agent"])
def test_only_operators_may_read_or_change_policy(rig: Rig, who: str) -> None:
    headers = {} if who == "nobody" else {"Authorization": f"Bearer {rig.gateway.token()}"}
    for method, path in (("GET", "/policy"), ("POST", "/policy/reload"), ("POST", "/policy/rollback"),
                         ("GET", "/policy/versions/x")):
        response = rig.admin(method, path, {"files": rig.b} if method == "POST" else None, headers=headers)
        assert response.status_code == (401 if who == "nobody" else 403), (path, response.text)
    assert rig.status()["history"][0]["action"] != "applied" or rig.status()["history"][0]["author"] == "ops"


async def test_reload_under_load_drops_nothing_and_each_decision_names_one_version(rig: Rig) -> None:
    """Four callers for ~5 s while the policy flips between A and B eight times (every ~0.5-1 s)."""
    engines = {}
    for name, files in (("a", rig.a), ("b", rig.b)):
        response = rig.push(files, f"load {name}")
        assert response.status_code == 200, response.text
        engines[name] = response.json()["engine_version"]
    failures: list[str] = []
    calls = 0
    stop = asyncio.Event()

    async def caller() -> None:
        nonlocal calls
        async with rig.gateway.client() as client:
            while not stop.is_set():
                try:
                    await answer(client)
                except Exception as exc:  # every failure is counted, none is expected
                    failures.append(repr(exc)[:200])
                calls += 1

    async def flipper() -> None:
        async with rig.gateway.client() as client:
            try:
                for turn in range(8):
                    await asyncio.sleep(0.25)  # plus the push itself (~0.3-0.5 s): a reload every ~0.5-1 s
                    name = "a" if turn % 2 else "b"
                    response = await asyncio.to_thread(rig.push, rig.a if name == "a" else rig.b, f"flip {turn}")
                    assert response.status_code == 200, response.text
                    # the swap precedes the answer: the very next call is decided by the new version
                    assert await answer(client) == ("allowed" if name == "a" else "denied")
            finally:
                stop.set()

    first = len(rig.audit("decision"))
    await asyncio.gather(flipper(), *(caller() for _ in range(4)))
    assert failures == [] and calls > 50, (failures[:3], calls)
    named = [re.findall(r'"policy_version": ?"(pv-[^"]+)"', json.dumps(fields))
             for fields in rig.audit("decision")[first:]]
    assert named and all(len(set(found)) == 1 and found[0] in engines.values() for found in named), named[:5]
