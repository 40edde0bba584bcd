"""The service objects console pages call: the same ones the JSON admin APIs call, so a page and the
API reach the same authorization decision for the same person."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from portcullis.approvals.service import ApprovalService
from portcullis.identity.revocation import RevocationList

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from portcullis.audit.reader import AuditReader


@dataclass(frozen=True, slots=True)
class ConsoleServices:
    approvals: ApprovalService
    revocations: RevocationList
    kills: Any = None  # kill.runtime.KillSwitches (the /kill-switches API's)
    policy: Any = None  # the policy reloader (the /policy API's)
    audit: Any = None  # the audit store / reader
    metrics: Callable[[], tuple[bytes, str]] | None = None  # the /metrics render
    responders: tuple[str, ...] = ()  # admin.responders caller patterns
    operators: tuple[str, ...] = ()  # admin.operators caller patterns
    # read-only reads of the trail (the SQLite file's own read-only connection, or PG READ ONLY transactions):
    # the opener the approvers' recent calls use
    audit_reader: Callable[[], AbstractAsyncContextManager[AuditReader]] | None = None
    audit_public_key: Ed25519PublicKey | None = None  # checkpoint signatures, for the chain status
    # the policy replay-diff in a child process (console/replay.py ChildReplayer: the deployment directory,
    # state directory and audit file the gateway uses)
    replay: Any = None
