"""What the agent is told about an approval its call needs: the error naming it, its state and how to
resume; the 2026-07-28 ``input_required`` result; and the one answer for every approval that is not valid
for the call (so ids cannot be probed)."""

from __future__ import annotations

from typing import Any

from portcullis.approvals.listing import iso
from portcullis.approvals.model import Approval
from portcullis.approvals.notify import LinkSigner
from portcullis.errors import ApprovalInvalid, ApprovalRequired

APPROVAL_ID_META = "io.portcullis/approval-id"
INPUT_KEY = "portcullis_approval"  # the inputRequests / inputResponses key of a held call


def pending_error(approval: Approval, decision: Any) -> ApprovalRequired:
    """The approval, its state, and how to resume."""
    return ApprovalRequired(decision, detail=f"approval {approval.id} {approval.status}", data={
        "approval_id": approval.id, "status": approval.status, "expires_at": iso(approval.expires_at),
        "required_approvers": approval.required, "approvals": len(approval.approvals()),
        "summary": approval.summary(),
        "resume": {"how": "when approved, retry exactly the same call (same tool and arguments) with "
                          f"params._meta['{APPROVAL_ID_META}'] set to the approval id; the same retry "
                          "before then reports the status",
                   "_meta": {APPROVAL_ID_META: approval.id}}})


def input_required(approval: Approval, links: LinkSigner) -> dict[str, Any]:
    """A URL-mode elicitation telling the user what waits for whom (the URL shows the status only), and a
    signed ``requestState`` that names the approval when the client retries."""
    message = (f"{approval.summary()}. The call runs when {approval.required} approver(s) agree; "
               f"it expires at {iso(approval.expires_at)}. Accept to retry once it is approved.")
    return {"resultType": "input_required",
            "inputRequests": {INPUT_KEY: {"method": "elicitation/create", "params": {
                "mode": "url", "message": message, "url": links.status_link(approval)}}},
            "requestState": links.request_state(approval)}


def invalid(why: str, detail: str) -> ApprovalInvalid:
    """The one answer for every approval that is not valid for the call (ids cannot be probed);
    ``approval_result`` (``invalid``, ``used``, ``insufficient``) is for the audit record only."""
    error = ApprovalInvalid(detail=detail)
    error.approval_result = why  # type: ignore[attr-defined]
    return error
