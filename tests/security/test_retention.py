"""Retention: the approval store deletes only finished approvals past ``approvals.retention_days``
(never a pending or approved-but-unused one, however old)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import ValidationError

from portcullis.approvals.service import ApprovalService
from portcullis.approvals.store import SqliteApprovalStore
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
