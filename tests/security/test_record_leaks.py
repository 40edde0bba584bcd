"""No leak through the record: a secret in an argument the policy redacts never reaches any record.

The demo's Rego module obliges ``/reason`` of a refund to be redacted (it may hold personal data).
A canary secret is sent there in calls that the policy allows, denies natively (before Rego ever
decided anything), refuses at the gate, refuses as invalid, and holds for approval. Then every
place a call leaves a trace is searched for the canary, byte for byte:

* the audit store (the SQLite file and its WAL),
* the SIEM JSON lines export,
* the gateway's own log,
* the approval notice delivered to the chat webhook, and the signed link's unauthenticated preview,
* the approver's authenticated view (``GET /approvals/<id>``, with the recent-calls history),
* the CLI: ``portcullis approvals list`` / ``show`` and ``portcullis audit search`` / ``timeline``.

A second table drives every decision path in process (native rules, Rego, an evaluation error,
limits, risk, the gate) with a Rego module that obliges the redaction, and searches every record.

Each must hold the canary's *keyed hash* where it shows arguments at all, and never the value.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import yaml
from mcp import MCPError

from portcullis.policy.rego import RegoPolicy
from portcullis.state.memory import FailingStateStore
from tests.e2e.harness import GatewayProcess, copy_demo, run_cli
from tests.e2e.test_approvals import _Sink
from tests.security.harness import BOT, STRANGER, in_process_gateway

REFUND = "billing.process_refund"
CANARY = "sk_live_canary_" + secrets.token_hex(12)
NOTIFY_KEY = "n" * 32


def refund(amount: Any, *, currency: str = "USD", order: str = "ORD-20001") -> dict[str, Any]:
    return {"order_id": order, "amount": amount, "currency": currency, "reason": f"customer said {CANARY}"}


@dataclass(frozen=True)
class Row:
    name: str
    arguments: dict[str, Any]
    agent: str | None = "billing-bot"  # who calls (a stranger's agent is refused at the gate)
    outcome: str = "ok"  # ok, refused, held, invalid


ROWS = [
    Row("allowed", refund(80)),
    Row("natively-denied-over-max-amount", refund(600, order="ORD-20002")),
    Row("natively-denied-currency", refund(50, currency="JPY", order="ORD-20003")),
    Row("natively-denied-two-rules", refund(900, currency="JPY", order="ORD-20004")),
    Row("held-for-approval", refund(300, order="ORD-20005"), outcome="held"),
    Row("held-for-approval-two-approvers", refund(450, order="ORD-20006"), outcome="held"),
    Row("refused-at-the-gate", refund(80, order="ORD-20007"), agent="rogue-bot", outcome="refused"),
    Row("invalid-arguments", {**refund(80, order="ORD-20008"), "amount": "eighty"}, outcome="invalid"),
]


@dataclass
class Run:
    gateway: GatewayProcess
    root: Path
    sink: _Sink
    approval_ids: list[str]
    answers: dict[str, Any]


# one worker runs the whole module, so its module-scoped gateway starts once (tests/conftest.py)
pytestmark = pytest.mark.xdist_group("security/test_record_leaks.py")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """The demo gateway with a JSONL SIEM export and a notice webhook, after every row's call."""
    sink = _Sink()
    root = copy_demo(tmp_path_factory.mktemp("leaks") / "deployment")
    (root / "exports").mkdir()
    config = yaml.safe_load((root / "gateway.yaml").read_text())
    config["audit"] = {"siem": {"exporters": [{"type": "jsonl", "path": "exports/audit.jsonl", "fsync": False}]}}
    config["approvals"]["notify"] = {"webhook_url": sink.url, "secret_ref": "secret://env/PORTCULLIS_TEST_NOTIFY",
                                     "link_base": "https://approvals.example", "allow_insecure_http": True}
    (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    gateway = GatewayProcess(root, env={"PORTCULLIS_TEST_NOTIFY": NOTIFY_KEY})
    answers: dict[str, Any] = {}
    approval_ids: list[str] = []
    try:
        gateway.wait_ready()

        async def calls() -> None:
            for row in ROWS:
                async with gateway.client(token=gateway.token(agent=row.agent)) as client:
                    try:
                        answers[row.name] = await client.call_tool(REFUND, row.arguments)
                    except MCPError as exc:
                        answers[row.name] = exc
                        if exc.code == -31010:
                            approval_ids.append(exc.data["approval_id"])

        anyio.run(calls)
        deadline = time.monotonic() + 20
        while len(sink.received) < len(approval_ids) and time.monotonic() < deadline:
            time.sleep(0.05)
        yield Run(gateway, root, sink, approval_ids, answers)
    finally:
        gateway.stop()
        sink.close()


def _no_canary(where: str, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    assert CANARY.encode() not in data, f"the canary leaked into {where}"
    assert CANARY.encode("utf-16-le") not in data, f"the canary leaked into {where} (UTF-16)"


def test_every_row_was_decided_as_its_table_says(run: Run) -> None:
    """The table's calls were allowed, refused or held as named (so each path was really exercised)."""
    for row in ROWS:
        answer = run.answers[row.name]
        if row.outcome == "ok" and row.name == "allowed":
            assert not isinstance(answer, MCPError), answer
        elif row.outcome == "held":
            assert isinstance(answer, MCPError) and answer.code == -31010, (row.name, answer)
        else:
            assert isinstance(answer, MCPError), (row.name, answer)
    assert len(run.approval_ids) == 2 and len(run.sink.received) == 2


def test_the_canary_is_not_in_the_audit_store(run: Run) -> None:
    """Neither the audit database nor its write-ahead log holds the redacted value, whatever the effect."""
    files = [p for p in run.gateway.state_dir.rglob("*") if p.is_file()]
    assert any(p.name.startswith("audit.sqlite3") for p in files)
    for path in files:
        _no_canary(str(path), path.read_bytes())


def test_the_siem_export_hashes_the_redacted_argument_of_every_decision(run: Run) -> None:
    """Every exported decision record with arguments shows /reason as a keyed hash, denied ones included."""
    path = run.root / "exports" / "audit.jsonl"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (not path.exists() or len(path.read_bytes().splitlines()) < 10):
        time.sleep(0.05)
    raw = path.read_bytes()
    _no_canary("the SIEM export", raw)
    decisions = [json.loads(line) for line in raw.splitlines()]
    decisions = [r["fields"] for r in decisions if r["kind"] == "decision"]
    effects = {d["decision"]["effect"] for d in decisions}
    assert {"allow", "deny", "require_approval"} <= effects
    for fields in decisions:
        assert str(fields["arguments"]["reason"]).startswith("hmac-sha256:"), fields


def test_the_gateway_log_never_holds_the_canary(run: Run) -> None:
    """The gateway's own log lines carry no argument value of any call."""
    _no_canary("the gateway log", run.gateway.log())


def test_approval_notices_carry_the_summary_and_hash_only(run: Run) -> None:
    """A notice names the call and its bound hash; no argument (redacted or not) travels to the chat."""
    for _headers, body in run.sink.received:
        _no_canary("an approval notice", body)
        notice = json.loads(body)
        assert notice["approval"]["arguments_hash"].startswith("sha256:")
        assert notice["approval"]["arguments_hash"] in notice["approval"]["summary"]
        assert "ORD-2000" not in body.decode() and '"amount"' not in body.decode()


def test_the_signed_link_preview_shows_no_arguments(run: Run) -> None:
    """Following a notice's link without credentials shows the summary and the hash, never an argument."""
    for _headers, body in run.sink.received:
        notice = json.loads(body)
        for button in notice["blocks"][-1]["elements"]:
            link = button["url"].replace("https://approvals.example", run.gateway.admin_base)
            shown = httpx2.get(link, timeout=15)
            assert shown.status_code == 200
            _no_canary("the link preview", shown.content)
            assert "arguments" not in shown.json() and "ORD-2000" not in shown.text
            assert shown.json()["arguments_hash"] == notice["approval"]["arguments_hash"]


def test_the_approver_sees_what_the_policy_allows_and_the_hash_of_everything(run: Run) -> None:
    """An authenticated approver sees the arguments with /reason keyed-hashed, the full hash and the history."""
    bob = run.gateway.token(user="bob", agent=None, roles=["finance-approver"])
    for approval_id in run.approval_ids:
        view = httpx2.get(f"{run.gateway.admin_base}/approvals/{approval_id}",
                          headers={"Authorization": f"Bearer {bob}"}, timeout=15)
        assert view.status_code == 200, view.text
        _no_canary("the approver's view", view.content)
        body = view.json()
        assert body["arguments"]["reason"].startswith("hmac-sha256:")
        assert body["arguments"]["order_id"].startswith("ORD-2000")  # what the policy does not hide is shown
        assert body["arguments_hash"].startswith("sha256:")
        assert body["recent_calls"], "the requester's recent calls are part of the view"


def test_no_cli_view_prints_the_canary(run: Run) -> None:
    """``approvals list`` / ``show`` and ``audit search`` / ``timeline`` print hashes, never the value."""
    bob = run.gateway.token(user="bob", agent=None, roles=["finance-approver"])
    admin = ["--admin-url", run.gateway.admin_base, "--token", bob]
    store = ["--store", str(run.gateway.state_dir / "audit.sqlite3")]
    commands = [("approvals", "list", *admin), ("approvals", "list", "--json", *admin),
                *[("approvals", "show", approval_id, *admin) for approval_id in run.approval_ids],
                ("audit", "search", *store), ("audit", "search", "--json", *store),
                ("audit", "timeline", "--agent", "billing-bot", *store)]
    for command in commands:
        done = run_cli(*command)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        _no_canary(" ".join(command[:2]), done.stdout + done.stderr)


# ----------------------------------------------------------------------------- every refusal path, in process


OBLIGING_REGO = """package portcullis.t

import rego.v1

obligations contains {"kind": "redact", "pointer": "/reason"} if "reason" in object.keys(input.arguments)

deny contains {"id": "no_chargebacks", "reason": "chargeback"} if input.arguments.currency == "EUR"

flag := 1 if input.arguments.order_id == "ORD-666"
flag := 2 if input.arguments.order_id == "ORD-666"

deny contains {"id": "never", "reason": "never"} if flag == 3
"""
HOURLY = {"id": "refunds-hourly", "tools": [REFUND], "per": ["agent"], "window_s": 3600, "max_calls": 5}


def hostile(amount: Any, **changes: Any) -> dict[str, Any]:
    return {"order_id": "ORD-1", "amount": amount, "currency": "USD", "reason": f"{CANARY}", **changes}


PATHS = [  # (name, arguments, caller, gateway options, expected effect of the decision record)
    ("allowed", hostile(50), BOT, {}, "allow"),
    ("native-max-amount", hostile(600), BOT, {}, "deny"),
    ("native-currency", hostile(50, currency="JPY"), BOT, {}, "deny"),
    ("native-pattern", hostile(50, order_id="X-1"), BOT, {}, "deny"),
    ("rego-deny", hostile(50, currency="EUR"), BOT, {}, "deny"),
    ("rego-evaluation-error", hostile(50, order_id="ORD-666"), BOT, {}, "deny"),
    ("held-for-approval", hostile(300), BOT, {}, "require_approval"),
    ("limit-store-unavailable", hostile(50), BOT, {"limits": [HOURLY], "state": FailingStateStore()}, "deny"),
    ("risk-denies", hostile(50), BOT, {"risk": {"thresholds": {"one_approver": 60, "two_approvers": 60,
                                                               "deny": 60}}}, "deny"),
    ("gate-refusal", hostile(50), STRANGER, {}, "deny"),
]


@pytest.mark.parametrize(("name", "arguments", "caller", "options", "effect"), PATHS, ids=[p[0] for p in PATHS])
async def test_a_redacted_argument_is_hashed_on_every_decision_path(
        tmp_path: Path, name: str, arguments: dict[str, Any], caller: Any, options: dict[str, Any],
        effect: str) -> None:
    """Whichever stage decides (native, Rego, an error, limits, risk, the gate), the record hashes /reason."""
    async with in_process_gateway(tmp_path, rego=RegoPolicy.compile({"t.rego": OBLIGING_REGO}), **options) as gw:
        await gw.call(REFUND, arguments, principal=caller)
        records = await gw.records()
        decision = await gw.decision_of_last_call()
        stored = await gw.approvals.list()
    for record in records:
        _no_canary(f"the {record.kind} record", json.dumps(record.to_json()))
    assert decision["decision"]["effect"] == effect, decision["decision"]
    assert str(decision["arguments"]["reason"]).startswith("hmac-sha256:"), decision["arguments"]
    if effect == "require_approval":
        assert len(stored) == 1
