"""The tamper-evident audit trail, end to end: a real gateway in front of server-everything's echo."""

from __future__ import annotations

import base64
import contextlib
import json
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import yaml
from mcp import MCPError

from portcullis.audit.record import GENESIS_HASH, AuditRecord, make_record
from tests.e2e.audit_load import (
    ECHO,
    STORE_FILE,
    copy_store,
    echo_deployment,
    echo_text,
    live_echo,
    load_then_kill,
    node,
    read_chain,
)
from tests.e2e.harness import GatewayProcess, cli_in_process, copy_demo_services

PUBLIC_KEY = "audit-signing.pub.pem"
ALLOWED = ("first call", "second call", "third call")
DECISION_FIELDS = {"environment", "trace_id", "span_id", "protocol_version", "tool", "principal", "decision",
                   "arguments", "credential"}  # credential: the development token's jti


@pytest.fixture(scope="module")
def echo_tool() -> tuple[str, dict[str, Any]]:
    """node and server-everything's live echo definition, fetched once."""
    node_path = node()
    return node_path, anyio.run(live_echo, node_path)


@dataclass(frozen=True)
class Run:
    """A finished gateway run: where its audit trail is and the pin it served."""

    state_dir: Path
    pin: str

    @property
    def store(self) -> Path:
        return self.state_dir / STORE_FILE

    @property
    def public_key(self) -> Path:
        return self.state_dir / PUBLIC_KEY


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory: pytest.TempPathFactory, echo_tool: tuple[str, dict[str, Any]]) -> Run:
    """Three allowed echo calls, one unknown tool and one invalid call, then a clean stop."""
    root = echo_deployment(tmp_path_factory.mktemp("audit") / "deployment", *echo_tool)
    pin = yaml.safe_load((root / "tools/everything/echo.yml").read_text())["pin"]

    async def calls(gateway: GatewayProcess) -> None:
        async with gateway.client() as client:
            for message in ALLOWED:
                assert echo_text(await client.call_tool(ECHO, {"message": message})) == f"Echo: {message}"
            with pytest.raises(MCPError):
                await client.call_tool("everything.no-such-tool", {"message": "x"})
            with pytest.raises(MCPError):
                await client.call_tool(ECHO, {"message": 42})

    with GatewayProcess(root) as gateway:
        anyio.run(calls, gateway)
    return Run(gateway.state_dir, pin)


def verify_cli(store: Path, public_key: Path) -> tuple[int, str]:
    """``portcullis audit verify`` over ``store``."""
    return cli_in_process("audit", "verify", "--store", str(store), "--public-key", str(public_key))


def _by_request(records: list[AuditRecord]) -> dict[str, list[AuditRecord]]:
    grouped: dict[str, list[AuditRecord]] = {}
    for record in records:
        grouped.setdefault(record.request_id, []).append(record)
    return grouped


async def test_every_call_leaves_a_verifying_chain(mixed_run: Run) -> None:
    """Allowed calls leave decision-then-outcome pairs, refusals leave rejected records, and the chain verifies."""
    code, output = verify_cli(mixed_run.store, mixed_run.public_key)
    assert code == 0, output
    assert output.startswith("OK: 10 record(s) verified; latest signed checkpoint at index 9"), output

    records = await read_chain(mixed_run.store)
    assert [r.index for r in records] == list(range(10))
    assert records[0].kind == "spawn"  # the stdio service's start, before any call
    assert records[1].kind == "service_identity"  # its session established, before it serves a call
    by_request = _by_request(records)
    for message in ALLOWED:
        [decision] = [r for r in records if r.kind == "decision" and r.fields["arguments"] == {"message": message}]
        assert [r.kind for r in by_request[decision.request_id]] == ["decision", "outcome"]  # decision first
        outcome = by_request[decision.request_id][1]
        assert set(decision.fields) == DECISION_FIELDS
        assert isinstance(decision.fields["credential"]["jti"], str) and decision.fields["credential"]["txn"] is None
        assert decision.fields["decision"]["effect"] == "allow"
        assert decision.fields["decision"]["policy_version"]
        assert decision.fields["tool"]["name"] == ECHO
        assert decision.fields["tool"]["upstream_name"] == "echo"
        assert decision.fields["tool"]["definition_hash"] == mixed_run.pin
        assert outcome.fields["outcome"] == "ok"
        assert outcome.fields["output"]["bytes"] > 0

    rejected = [r for r in records if r.kind == "rejected"]
    assert [(r.fields["tool"]["name"], r.fields["reason"]) for r in rejected] == [
        ("everything.no-such-tool", "unknown_tool"), (ECHO, "invalid_arguments")]
    assert all(len(by_request[r.request_id]) == 1 for r in rejected)  # nothing was forwarded for them
    for record in records:
        if record.kind not in ("outcome", "spawn", "service_identity"):
            principal = record.fields["principal"]
            assert (principal["agent_id"], principal["user_id"]) == ("billing-bot", "alice")
            assert principal["client_id"] and principal["issuer"]


def _tampered(run: Run, tmp_path: Path, sql: str, rows: list[tuple[Any, ...]] | None = None) -> Path:
    """A copy of the run's store with ``sql`` executed on it (once per row of parameters, if given)."""
    copy = copy_store(run.store, tmp_path / "tampered.sqlite3")
    conn = sqlite3.connect(copy, isolation_level=None)
    try:
        conn.executemany(sql, rows if rows is not None else [()])
    finally:
        conn.close()
    return copy


def test_audit_verify_names_the_index_of_an_edited_record(mixed_run: Run, tmp_path: Path) -> None:
    """Turning a recorded allow into a deny with raw SQL fails verification at that record's index."""
    copy = _tampered(mixed_run, tmp_path, "UPDATE audit_record SET fields = "
                     "json_set(fields, '$.decision.effect', 'deny') WHERE idx = 4")
    code, output = verify_cli(copy, mixed_run.public_key)
    assert code == 1, output
    assert "FAILED at index 4: record hash does not match its content" in output


def test_audit_verify_detects_records_deleted_after_a_checkpoint(mixed_run: Run, tmp_path: Path) -> None:
    """Deleting the last records, which a signed checkpoint covers, is reported as a truncated tail."""
    copy = _tampered(mixed_run, tmp_path, "DELETE FROM audit_record WHERE idx >= 8")
    code, output = verify_cli(copy, mixed_run.public_key)
    assert code == 1, output
    assert "FAILED at index 8: tail truncated: signed checkpoint at 9" in output


def test_audit_verify_catches_a_rewritten_history_at_its_signed_checkpoint(mixed_run: Run, tmp_path: Path) -> None:
    """An edit with every later hash recomputed links up, but no longer matches the signed checkpoint."""
    records = anyio.run(read_chain, mixed_run.store)
    prev, forged = GENESIS_HASH, []
    for r in records:
        fields = {**r.fields, "decision": {**r.fields["decision"], "effect": "deny"}} if r.index == 4 else r.fields
        forged.append(make_record(r.index, r.ts, r.request_id, r.kind, fields, prev))
        prev = forged[-1].hash
    copy = _tampered(mixed_run, tmp_path, "UPDATE audit_record SET fields = ?, prev_hash = ?, hash = ? WHERE idx = ?",
                     [(json.dumps(r.fields), r.prev_hash, r.hash, r.index) for r in forged[4:]])
    code, output = verify_cli(copy, mixed_run.public_key)
    assert code == 1, output
    # the first signed checkpoint at or after the edit catches it: the one at the clean stop (9) unless the
    # run was slow enough for the 1 s checkpoint timer to sign one in between
    with contextlib.closing(sqlite3.connect(f"{mixed_run.store.resolve().as_uri()}?mode=ro", uri=True)) as db:
        (caught,) = db.execute("SELECT min(idx) FROM audit_checkpoint WHERE idx >= 4").fetchone()
    assert caught is not None and 4 <= caught <= 9
    assert f"FAILED at index {caught}: record does not match its signed checkpoint" in output


def _forms(canary: str) -> list[bytes]:
    """The canary as a log, a database or an HTTP body could hold it."""
    token = canary.split("-")[1]  # the random part alone: catches truncated or re-encoded copies
    return [canary.encode(), json.dumps(canary).encode(), json.dumps(canary, ensure_ascii=False).encode(),
            canary.encode("utf-16-le"), base64.b64encode(canary.encode()), token.encode()]


def _leaks(files: dict[str, bytes], canary: str) -> list[str]:
    return [name for name, data in files.items() for form in _forms(canary) if form in data]


def _snapshot(*roots: Path) -> dict[str, bytes]:
    return {str(path): path.read_bytes() for root in roots for path in sorted(root.rglob("*")) if path.is_file()}


async def test_canary_secret_never_reaches_audit_logs_or_metrics(
        tmp_path: Path, echo_tool: tuple[str, dict[str, Any]]) -> None:
    """A sensitive argument reaches the tool but only its keyed hash reaches disk; equal values correlate."""
    canary = f"CANARY-{uuid.uuid4().hex}-naïve-☃"
    policy = {"allowed_callers": ["scope:mcp:tools"], "denied_callers": ["agent:rogue-bot"]}
    root = echo_deployment(tmp_path / "deployment", *echo_tool, sensitive_arguments=["/message"], policy=policy)
    gateway = GatewayProcess(root, state_dir=tmp_path / "state")
    try:
        gateway.wait_ready()
        async with gateway.client() as client:
            for _ in range(2):
                assert echo_text(await client.call_tool(ECHO, {"message": canary})) == f"Echo: {canary}"
            await client.call_tool(ECHO, {"message": "something else"})
        async with gateway.client(token=gateway.token(agent="rogue-bot")) as client:
            with pytest.raises(MCPError):  # a denied call is recorded, arguments hashed the same way
                await client.call_tool(ECHO, {"message": canary})
        async with httpx2.AsyncClient() as admin:
            metrics = await admin.get(f"{gateway.admin_base}/metrics")
        assert metrics.status_code == 200
        scrape = metrics.text  # the scrape counts the calls (by tool, decision, outcome), not their content
        assert f'portcullis_calls_total{{decision="allow",outcome="ok",tool="{ECHO}"}} 3.0' in scrape
        assert f'portcullis_calls_total{{decision="deny",outcome="denied",tool="{ECHO}"}} 1.0' in scrape
        assert 'portcullis_stage_seconds_count{stage="audit"} 3.0' in scrape
        assert 'portcullis_audit_records_total{kind="decision"} 4.0' in scrape
        # while the gateway runs the WAL holds the records; after it stops, the log is complete
        running = {**_snapshot(gateway.state_dir), "log": gateway.log().encode()}
    finally:
        gateway.stop()
    stopped = {**_snapshot(tmp_path), "metrics": metrics.content}

    assert any(name.endswith(f"{STORE_FILE}-wal") for name in running), sorted(running)
    assert any(name.endswith(".log") for name in stopped), sorted(stopped)
    assert _leaks(running, canary) == [] and _leaks(stopped, canary) == []
    records = await read_chain(gateway.state_dir / STORE_FILE)
    decisions = [r.fields for r in records if r.kind == "decision"]
    assert [d["decision"]["effect"] for d in decisions] == ["allow", "allow", "allow", "deny"]
    # the build identity the service reported (its serverInfo), so a record names what ran
    assert all(d["tool"]["service_version"] and "everything" in d["tool"]["service_version"] for d in decisions)
    digests = [d["arguments"]["message"] for d in decisions]
    assert all(d.startswith("hmac-sha256:") for d in digests)
    assert digests[0] == digests[1] == digests[3] != digests[2]
    on_disk = b"".join(data for name, data in running.items() if STORE_FILE in name)
    assert digests[0].encode() in on_disk  # the scan looked at the bytes the records really live in
    code, output = verify_cli(gateway.state_dir / STORE_FILE, gateway.state_dir / PUBLIC_KEY)
    assert code == 0, output


@pytest.mark.slow
async def test_kill_9_under_load_leaves_a_verifying_chain_with_every_acknowledged_call(
        tmp_path: Path, echo_tool: tuple[str, dict[str, Any]]) -> None:
    """After SIGKILL mid-load and a restart, the chain verifies and holds both records of every answered call."""
    root = echo_deployment(tmp_path / "deployment", *echo_tool)
    state_dir = tmp_path / "state"
    first = GatewayProcess(root, state_dir=state_dir)
    try:
        first.wait_ready()
        report = await load_then_kill(first, clients=8, kill_after_acknowledged=40)
    finally:
        first.stop()
    assert first.proc.returncode == -9
    assert len(report.acknowledged) > 20, report  # the load really ran
    assert report.client_errors > 0, report  # and the kill really cut calls off
    code, output = verify_cli(state_dir / STORE_FILE, state_dir / PUBLIC_KEY)
    assert code == 0, output  # the store a kill -9 leaves behind verifies as it is, before any restart

    second = GatewayProcess(root, state_dir=state_dir)
    try:
        second.wait_ready()
        async with second.client() as client:
            assert echo_text(await client.call_tool(ECHO, {"message": "after restart"})) == "Echo: after restart"
    finally:
        second.stop()

    code, output = verify_cli(state_dir / STORE_FILE, state_dir / PUBLIC_KEY)
    assert code == 0, output
    records = await read_chain(state_dir / STORE_FILE)
    by_request = _by_request(records)
    decisions = {r.fields["arguments"]["message"]: r for r in records if r.kind == "decision"}
    assert len(decisions) == sum(r.kind == "decision" for r in records)  # one decision per call, never two
    missing = []
    for message in [*report.acknowledged, "after restart"]:
        decision = decisions.get(message)
        kinds = [(r.kind, r.fields.get("outcome")) for r in by_request[decision.request_id]] if decision else []
        if decision is None or decision.fields["decision"]["effect"] != "allow" or kinds != [
                ("decision", None), ("outcome", "ok")]:
            missing.append((message, kinds))
    assert missing == []
    unanswered = [r for r in decisions.values() if len(by_request[r.request_id]) == 1]
    print(f"kill -9 under load: {report.attempted} calls attempted, {len(report.acknowledged)} acknowledged, "
          f"{report.client_errors} clients cut off; {len(records)} records, {len(decisions)} decisions, "
          f"{len(unanswered)} decisions without an outcome (in flight at the kill)")


async def test_the_gateway_prunes_old_audit_segments_and_the_rest_verifies(tmp_path: Path) -> None:
    """A gateway with audit.retention_days: 1 and a trail three days old prunes at start through the
    newest old checkpoint below the head, after a signed retention record; `audit verify` passes."""
    import time as _time

    from portcullis.audit.checkpoint import Checkpointer, CheckpointPolicy
    from portcullis.audit.keys import PUBLIC_KEY_FILE, AuditKeys
    from portcullis.audit.store import SqliteAuditStore
    from portcullis.audit.writer import AuditWriter

    state = tmp_path / "state"
    keys = AuditKeys.load_or_create(state)
    moment = [_time.time() - 3 * 86400]

    def clock() -> float:
        moment[0] += 1.0
        return moment[0]

    async with await SqliteAuditStore.open(state / STORE_FILE) as store:
        checkpointer = Checkpointer(store, keys.signing_key, clock=clock,
                                    policy=CheckpointPolicy(every_records=5, every_s=1e12))
        async with AuditWriter(store, clock=clock, max_delay_s=0, checkpointer=checkpointer) as writer:
            for i in range(10):
                await writer.record("decision", f"old-{i}", {"tool": "refund", "n": i})
    root = copy_demo_services(tmp_path / "deployment", "billing")  # one service is enough to start
    config = yaml.safe_load((root / "gateway.yaml").read_text())
    config.setdefault("audit", {})["retention_days"] = 1
    (root / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    gateway = GatewayProcess(root, state_dir=state)
    try:
        gateway.wait_ready()
        deadline = _time.monotonic() + 60
        while _time.monotonic() < deadline:  # the retention run starts a few seconds after start
            records = await read_chain(state / STORE_FILE)
            if records and records[0].index > 0:
                break
            _time.sleep(0.2)
    finally:
        gateway.stop()
    records = await read_chain(state / STORE_FILE)
    # checkpoints at 0, 5 and 9; the billing service's spawn (and service_identity) records follow 9, so 9 is
    # no longer the head: pruned through 9
    assert records[0].index == 10
    assert [r.fields["pruned_through"] for r in records if r.kind == "retention"] == [9]
    code, output = verify_cli(state / STORE_FILE, state / PUBLIC_KEY_FILE)
    assert code == 0, output
    assert "records 0..9 were pruned by retention" in output


def _incident(store: Path, public_key: Path, *args: str) -> tuple[int, str]:
    return cli_in_process("incident", "report", "--since", "0", "--store", str(store), "--public-key",
                          str(public_key), *args)


def test_incident_report_over_a_real_run_names_the_blast_radius_pin_and_spawn(mixed_run: Run) -> None:
    """The gateway's own records: tools, principal, pin and the stdio child's confinement, verified."""
    code, output = _incident(mixed_run.store, mixed_run.public_key, "--format", "json")
    assert code == 0, output
    report = json.loads(output)
    assert report["chain"]["status"] == "verified" and report["chain"]["last_index"] == 9
    radius = report["blast_radius"]
    assert radius["tools"] == [ECHO, "everything.no-such-tool"] and radius["services"] == ["everything"]
    assert (radius["agents"], radius["users"]) == (["billing-bot"], ["alice"])
    assert radius["effects"] == {"allow": 3, "rejected": 2}
    assert [p["definition_hash"] for p in report["pins"]] == [mixed_run.pin]
    [service] = report["services"]
    assert service["reported_versions"] != ["not recorded"] and not service["build_changed"]
    [build] = service["builds"]  # node running server-everything's script: both hashed
    assert build["index"] == 1 and build["transport"] == "stdio" and len(build["executable_sha256"]) == 64
    assert build["script"].endswith(".js") and len(build["script_sha256"]) == 64
    [spawn] = service["spawns"]
    assert spawn["index"] == 0 and spawn["outcome"] == "spawning" and spawn["backend"] != "not recorded"
    assert [e["outcome"] for e in report["timeline"] if e["kind"] == "call"] == ["ok"] * 3
    code, markdown = _incident(mixed_run.store, mixed_run.public_key, "--tool", ECHO)
    assert code == 0 and "**verification: verified**" in markdown and "everything.no-such-tool" not in markdown


def test_incident_report_over_a_tampered_copy_of_a_real_run_fails(mixed_run: Run, tmp_path: Path) -> None:
    """An edited decision in the range: FAILED at its index, exit 1."""
    copy = _tampered(mixed_run, tmp_path, "UPDATE audit_record SET fields = replace(fields, 'first call', "
                     "'other call') WHERE idx = 2")
    code, output = _incident(copy, mixed_run.public_key)
    assert code == 1 and "**verification: FAILED** at index 2" in output, output
