"""Shadow evaluation end to end: a shadow version whose own Rego denies what the active version allows
records the disagreement while the call succeeds; a stopped shadow worker never touches the enforced
path (the error is counted); a restart keeps the shadow.

One gateway (the demo deployment) for the module, restarted once over the same state directory; calls
with the official SDK client. Version S is the demo plus a Rego module that denies ``billing.get_invoice``
(and without the golden fixtures, which expect that call to be allowed).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml

from portcullis.policy.policy_set import collect
from tests.e2e.harness import GatewayProcess, copy_demo

pytestmark = pytest.mark.xdist_group("e2e/test_policy_shadow_e2e.py")

TOOL = "billing.get_invoice"
ARGS = {"invoice_id": "INV-1001"}
OPERATOR = "issuer:dev/user:ops"
DENY = """package portcullis.shadowtest

import rego.v1

deny contains {"id": "no_invoices", "reason": "no_invoices"} if {
	input.tool.name == "billing.get_invoice"
}
"""


class Rig:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.gateway = GatewayProcess(root)
        self.a = collect(root)
        self.s = {k: v for k, v in self.a.items() if not k.startswith("policy/fixtures/")}
        self.s["policy/shadow_test.rego"] = DENY
        self.shadow = ""

    def start(self) -> None:
        state = self.gateway.state_dir
        self.gateway = GatewayProcess(self.root, state_dir=state)
        self.gateway.wait_ready()

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx2.Response:
        token = self.gateway.token(user="ops", agent=None)
        return httpx2.request(method, self.gateway.admin_base + path, json=body, timeout=120,
                              headers={"Authorization": f"Bearer {token}"})

    def audit(self, kind: str) -> list[dict[str, Any]]:
        with sqlite3.connect(self.gateway.state_dir / "audit.sqlite3") as db:
            rows = db.execute("SELECT fields FROM audit_record WHERE kind = ? ORDER BY idx", (kind,)).fetchall()
        return [json.loads(row[0]) for row in rows]

    def shadow_count(self, result: str) -> float:
        scrape = httpx2.get(f"{self.gateway.admin_base}/metrics", timeout=15).text
        found = re.search(rf'^portcullis_shadow_version_total{{result="{result}"}} (\S+)$', scrape, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    async def call(self) -> None:
        async with self.gateway.client() as client:
            result = await client.call_tool(TOOL, ARGS)
        assert not result.is_error, result


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = copy_demo(tmp_path_factory.mktemp("shadow") / "deployment")
    config = yaml.safe_load((root / "gateway.yaml").read_text())
    config["admin"] = {"operators": [OPERATOR]}
    (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    rig = Rig(root)
    try:
        rig.gateway.wait_ready()
        applied = rig.admin("POST", "/policy/reload", {"files": rig.s, "message": "candidate S"})
        assert applied.status_code == 200, applied.text
        rig.shadow = applied.json()["version"]
        assert rig.admin("POST", "/policy/rollback", {"message": "back to A"}).status_code == 200
        yield rig
    finally:
        rig.gateway.stop()


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found |= {int(child) for child in text}
    return found


def _zygotes(pid: int) -> set[int]:
    return {child for child in _children(pid)
            if b"rego_worker" in Path(f"/proc/{child}/cmdline").read_bytes()}


def _records_of_newest_call(rig: Rig, count: int) -> tuple[dict[str, Any], dict[str, Any]]:
    deadline = time.monotonic() + 30
    while True:
        decisions, outcomes = rig.audit("decision"), rig.audit("outcome")
        if len(decisions) >= count and len(outcomes) >= count:
            return decisions[-1], outcomes[-1]
        assert time.monotonic() < deadline, "records not written"
        time.sleep(0.1)


async def _shadowed_call(rig: Rig) -> dict[str, Any]:
    """Call until a call's records carry the shadow's result (its decision record, else — pending there —
    its outcome record; on a loaded machine the result can be later than both, so try a few calls)."""
    for _ in range(5):
        count = len(rig.audit("decision")) + 1
        await rig.call()
        decision, outcome = _records_of_newest_call(rig, count)
        assert decision["decision"]["effect"] == "allow"
        recorded = decision["decision"]["shadow_version"]
        if recorded.get("pending"):
            recorded = outcome["shadow_version"]
        if "error" not in recorded:
            return dict(recorded)
    raise AssertionError(f"no shadow result recorded: {recorded}")


async def test_a_shadow_whose_rego_denies_records_a_disagreement_and_the_call_succeeds(rig: Rig) -> None:
    set_ = rig.admin("POST", "/policy/shadow", {"version": rig.shadow})
    assert set_.status_code == 200 and set_.json()["status"] == "shadow_set", set_.text
    status = rig.admin("GET", "/policy").json()
    assert status["shadow"]["version"] == rig.shadow and status["shadow"]["rego_workers"] == "ready"
    before = rig.shadow_count("disagree")
    shadow = await _shadowed_call(rig)
    assert shadow["version"] == rig.shadow and shadow["effect"] == "deny"
    assert "rego/no_invoices" in shadow["rule_ids"]
    deadline = time.monotonic() + 30
    while rig.shadow_count("disagree") <= before:
        assert time.monotonic() < deadline
        time.sleep(0.1)


async def test_a_stopped_shadow_worker_leaves_the_enforced_path_alone_and_is_counted(rig: Rig) -> None:
    """The shadow's own worker is stopped (SIGSTOP: it never answers): the call is answered as before,
    and the shadow evaluation ends at the wall-clock backstop as a counted error."""
    assert rig.admin("DELETE", "/policy/shadow").status_code == 200
    before_set = _zygotes(rig.gateway.proc.pid)
    assert rig.admin("POST", "/policy/shadow", {"version": rig.shadow}).status_code == 200
    new = _zygotes(rig.gateway.proc.pid) - before_set
    assert len(new) == 1, new  # the shadow's own pool
    workers = _children(new.pop())
    assert workers
    errors = rig.shadow_count("error")
    for worker in workers:
        os.kill(worker, signal.SIGSTOP)
    try:
        await rig.call()
        await rig.call()  # the second finds the first's worker gone or busy: also an error, never a delay
        deadline = time.monotonic() + 60
        while rig.shadow_count("error") < errors + 1:
            assert time.monotonic() < deadline, "shadow error not counted"
            time.sleep(0.1)
        assert rig.audit("decision")[-1]["decision"]["effect"] == "allow"
    finally:
        for worker in workers:
            try:
                os.kill(worker, signal.SIGCONT)
            except ProcessLookupError:
                pass


async def test_a_restart_keeps_the_shadow(rig: Rig) -> None:
    assert rig.admin("GET", "/policy").json()["shadow"]["version"] == rig.shadow
    rig.gateway.stop()
    rig.start()
    deadline = time.monotonic() + 60
    while (status := rig.admin("GET", "/policy").json()).get("shadow") is None:
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert status["shadow"]["version"] == rig.shadow
    shadow = await _shadowed_call(rig)  # decided by the restored shadow
    assert shadow["version"] == rig.shadow and shadow["effect"] == "deny"
