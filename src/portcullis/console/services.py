"""The service objects console pages call: the same ones the JSON admin APIs call, so a page and the
API reach the same authorization decision for the same person."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from portcullis.approvals.service import ApprovalService
from portcullis.identity.revocation import RevocationList


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
