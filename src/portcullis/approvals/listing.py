"""What an approver sees: one page of the approvals they may decide (filtered before it is cut), and
one approval in full (:func:`detail`).

A page is filtered while reading, so approvals of tools this approver may not decide never take a place on a
page (nobody's flood hides another tool's request). One request reads at most ``scan_max`` stored
approvals: past that it answers the page so far (perhaps short or empty) with a continuation cursor,
so a flood of approvals this approver may not decide cannot make one request scan the whole table.
That cursor is sealed (:class:`CursorSeal`: an approval id this approver may not see, encrypted with
a key of this process), so it reveals nothing; an ordinary cursor is the last id of the previous page.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from portcullis.approvals.model import Approval, visible, visible_json
from portcullis.approvals.store import ApprovalStore, UnknownCursor

PAGE_MAX = 500  # the most approvals one listing page holds
SCAN_STEP = 500  # how many stored approvals one step of a filtered listing reads
SCAN_MAX = 5000  # the most stored approvals one listing request reads (then it answers a continuation cursor)
_SEALED = re.compile(r"^scan_[0-9a-f]{88}$")  # a continuation cursor: a sealed approval id
_AAD = b"approvals-cursor"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def brief(approval: Approval) -> dict[str, Any]:
    """One approval as a listing shows it (never its arguments)."""
    who = approval.requester
    return {"id": approval.id, "tool": approval.tool, "tool_risk": approval.tool_risk, "status": approval.status,
            "requester": visible(str(who.get("user_id") or who.get("agent_id") or who.get("client_id"))),
            "required": approval.required, "approvals": len(approval.approvals()),
            "created_at": iso(approval.created_at), "expires_at": iso(approval.expires_at)}


def detail(approval: Approval, recent: list[Approval], calls: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything bound to ``approval``, made visible, with the requester's ``recent`` similar requests and
    recent ``calls`` of the tool. Arguments the policy hides are already keyed hashes; ``arguments_hash`` is
    the hash of the complete canonical arguments."""
    return {**brief(approval),
            "arguments": visible_json(approval.arguments),
            "arguments_hash": approval.arguments_hash,
            "justification": visible(approval.justification),
            "requester": visible_json(dict(approval.requester)),
            "rule_ids": list(approval.rule_ids), "reasons": list(approval.reasons),
            "policy_version": approval.policy_version, "risk": approval.risk,
            "votes": [{"approver": visible_json(dict(v.approver)), "verdict": v.verdict, "at": iso(v.at),
                       "reason": v.reason} for v in approval.votes],
            "recent_similar": [{**brief(r), "arguments": visible_json(r.arguments),
                                "arguments_hash": r.arguments_hash} for r in recent],
            "recent_calls": [visible_json(c) for c in calls]}


class CursorSeal:
    """Seals continuation cursors with a key of this process only (a restart invalidates them)."""

    def __init__(self) -> None:
        self._key = AESGCM(secrets.token_bytes(16))

    def seal(self, approval_id: str) -> str:
        nonce = secrets.token_bytes(12)
        raw = bytes.fromhex(approval_id.removeprefix("apr_"))
        return "scan_" + (nonce + self._key.encrypt(nonce, raw, _AAD)).hex()

    def unseal(self, cursor: str) -> str:
        """The approval id a sealed cursor names; :class:`UnknownCursor` for a forged or foreign one."""
        sealed = bytes.fromhex(cursor.removeprefix("scan_"))
        try:
            return "apr_" + self._key.decrypt(sealed[:12], sealed[12:], _AAD).hex()
        except InvalidTag:
            raise UnknownCursor(cursor) from None


async def page_for(store: ApprovalStore, may_decide: Callable[[Approval], bool], status: str | None, *,
                   limit: int, cursor: str | None, scan_max: int,
                   seal: CursorSeal) -> tuple[list[dict[str, Any]], str | None]:
    """One page (newest first) of the approvals ``may_decide`` admits, and the next page's cursor (None:
    this was the last); see the module docstring."""
    limit = max(1, min(limit, PAGE_MAX))
    page: list[Approval] = []
    before = seal.unseal(cursor) if cursor is not None and _SEALED.match(cursor) else cursor
    scanned = 0
    while True:
        batch = await store.list(status=status, limit=min(SCAN_STEP, scan_max - scanned), before=before)
        scanned += len(batch)
        for approval in batch:
            if may_decide(approval):
                page.append(approval)
                if len(page) > limit:  # one more than a page: there is a next page
                    return [brief(a) for a in page[:limit]], page[limit - 1].id
        if len(batch) < SCAN_STEP and scanned < scan_max:
            return [brief(a) for a in page], None
        if scanned >= scan_max:  # the bound: the page so far, and where to go on
            return [brief(a) for a in page], seal.seal(batch[-1].id)
        before = batch[-1].id
