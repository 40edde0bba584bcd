"""Resource and prompt manifests follow a policy version end to end (official SDK client, a gateway process).

Version A is the demo. Version B takes the billing bots off the handbook index (``resources/read`` refused
like an unknown resource), raises the index's output class to Confidential (its outcome records say so), and
makes the summarize_file prompt available to them (``prompts/get`` answers). ``portcullis policy apply DIR``
makes B active, ``portcullis policy rollback`` brings A back; a broken resource manifest is refused whole while
A keeps serving; SIGHUP re-reads the deployment directory.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import MCPError

from portcullis.policy.policy_set import LOAD, collect
from tests.e2e.harness import GatewayProcess, audit_fields, copy_demo_with_operators, run_cli

pytestmark = pytest.mark.xdist_group("e2e/test_surface_reload_e2e.py")

OPERATOR = "issuer:dev/user:ops"
INDEX = "resources/files/handbook-index.yml"
PROMPT = "prompts/files/summarize_file.yml"
INDEX_URI = "files+handbook://index"
PROMPT_NAME = "files.summarize_file"
BOTS = '"issuer:dev/agent:billing-*", '


class Rig:
    def __init__(self, gateway: GatewayProcess, root: Path) -> None:
        self.gateway, self.root = gateway, root
        self.a = collect(root)
        self.b = {k: v for k, v in self.a.items() if not k.startswith("policy/fixtures/")}
        self.b[INDEX] = self.a[INDEX].replace(BOTS, "").replace("output: Internal", "output: Confidential")
        self.b[PROMPT] = self.a[PROMPT].replace('["issuer:dev/role:employee"]',
                                                '["issuer:dev/role:employee", "issuer:dev/agent:billing-*"]')
        assert self.b[INDEX] != self.a[INDEX] and self.b[PROMPT] != self.a[PROMPT]
        self.ops = gateway.token(user="ops", agent=None)
        self.bot = gateway.token(user=None, agent="billing-bot")
        self.staff = gateway.token(user="erin", agent=None, roles=["employee"])

    def cli(self, *args: str) -> Any:
        return run_cli("policy", *args, "--admin-url", self.gateway.admin_base, env={"PORTCULLIS_TOKEN": self.ops})

    def status(self) -> Any:
        return httpx2.get(self.gateway.admin_base + "/policy", timeout=30,
                          headers={"Authorization": f"Bearer {self.ops}"}).json()

    def readyz(self) -> Any:
        return httpx2.get(self.gateway.admin_base + "/readyz", timeout=10).json()

    def write(self, target: Path, files: dict[str, str]) -> Path:
        for name, text in files.items():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_text(text)
        return target


async def index_read(client: Any) -> str:
    """``read`` or ``not found``: both are answers; anything else fails the test."""
    try:
        contents = (await client.read_resource(INDEX_URI)).contents
    except MCPError as exc:
        assert exc.error.message == "Resource not found", exc.error.message
        return "not found"
    assert contents and contents[0].text.split("\n") == ["expenses", "holidays"]
    return "read"


async def prompt_get(client: Any) -> str:
    try:
        result = await client.get_prompt(PROMPT_NAME, {"path": "handbook/expenses.txt"})
    except MCPError as exc:
        assert exc.error.message == "Unknown prompt", exc.error.message
        return "unknown"
    assert result.messages[0].content.text.startswith("Summarize this file (handbook/expenses.txt)")
    return "got"


def index_class(rig: Rig) -> tuple[str, str]:
    """The last index read's output class (outcome record) and the policy version its decision names."""
    state = rig.gateway.state_dir
    decision = [r for r in audit_fields(state, "decision") if r.get("tool", {}).get("name") == INDEX_URI][-1]
    outcome = [r for r in audit_fields(state, "outcome") if r.get("method") == "resources/read"][-1]
    return outcome["output"]["classification"], decision["decision"]["policy_version"]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = copy_demo_with_operators(tmp_path_factory.mktemp("surface-reload") / "deployment", OPERATOR)
    with GatewayProcess(root) as gateway:
        yield Rig(gateway, root)


async def test_apply_and_rollback_change_resources_and_prompts_at_once(rig: Rig, tmp_path: Path) -> None:
    start = rig.status()
    async with rig.gateway.client(token=rig.bot) as bot, rig.gateway.client(token=rig.staff) as staff:
        assert (await index_read(bot), await prompt_get(bot)) == ("read", "unknown")
        assert await index_read(staff) == "read"
        class_a, version_a = index_class(rig)
        assert class_a == "Internal"

        applied = rig.cli("apply", str(rig.write(tmp_path / "b", rig.b)), "-m", "bots: prompt yes, index no")
        assert applied.returncode == 0, applied.stderr
        since = time.monotonic()
        # the swap happens before apply answers: the very next read and get see version B
        assert (await index_read(bot), await prompt_get(bot)) == ("not found", "got")
        print(f"new behaviour observed {time.monotonic() - since:.3f} s after apply returned")
        assert PROMPT_NAME in {p.name for p in (await bot.list_prompts()).prompts}
        assert await index_read(staff) == "read"
        class_b, version_b = index_class(rig)
        assert class_b == "Confidential" and version_b != version_a  # one version per record: B's
        assert rig.status()["version"] != start["version"]
        shown = httpx2.get(f"{rig.gateway.admin_base}/policy/versions/{version_b}", timeout=30,
                           headers={"Authorization": f"Bearer {rig.ops}"}).json()  # the read record's pv- finds B
        assert shown["id"] == rig.status()["version"] and shown["files"][INDEX] == rig.b[INDEX]
        assert shown["surface_engine_version"] == version_b
        assert [r for r in audit_fields(rig.gateway.state_dir, "policy_version") if r["action"] == "applied"][-1][
            "surface_engine_version"] == version_b

        back = rig.cli("rollback", "-m", "undo")
        assert back.returncode == 0, back.stderr
        assert (await index_read(bot), await prompt_get(bot)) == ("read", "unknown")
        assert await index_read(staff) == "read"
        assert index_class(rig) == ("Internal", version_a)
        assert rig.status()["version"] == start["version"]


async def test_a_broken_resource_manifest_is_refused_whole_and_the_old_version_serves(rig: Rig,
                                                                                   tmp_path: Path) -> None:
    before = rig.status()
    broken = {**rig.b, INDEX: rig.b[INDEX].replace("service: files", "service: nowhere")}  # the rest is good
    refused = rig.cli("apply", str(rig.write(tmp_path / "broken", broken)), "-m", "broken index")
    assert refused.returncode != 0 and LOAD in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stdout + refused.stderr
    after = rig.status()
    assert (after["version"], after["engine_version"]) == (before["version"], before["engine_version"])
    assert after["status"] == "degraded" and after["reason"] == LOAD
    ready = rig.readyz()
    assert ready["status"] == "degraded" and ready["policy"]["reason"] == LOAD
    async with rig.gateway.client(token=rig.bot) as bot:  # version A, whole: neither half of the push
        assert (await index_read(bot), await prompt_get(bot)) == ("read", "unknown")
    good = rig.cli("rollback", before["version"], "-m", "a good version again")
    assert good.returncode == 0, good.stderr
    assert rig.status()["status"] == "ok"


async def test_sighup_rereads_the_resource_and_prompt_manifests(rig: Rig, tmp_path: Path) -> None:
    start = rig.status()
    for name in rig.a:
        if name.startswith("policy/fixtures/"):
            (rig.root / name).rename(tmp_path / Path(name).name)
    rig.write(rig.root, {INDEX: rig.b[INDEX], PROMPT: rig.b[PROMPT]})
    try:
        async with rig.gateway.client(token=rig.bot) as bot:
            rig.gateway.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 30
            while await prompt_get(bot) == "unknown" and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert (await index_read(bot), await prompt_get(bot)) == ("not found", "got")
            assert rig.status()["history"][0]["author"] == "signal:SIGHUP"
            rolled = rig.cli("rollback", start["version"], "-m", "back to the start")
            assert rolled.returncode == 0, rolled.stderr
            assert (await index_read(bot), await prompt_get(bot)) == ("read", "unknown")
    finally:
        rig.write(rig.root, {INDEX: rig.a[INDEX], PROMPT: rig.a[PROMPT]})
        for name in rig.a:
            if name.startswith("policy/fixtures/"):
                (tmp_path / Path(name).name).rename(rig.root / name)
