"""Retention: the approval store deletes only finished approvals past ``approvals.retention_days``
(never a pending or approved-but-unused one, however old); the audit store deletes only whole
checkpointed segments from the start, after a signed retention record says so, and what remains
verifies, while every other way of removing records (no retention record, beyond what it says,
not at a checkpoint, a forged claim in the unsigned tail, a removed anchor) still fails."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import ValidationError

from portcullis.approvals.service import ApprovalService
from portcullis.approvals.store import SqliteApprovalStore
from portcullis.audit.checkpoint import Checkpointer, CheckpointPolicy
from portcullis.audit.errors import AuditUnavailable
from portcullis.audit.keys import PUBLIC_KEY_FILE, AuditKeys
from portcullis.audit.record import make_record
from portcullis.audit.retention import prune_audit
from portcullis.audit.store import SqliteAuditStore
from portcullis.audit.verify import VerifyReport, verify_export, verify_store
from portcullis.audit.writer import AuditWriter
from portcullis.config.model import ApprovalsConfig
from portcullis.identity.principal import Principal
from portcullis.policy.decision import Decision

DAY = 86400.0
NOW = 1_800_000_000.0
BOT = Principal(client_id="c", auth_method="dev", issuer="dev", user_id="alice", agent_id="billing-bot")
BOB = Principal(client_id="bob", auth_method="dev", issuer="dev", user_id="bob", roles=("finance-approver",),
                person=True)
DECISION = Decision(effect="require_approval", policy_version="pv-1")
APPROVERS = [{"tools": ["billing.*"], "approvers": ["role:finance-approver"]}]


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


async def _nothing(*_: Any, **__: Any) -> None:
    return None


def service(tmp_path: Path, clock: Clock, **config: Any) -> ApprovalService:
    cfg = ApprovalsConfig.model_validate({"ttl_s": 60, "approvers": APPROVERS, "max_open_per_requester": 100,
                                          **config})
    return ApprovalService(SqliteApprovalStore.open(tmp_path / "a.sqlite3"), cfg, clock=clock, audit=_nothing)


async def _open(svc: ApprovalService, n: int) -> str:
    approval = await svc.propose(tool="billing.refund", arguments={"n": n}, principal=BOT, decision=DECISION,
                                 required=1, justification="", request_id="r")
    return approval.id


async def _denied(svc: ApprovalService, n: int, clock: Clock) -> str:
    approval_id = await _open(svc, n)
    await svc.vote(approval_id, BOB, "deny")
    return approval_id


async def _executed(svc: ApprovalService, n: int, clock: Clock) -> str:
    approval_id = await _open(svc, n)
    await svc.vote(approval_id, BOB, "approve")
    await svc.redeem(approval_id=approval_id, tool="billing.refund", arguments={"n": n}, principal=BOT,
                     decision=DECISION, request_id="r", before_use=anyio.lowlevel.checkpoint)
    return approval_id


async def _expired(svc: ApprovalService, n: int, clock: Clock) -> str:
    approval_id = await _open(svc, n)
    clock.now += 61
    await svc.sweep()
    clock.now -= 61
    return approval_id


async def _pending(svc: ApprovalService, n: int, clock: Clock) -> str:
    return await _open(svc, n)


async def _pending_unswept(svc: ApprovalService, n: int, clock: Clock) -> str:
    return await _open(svc, n)  # past its expiry later, but nobody swept it: still "pending" in the store


async def _approved(svc: ApprovalService, n: int, clock: Clock) -> str:
    approval_id = await _open(svc, n)
    await svc.vote(approval_id, BOB, "approve")
    return approval_id


KINDS = [("denied", _denied, True), ("executed", _executed, True), ("expired", _expired, True),
         ("pending", _pending, False), ("pending-past-expiry", _pending_unswept, False),
         ("approved-unused", _approved, False)]


@pytest.mark.parametrize(("make", "prunable"), [(m, p) for _, m, p in KINDS], ids=[n for n, _, _ in KINDS])
@pytest.mark.parametrize("age_days", [29.9, 30.1, 3650])
async def test_only_finished_approvals_older_than_the_retention_are_pruned(
        tmp_path: Path, make: Any, prunable: bool, age_days: float) -> None:
    """A finished approval goes once it is older than retention_days; open ones stay whatever their age."""
    clock = Clock()
    svc = service(tmp_path, clock, retention_days=30)
    approval_id = await make(svc, 1, clock)
    clock.now += age_days * DAY
    gone = prunable and age_days > 30
    assert await svc.prune() == (1 if gone else 0)
    assert (await svc.get(approval_id) is None) == gone


async def test_retention_null_keeps_everything(tmp_path: Path) -> None:
    """retention_days: null never deletes anything."""
    clock = Clock()
    svc = service(tmp_path, clock, retention_days=None)
    approval_id = await _denied(svc, 1, clock)
    clock.now += 100 * 365 * DAY
    assert await svc.prune() == 0 and await svc.get(approval_id) is not None


async def test_pruning_keeps_the_newer_history_and_the_queue(tmp_path: Path) -> None:
    """Of a mixed history, exactly the old finished approvals go; the pending queue is untouched."""
    clock = Clock()
    svc = service(tmp_path, clock, retention_days=7)
    old = [await _denied(svc, n, clock) for n in range(3)] + [await _executed(svc, n + 3, clock) for n in range(3)]
    old_pending = await _open(svc, 99)
    clock.now += 8 * DAY
    new = [await _denied(svc, n + 10, clock) for n in range(2)]
    assert await svc.prune() == len(old)
    assert [await svc.get(i) for i in old] == [None] * len(old)
    assert None not in [await svc.get(i) for i in [*new, old_pending]]


@pytest.mark.parametrize("days", [0, -1, 0.5, 36501, float("nan"), float("inf"), "forever", [30]])
def test_a_retention_outside_one_day_to_a_century_is_a_config_error(days: Any) -> None:
    """retention_days below one day, above 36500, or not a finite number is refused."""
    with pytest.raises(ValidationError):
        ApprovalsConfig.model_validate({"retention_days": days})


@pytest.mark.parametrize("cap", [0, -5, 10001, 2.5, "many", None, [20]])
def test_a_cap_outside_one_to_ten_thousand_is_a_config_error(cap: Any) -> None:
    """max_open_per_requester must be a whole number from 1 to 10000 (no 'off', no zero)."""
    with pytest.raises(ValidationError):
        ApprovalsConfig.model_validate({"max_open_per_requester": cap})


# --------------------------------------------------------------------------- the audit store

class Trail:
    """A real audit store, writer and checkpointer (a checkpoint every 5 records), one record a day."""

    def __init__(self, root: Path) -> None:
        self.root, self.path = root, root / "audit.sqlite3"
        self.keys = AuditKeys.load_or_create(root)
        self.clock = Clock()

    async def write(self, n: int) -> None:
        async with await SqliteAuditStore.open(self.path) as store:
            checkpointer = self._checkpointer(store)
            async with AuditWriter(store, clock=self.clock, max_delay_s=0, checkpointer=checkpointer) as writer:
                for i in range(n):
                    await writer.record("decision", f"req-{i}", {"tool": "refund", "n": i})
                    await checkpointer.tick()  # a due checkpoint is signed on the record's day, not the next
                    self.clock.now += DAY

    every_records = 5

    def _checkpointer(self, store: SqliteAuditStore) -> Checkpointer:
        return Checkpointer(store, self.keys.signing_key, clock=self.clock,
                            policy=CheckpointPolicy(every_records=self.every_records, every_s=1e12))

    async def prune(self, retention_days: float) -> int:
        async with await SqliteAuditStore.open(self.path) as store:
            checkpointer = self._checkpointer(store)
            async with AuditWriter(store, clock=self.clock, max_delay_s=0, checkpointer=checkpointer) as writer:
                return await prune_audit(store, writer.record, lambda: checkpointer.tick(force=True),
                                         self.keys.signing_key.public_key(), retention_days=retention_days,
                                         now=self.clock())

    async def verify(self) -> VerifyReport:
        async with await SqliteAuditStore.open_readonly(self.path) as store:
            return await verify_store(store, self.keys.signing_key.public_key())

    def sql(self, *statements: str) -> None:
        conn = sqlite3.connect(self.path)
        with conn:
            for statement in statements:
                conn.execute(statement)
        conn.close()

    def indexes(self, table: str = "audit_record") -> list[int]:
        conn = sqlite3.connect(self.path)
        found = [int(i) for (i,) in conn.execute(f"SELECT idx FROM {table} ORDER BY idx")]
        conn.close()
        return found


@pytest.fixture
async def trail(tmp_path: Path) -> Trail:
    """23 records over 23 days, checkpoints at 0, 5, 10, 15, 20 and the head (22)."""
    t = Trail(tmp_path / "state")
    await t.write(23)
    assert t.indexes("audit_checkpoint") == [0, 5, 10, 15, 20, 22]
    return t


async def test_pruning_removes_whole_old_segments_and_what_remains_verifies(trail: Trail) -> None:
    """Records up to the newest checkpoint older than the retention go; checkpoints stay; verify passes."""
    deleted = await trail.prune(retention_days=12.5)  # now = day 23: checkpoints signed before day 10.5
    assert deleted == 11 and trail.indexes()[0] == 11
    assert trail.indexes("audit_checkpoint")[:5] == [0, 5, 10, 15, 20]
    report = await trail.verify()
    assert report.ok and report.pruned_through == 10 and report.records_checked == 13  # 11..22, the retention


async def test_the_chain_continues_after_pruning_and_prunes_again(trail: Trail) -> None:
    """New records continue the head (never restart at 0); a second run prunes further; both verify."""
    await trail.prune(retention_days=12.5)
    await trail.write(7)
    assert (await trail.verify()).ok
    await trail.prune(retention_days=5)
    report = await trail.verify()
    assert report.ok and report.pruned_through is not None and report.pruned_through > 10
    assert trail.indexes()[-1] == 31  # 0..22, a retention record, 24..30, another retention record


async def test_pruning_works_when_the_writer_already_signed_the_retention_record(trail: Trail) -> None:
    """A checkpoint the writer signs on its own (every record here) covers the retention record too."""
    trail.every_records = 1
    assert await trail.prune(retention_days=12.5) == 11
    assert (await trail.verify()).ok


async def test_nothing_old_enough_prunes_nothing_and_writes_nothing(trail: Trail) -> None:
    """With no checkpoint older than the retention, no record is deleted and no retention record written."""
    assert await trail.prune(retention_days=100) == 0
    assert trail.indexes() == list(range(23))


def test_a_pruned_store_exports_and_the_export_verifies(tmp_path: Path) -> None:
    """`portcullis audit export` of a pruned store, then `verify --export`, and `verify --store`, pass."""
    from typer.testing import CliRunner

    from portcullis.cli.main import app

    trail = Trail(tmp_path / "state")
    anyio.run(trail.write, 23)
    assert anyio.run(trail.prune, 12.5) == 11
    runner = CliRunner()
    out = tmp_path / "export.jsonl"
    key = str(trail.root / PUBLIC_KEY_FILE)
    assert runner.invoke(app, ["audit", "export", "--store", str(trail.path), "--out", str(out)]).exit_code == 0
    assert verify_export(out, trail.keys.signing_key.public_key()).ok
    result = runner.invoke(app, ["audit", "verify", "--store", str(trail.path), "--public-key", key],
                           env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert "records 0..10 were pruned by retention" in result.output


def _forged_tail_retention(trail: Trail, through: int) -> str:
    """A retention record claiming ``through``, correctly chained onto the head (no checkpoint covers it)."""
    conn = sqlite3.connect(trail.path)
    idx, head_hash = conn.execute("SELECT idx, hash FROM audit_record ORDER BY idx DESC LIMIT 1").fetchone()
    conn.close()
    forged = make_record(idx + 1, trail.clock(), "forged", "retention",
                         {"event": "pruned", "pruned_through": through, "checkpoint_hash": "x",
                          "retention_days": 1}, head_hash)
    return ("INSERT INTO audit_record VALUES ({}, {}, 'forged', 'retention', '{}', '{}', '{}')".format(
        forged.index, forged.ts, json.dumps(forged.fields, separators=(",", ":"), sort_keys=True),
        forged.prev_hash, forged.hash))


TAMPERING: list[tuple[str, bool, Any]] = [
    # (name, legit prune through 10 first?, statements)
    ("start-deleted-at-a-checkpoint-without-retention", False, lambda t: ["DELETE FROM audit_record WHERE idx <= 5"]),
    ("start-deleted-not-at-a-checkpoint", False, lambda t: ["DELETE FROM audit_record WHERE idx <= 6"]),
    ("more-deleted-than-the-retention-record-says", True, lambda t: ["DELETE FROM audit_record WHERE idx <= 15"]),
    ("more-deleted-not-at-a-checkpoint", True, lambda t: ["DELETE FROM audit_record WHERE idx <= 12"]),
    ("retention-record-deleted", True, lambda t: ["DELETE FROM audit_record WHERE kind = 'retention'"]),
    ("retention-claim-edited-upward", True, lambda t: [
        "UPDATE audit_record SET fields = replace(fields, '\"pruned_through\":10', '\"pruned_through\":20') "
        "WHERE kind = 'retention'", "DELETE FROM audit_record WHERE idx <= 20"]),
    ("anchor-checkpoint-deleted", True, lambda t: ["DELETE FROM audit_checkpoint WHERE idx = 10"]),
    ("anchor-checkpoint-forged", False, lambda t: [
        "INSERT INTO audit_checkpoint VALUES (6, 'ab', 1.0, 'k', 'cd')", "DELETE FROM audit_record WHERE idx <= 6"]),
    ("forged-retention-in-the-unsigned-tail", False, lambda t: [
        _forged_tail_retention(t, 15), "DELETE FROM audit_record WHERE idx <= 15"]),
    ("everything-deleted", True, lambda t: ["DELETE FROM audit_record"]),
    ("everything-but-the-head-deleted", False, lambda t: ["DELETE FROM audit_record WHERE idx < 22"]),
]


@pytest.mark.parametrize(("legit", "statements"), [(legit, f) for _, legit, f in TAMPERING],
                         ids=[n for n, _, _ in TAMPERING])
async def test_removing_records_any_other_way_still_fails_verification(trail: Trail, legit: bool,
                                                                       statements: Any) -> None:
    """Only what a signed retention record covers may be missing from the start, and only whole segments."""
    if legit:
        assert await trail.prune(retention_days=12.5) == 11
        assert (await trail.verify()).ok
    trail.sql(*statements(trail))
    report = await trail.verify()
    assert not report.ok, report


@pytest.mark.parametrize("index", [6, 22, 30, -1])
async def test_the_store_refuses_to_prune_other_than_through_a_checkpoint_below_the_head(trail: Trail,
                                                                                        index: int) -> None:
    """prune_through must end at a stored checkpoint and leave a newer record; else nothing is deleted."""
    async with await SqliteAuditStore.open(trail.path) as store:
        with pytest.raises(AuditUnavailable):
            await store.prune_through(index)
    assert trail.indexes() == list(range(23))


@pytest.mark.parametrize("days", [0, -1, 0.5, 36501, float("nan"), "forever"])
def test_an_audit_retention_outside_one_day_to_a_century_is_a_config_error(days: Any) -> None:
    """audit.retention_days below one day, above 36500 or not a number is refused."""
    from portcullis.config.model import AuditConfig

    with pytest.raises(ValidationError):
        AuditConfig.model_validate({"retention_days": days})
