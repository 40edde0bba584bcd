"""Replay-diff over a recorded window whose expected changes are known (issue 15).

Two real versions of the demo deployment differ on one number: process_refund's approval
threshold (100 in A, 50 in B). Decision records are written through the real audit writer with
the gateway's own field builders (``decision_json``, ``redact``, ``Principal.to_claims``), each
recording what version A decided. Replaying them must change exactly the refund of 80, count the
hashed-argument records as not replayable, and refuse bad input with exit code 2.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from typer.testing import CliRunner

from portcullis.audit import AuditWriter, SqliteAuditStore
from portcullis.audit.record import redact
from portcullis.cli.main import app
from portcullis.config.loader import load_deployment
from portcullis.identity.principal import Principal
from portcullis.pipeline.auditing import decision_json
from portcullis.policy import policy_set
from portcullis.policy.engine import PolicyEngine, tool_policies
from portcullis.policy.replay import HASHED, MALFORMED, hashed_paths, may_read, replay_diff
from portcullis.policy.versions import VERSIONS_FILE, PolicyVersion, SqlitePolicyVersionStore

DEMO = Path(__file__).resolve().parents[2] / "src" / "portcullis" / "demo" / "deployment"
REFUND = "tools/billing/process_refund.yml"
KEY = b"k" * 32
runner = CliRunner()


def who(agent: str = "billing-bot", user: str = "alice") -> Principal:
    return Principal.from_claims({"client_id": f"{agent}-client", "auth_method": "dev", "issuer": "dev-issuer",
                                  "issuer_name": "dev", "agent_id": agent, "user_id": user, "tenant": "acme"})


def refund(amount: float, reason: str = "damaged") -> dict[str, Any]:
    return {"order_id": "ORD-20001", "amount": amount, "currency": "USD", "reason": reason}


class Rig:
    """A deployment copy, versions A and B stored, and an audit store of A's decisions."""

    def __init__(self, root: Path) -> None:
        self.dep = Path(shutil.copytree(DEMO, root / "deployment"))
        self.state = root / "state"
        self.state.mkdir()
        self.store = root / "audit.sqlite3"
        self.a = policy_set.collect(self.dep)
        self.b = {k: v for k, v in self.a.items() if not k.startswith("policy/fixtures/")}
        self.b[REFUND] = self.a[REFUND].replace("requires_approval_over: 100", "requires_approval_over: 50")
        assert self.b[REFUND] != self.a[REFUND]
        self.engine_a, self.id_a = self._store(self.a)
        self.engine_b, self.id_b = self._store(self.b)
        self.candidate = root / "candidate"
        for name, text in self.b.items():
            (self.candidate / name).parent.mkdir(parents=True, exist_ok=True)
            (self.candidate / name).write_text(text, encoding="utf-8")

    def _store(self, files: dict[str, str]) -> tuple[PolicyEngine, str]:
        engine, _ = policy_set.validate(files, (self.dep / "gateway.yaml").read_bytes(), scratch=self.state / "s",
                                        rego_dir="policy", environment="production", rego_budget_s=10)
        versions = SqlitePolicyVersionStore(self.state / VERSIONS_FILE)
        vid = policy_set.content_id(files)
        versions.put(PolicyVersion(vid, engine.version, 1.0, "ops", "test", files))
        versions.close()
        return engine, vid

    def decided(self, tool: str, principal: Principal, arguments: dict[str, Any],
                hide: tuple[str, ...] = ()) -> dict[str, Any]:
        """A decision record's fields as the gateway writes them: version A's decision, ``hide`` keyed-hashed."""
        decision = self.engine_a.decide(tool, principal, arguments, now=_now())
        service, _, upstream = tool.partition(".")
        return {"environment": "production", "protocol_version": "2025-11-25", "trace_id": None, "span_id": None,
                "principal": principal.to_claims(),
                "tool": {"name": tool, "service": service, "upstream_name": upstream, "definition_hash": "sha256:0",
                         "service_version": None},
                "decision": decision_json(decision), "arguments": redact(arguments, hide, KEY) if hide else arguments}


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def entries(rig: Rig) -> list[tuple[str, dict[str, Any]]]:
    hostile = rig.decided("billing.get_invoice", who(), {"invoice_id": "INV-1"})
    hostile["principal"] = {"agent_id": "\x1b]0;pwned\x07", "client_id": 7,  # not a principal's claim form
                            "user_id": "eve\u202egnp.exe", "tenant": "acme\nFAKE SUMMARY LINE"}
    hostile["tool"]["name"] = "billing.get_invoice\x1b[2J\u200b"
    read = rig.decided("billing.get_invoice", who(), {"invoice_id": "INV-9"})
    read["method"] = "resources/read"
    return [
        ("req-old", rig.decided("billing.process_refund", who(), refund(80))),  # outside the window
        ("req-80", rig.decided("billing.process_refund", who(), refund(80))),  # allow → require_approval
        ("req-30", rig.decided("billing.process_refund", who(), refund(30))),
        ("req-300", rig.decided("billing.process_refund", who(), refund(300))),
        ("req-600", rig.decided("billing.process_refund", who(), refund(600))),
        ("req-stranger", rig.decided("billing.process_refund", who("refund-bot"), refund(80))),
        ("req-hashed-amount", rig.decided("billing.process_refund", who(), refund(75), ("/amount",))),
        ("req-hashed-reason", rig.decided("billing.process_refund", who(), refund(20), ("/reason",))),
        ("req-invoice", rig.decided("billing.get_invoice", who(), {"invoice_id": "INV-1"})),
        ("req-hostile", hostile),
        ("req-read", read),
    ]


async def write(rig: Rig) -> None:
    now = time.time()
    stamps = iter([now - 3 * 86400, *[now - 60 + i for i in range(40)]])
    async with await SqliteAuditStore.open(rig.store) as store:
        async with AuditWriter(store, clock=lambda: next(stamps), max_delay_s=0) as writer:
            for request_id, fields in entries(rig):
                await writer.record("decision", request_id, fields)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Rig:
    made = Rig(tmp_path_factory.mktemp("replay"))
    anyio.run(write, made)
    return made


def diff(rig: Rig, *args: str) -> Any:
    return runner.invoke(app, ["policy", "diff", "--config", str(rig.dep), "--state-dir", str(rig.state),
                               "--store", str(rig.store), *args], env={"COLUMNS": "300"})


def test_exactly_the_known_change_is_listed_and_hashed_rows_are_counted(rig: Rig) -> None:
    result = diff(rig, "--from", rig.id_a, "--to", rig.id_b, "--window", "1h", "--format", "json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert (answer["from"], answer["to"]) == (rig.id_a, rig.id_b)
    assert answer["replayed"] == 6  # 80, 30, 300, 600, the stranger, the invoice
    assert [r["request_id"] for r in answer["rows"]] == ["req-80", "req-stranger"]
    row, stranger = answer["rows"]
    assert (row["agent"], row["user"], row["tenant"], row["tool"]) == ("billing-bot", "alice", "acme",
                                                                       "billing.process_refund")
    assert row["old"] == {"effect": "allow", "rule_ids": []}
    assert row["new"] == {"effect": "require_approval",
                          "rule_ids": ["billing.process_refund/requires_approval_over"]}
    assert row["arguments_hash"].startswith("sha256:")
    # the stranger stays denied by the caller rule; B's lower threshold now fails too: a rules-only change
    assert (stranger["old"]["effect"], stranger["new"]["effect"]) == ("deny", "deny")
    assert set(stranger["new"]["rule_ids"]) - set(stranger["old"]["rule_ids"]) == {
        "billing.process_refund/requires_approval_over"}
    assert answer["transitions"] == {"allow→require_approval": 1, "deny→deny": 1}
    skipped = {r["request_id"]: r["note"] for r in answer["not_replayable_rows"]}
    assert skipped == {"req-hashed-amount": HASHED, "req-hashed-reason": HASHED, "req-hostile": MALFORMED}
    assert answer["limit_reached"] is False


def test_table_output_escapes_record_text_and_ends_with_the_summary(rig: Rig) -> None:
    result = diff(rig, "--from", rig.engine_a.version, "--to", str(rig.candidate), "--window", "1h")
    assert result.exit_code == 0, result.output
    for raw in ("\x1b", "\x07", "\u202e", "\u200b", "\nFAKE"):
        assert raw not in result.output
    assert "\\x1b]0;pwned\\x07" in result.output
    assert result.output.strip().splitlines()[-1] == (
        "6 replayed, 2 changed (allow→require_approval 1, deny→deny 1), 3 not replayable")


def test_the_same_version_changes_nothing_and_the_limit_is_reported(rig: Rig) -> None:
    result = diff(rig, "--from", rig.id_a, "--to", rig.id_a, "--window", "7d", "--limit", "2", "--format", "json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["changed"] == 0 and answer["limit_reached"] is True and answer["records_read"] == 2


@pytest.mark.parametrize("args", [
    ["--from", "ps-00", "--to", "ps-11"],  # unknown versions
    ["--from", "../../etc/passwd", "--to", "ps-11"],  # not a version id
    ["--from", "VERSION", "--to", "/nonexistent/dir"],  # filled in: an unknown directory
    ["--window", "24x"], ["--window", "0h"], ["--window", "-1h"], ["--window", "1e9d"], ["--window", "400d"],
    ["--window", ""], ["--window", "24h\n"], ["--window", "1h; rm"],
])
def test_bad_input_is_refused_with_exit_code_2(rig: Rig, args: list[str]) -> None:
    args = [rig.id_a if a == "VERSION" else a for a in args]
    if "--from" not in args:
        args = ["--from", rig.id_a, "--to", rig.id_b, *args]
    result = diff(rig, *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "/etc/passwd" not in result.output


def test_an_unreadable_audit_store_is_exit_1(rig: Rig, tmp_path: Path) -> None:
    result = runner.invoke(app, ["policy", "diff", "--config", str(rig.dep), "--state-dir", str(rig.state),
                                 "--store", str(tmp_path / "none.sqlite3"), "--from", rig.id_a, "--to", rig.id_b])
    assert result.exit_code == 1 and not (tmp_path / "none.sqlite3").exists()


def test_a_candidate_directory_is_named_by_the_id_apply_would_give_it(rig: Rig) -> None:
    result = diff(rig, "--from", rig.id_a, "--to", str(rig.candidate), "--window", "1h", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["to"] == rig.id_b


def test_a_missing_gateway_yaml_is_exit_2(rig: Rig, tmp_path: Path) -> None:
    result = runner.invoke(app, ["policy", "diff", "--config", str(tmp_path), "--from", rig.id_a, "--to", rig.id_b])
    assert result.exit_code == 2


# ----------------------------------------------------------------- soundness of "replayable despite a hash"


@pytest.fixture(scope="module")
def native(rig: Rig) -> PolicyEngine:
    """Version A's native policies with no Rego modules: argument reads are known exactly."""
    return PolicyEngine.build(tool_policies(load_deployment(rig.dep).manifests), None, environment="production")


@pytest.mark.parametrize(("tool", "hidden", "reads"), [
    ("billing.process_refund", ("/amount",), True),  # the thresholds read it
    ("billing.process_refund", ("/currency",), True),  # allowed_currencies reads it
    ("billing.process_refund", ("",), True),  # every value hashed
    ("billing.process_refund", ("/reason",), False),  # no native rule reads it
    ("billing.process_refund", ("/order_id",), False),
    ("billing.no_such_tool", ("",), False),  # a no_policy deny whatever the arguments
])
def test_may_read_is_exact_for_native_policies(native: PolicyEngine, tool: str, hidden: tuple[str, ...],
                                               reads: bool) -> None:
    arguments = redact(refund(75), hidden, KEY)
    assert may_read(native, tool, list(hashed_paths(arguments))) is reads


def test_rego_modules_make_any_hashed_argument_unreplayable(rig: Rig) -> None:
    arguments = redact(refund(75), ("/order_id",), KEY)
    assert may_read(rig.engine_a, "billing.process_refund", list(hashed_paths(arguments))) is True


def test_hashed_paths_find_nested_and_listed_hashes() -> None:
    arguments = redact({"a": {"b": [1, {"c": "x"}]}, "d": "hmac-sha256:abc"}, ("/a/b/1/c",), KEY)
    assert sorted(hashed_paths(arguments)) == [("a", "b", "1", "c"), ("d",)]


async def test_pure_core_replays_a_hashed_unread_argument_without_rego(rig: Rig, native: PolicyEngine) -> None:
    async with await SqliteAuditStore.open_readonly(rig.store) as store:
        records = await store.select_records("SELECT idx, ts, request_id, kind, fields, prev_hash, hash "
                                             "FROM audit_record ORDER BY idx", [])
    result = replay_diff(records, native, native)
    assert [r.request_id for r in result.not_replayable] == ["req-hashed-amount", "req-hostile"]
    assert result.replayed == 8 and result.changed == ()
