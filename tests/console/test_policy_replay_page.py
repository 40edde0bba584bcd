"""The policy page's replay-diff: an operator replays the recorded decisions of a window against two stored
versions in a CHILD process (``portcullis policy diff --format json``) and sees what would change; only
operators, only with the CSRF token, only well-formed version ids and a listed window (else no child starts);
one replay at a time; a child that fails or overruns its time is an error page without details.

Versions A (the demo) and B (process_refund: EUR only) are stored in a SQLite version store; the trail holds
what A decided for a USD refund of 30 (allowed), which B denies."""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from portcullis.audit import AuditWriter, SqliteAuditStore
from portcullis.console.replay import ChildReplayer, ReplayBusy
from portcullis.identity.principal import Principal
from portcullis.pipeline.auditing import decision_json
from portcullis.policy import policy_set
from portcullis.policy.versions import VERSIONS_FILE, PolicyVersion, SqlitePolicyVersionStore
from tests.console.conftest import csrf_of, dev_login
from tests.console.ops import DEMO, HOSTILE, Ops, ops_console

REFUND = "tools/billing/process_refund.yml"
REPLAY = "/console/containment/policy/replay"


@dataclass
class Rig:
    dep: Path
    state: Path
    store: Path
    id_a: str
    id_b: str


def _bot() -> Principal:
    return Principal.from_claims({"client_id": "billing-bot-client", "auth_method": "dev", "issuer": "dev-issuer",
                                  "issuer_name": "dev", "agent_id": "billing-bot", "user_id": "alice",
                                  "tenant": "acme"})


async def _rig(root: Path) -> Rig:
    dep = Path(shutil.copytree(DEMO, root / "replay-deployment"))
    state, store = root / "replay-state", root / "replay-audit.sqlite3"
    state.mkdir()
    a = policy_set.collect(dep)
    b = {k: v for k, v in a.items() if not k.startswith("policy/fixtures/")}
    b[REFUND] = a[REFUND].replace('allowed_currencies: ["USD", "EUR"]', 'allowed_currencies: ["EUR"]')
    assert b[REFUND] != a[REFUND]
    versions = SqlitePolicyVersionStore(state / VERSIONS_FILE)
    engines = {}
    for files in (a, b):
        engine, _ = policy_set.validate(files, (dep / "gateway.yaml").read_bytes(), scratch=state / "s",
                                        rego_dir="policy", environment="production", rego_budget_s=10)
        vid = policy_set.content_id(files)
        versions.put(PolicyVersion(vid, engine.version, 1.0, "ops", "test", files))
        engines[vid] = engine
    versions.close()
    id_a, id_b = policy_set.content_id(a), policy_set.content_id(b)
    arguments = {"order_id": "ORD-20001", "amount": 30, "currency": "USD", "reason": "damaged"}
    decision = engines[id_a].decide("billing.process_refund", _bot(), arguments, now=datetime.now(UTC))
    assert decision_json(decision)["effect"] == "allow"
    fields = {"environment": "production", "protocol_version": "2025-11-25", "trace_id": None, "span_id": None,
              "principal": _bot().to_claims(),
              "tool": {"name": "billing.process_refund", "service": "billing", "upstream_name": "process_refund",
                       "definition_hash": "sha256:0", "service_version": None},
              "decision": decision_json(decision), "arguments": arguments}
    async with await SqliteAuditStore.open(store) as opened:
        async with AuditWriter(opened, clock=time.time, max_delay_s=0) as writer:
            await writer.record("decision", "req-usd-30", fields)
    return Rig(dep, state, store, id_a, id_b)


def _dir(path: Path) -> Path:
    path.mkdir()
    return path


class Spy:
    """A replayer that records calls and starts nothing."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    async def run(self, old: str, new: str, window: str) -> dict[str, Any]:
        self.calls.append((old, new, window))
        return {"replayed": 0, "changed": 0, "rows": []} if len(self.calls) == 1 else {
            "replayed": 1, "changed": 1, "transitions": {HOSTILE: 1},
            "rows": [{"ts": 1e30, "request_id": HOSTILE, "agent": HOSTILE, "user": HOSTILE, "tool": HOSTILE,
                      "old": {"effect": HOSTILE, "rule_ids": [HOSTILE]}, "new": "not an object"}]}


@pytest.fixture
async def spied(tmp_path: Path) -> AsyncIterator[tuple[Ops, Spy]]:
    spy = Spy()
    async for value in ops_console(tmp_path, replay=spy):
        yield value, spy


async def _operator(ops: Ops) -> str:
    await dev_login(ops.client, "olga", "platform")
    return csrf_of((await ops.client.get("/console/containment/policy")).text)


async def test_an_operator_replays_and_sees_the_decision_the_new_version_denies(tmp_path: Path) -> None:
    rig = await _rig(tmp_path)
    runner = ChildReplayer(rig.dep, rig.state, rig.store, timeout_s=120)
    async for ops in ops_console(_dir(tmp_path / "console"), replay=runner):
        token = await _operator(ops)
        start = ops.reloader.version
        diff = (await ops.client.get(f"/console/containment/policy/diff?from={start}&to={start}")).text
        assert diff.count('id="replay-form"') == 1 and "<title>Policy diff" in diff and '<option value="7d">' in diff
        page = await ops.client.post(REPLAY, data={"csrf_token": token, "from": rig.id_a, "to": rig.id_b,
                                                   "window": "1h"})
        assert page.status_code == 200, page.text
        assert runner.started == 1
        assert '<dd id="replay-replayed">1</dd>' in page.text and '<dd id="replay-changed">1</dd>' in page.text
        row = page.text.split('id="replay-rows"')[1]
        assert "req-usd-30" in row and "billing.process_refund" in row
        assert "allow &rarr; deny" in row
        assert "billing.process_refund/allowed_currencies" in row


async def test_a_replay_is_for_operators_with_the_token_and_well_formed_input(spied: tuple[Ops, Spy]) -> None:
    ops, spy = spied
    good = {"from": "ps-" + "a" * 64, "to": "ps-" + "b" * 64, "window": "24h"}
    responder = ops.new_client()
    await dev_login(responder, "rita", "oncall")
    rtoken = csrf_of((await responder.get("/console/containment")).text)
    refused = await responder.post(REPLAY, data={"csrf_token": rtoken, **good})
    assert refused.status_code == 403 and "operators" in refused.text
    token = await _operator(ops)
    assert (await ops.client.post(REPLAY, data=good)).status_code == 403  # no CSRF token
    for hostile in ({"from": "ps-1; rm -rf /"}, {"to": "--config=/etc"}, {"from": "PS-ABC"}, {"to": "../x"},
                    {"window": "366d"}, {"window": "24h --limit 1"}, {"window": ""}, {"from": "ps-" + "a" * 65}):
        answer = await ops.client.post(REPLAY, data={"csrf_token": token, **good, **hostile})
        assert answer.status_code == 400, hostile
    assert spy.calls == []  # no child for any of them
    done = await ops.client.post(REPLAY, data={"csrf_token": token, **good})
    assert done.status_code == 200 and spy.calls == [(good["from"], good["to"], "24h")]
    assert "No recorded decision would change." in done.text
    # a child's answer is record-derived: every string escaped and its hidden characters shown
    shown = await ops.client.post(REPLAY, data={"csrf_token": token, **good})
    assert shown.status_code == 200 and "<script>alert(1)" not in shown.text and "\u202e" not in shown.text
    assert shown.text.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 6 and "\\u{202E}gnp.exe" in shown.text


async def test_a_child_that_overruns_is_killed_and_shown_as_an_error(tmp_path: Path) -> None:
    rig = await _rig(tmp_path)
    runner = ChildReplayer(rig.dep, rig.state, rig.store, timeout_s=0.001)
    async for ops in ops_console(_dir(tmp_path / "console"), replay=runner):
        token = await _operator(ops)
        page = await ops.client.post(REPLAY, data={"csrf_token": token, "from": rig.id_a, "to": rig.id_b,
                                                   "window": "7d"})
        assert page.status_code == 504 and "did not finish" in page.text
        assert runner.started == 1
        assert runner.last_exit == -signal.SIGKILL  # killed, not waited for
        assert str(tmp_path) not in page.text and "Traceback" not in page.text


async def test_a_failing_child_is_an_error_page_without_paths(tmp_path: Path) -> None:
    rig = await _rig(tmp_path)
    runner = ChildReplayer(rig.dep, rig.state, rig.store, timeout_s=120)
    async for ops in ops_console(_dir(tmp_path / "console"), replay=runner):
        token = await _operator(ops)
        page = await ops.client.post(REPLAY, data={"csrf_token": token, "from": "ps-" + "0" * 64, "to": rig.id_b,
                                                   "window": "1h"})  # well-formed, not stored: exit code 2
        assert page.status_code == 502 and "The replay failed" in page.text
        assert str(tmp_path) not in page.text and "Traceback" not in page.text


async def test_an_answer_over_the_output_cap_is_refused(tmp_path: Path) -> None:
    rig = await _rig(tmp_path)
    runner = ChildReplayer(rig.dep, rig.state, rig.store, timeout_s=120, max_output=16)
    async for ops in ops_console(_dir(tmp_path / "console"), replay=runner):
        token = await _operator(ops)
        page = await ops.client.post(REPLAY, data={"csrf_token": token, "from": rig.id_a, "to": rig.id_b,
                                                   "window": "24h"})
        assert page.status_code == 502 and "too large" in page.text and runner.started == 1


async def test_one_replay_at_a_time(tmp_path: Path) -> None:
    runner = ChildReplayer(tmp_path, tmp_path, None)
    async with runner._lock:  # a replay running
        with pytest.raises(ReplayBusy):
            await runner.run("ps-ab", "ps-cd", "1h")
    assert runner.started == 0


async def test_a_second_replay_gets_the_busy_page(tmp_path: Path) -> None:
    runner = ChildReplayer(tmp_path, tmp_path, None)
    async for ops in ops_console(_dir(tmp_path / "console"), replay=runner):
        token = await _operator(ops)
        async with runner._lock:
            page = await ops.client.post(REPLAY, data={"csrf_token": token, "from": "ps-ab", "to": "ps-cd",
                                                       "window": "1h"})
        assert page.status_code == 409 and "A replay is running" in page.text
        assert runner.started == 0
