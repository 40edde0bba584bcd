"""The approval queue: the pending approvals this person may decide, one approval in full, the votes.

=====  ====================================================  ==========================================
GET    ``/console/approvals``                                the queue (its list polls every 2 s)
GET    ``/console/approvals/list``                           the list fragment htmx polls (does not keep
                                                             an idle session alive)
GET    ``/console/approvals/<id>``                           one approval, everything bound, made visible
GET    ``/console/approvals/<id>/state``                     its status and votes count (polled every 2 s)
POST   ``/console/approvals/<id>/approve`` (and ``/deny``)   a vote with an optional ``reason``
=====  ====================================================  ==========================================

The same :class:`~portcullis.approvals.service.ApprovalService` calls as the JSON API
(:mod:`portcullis.approvals.api`) with the session's principal: ``list_for`` filters by
``may_approve``; an approval this person may not decide is "not found" exactly as an unknown id; a vote
goes through ``vote`` (people only, approvers of the tool only, not the requester, once).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.responses import Response

from portcullis.approvals.service import NOT_A_PERSON, ApproverRefused
from portcullis.approvals.store import ApprovalStoreUnavailable

if TYPE_CHECKING:
    from portcullis.console.app import ConsoleApp, Ctx

log = logging.getLogger("portcullis.console")

_ID = r"(?P<id>apr_[0-9a-f]{32})"
PAGE = 100
MAX_REASON = 1000


def register(app: ConsoleApp) -> None:
    app.route("GET", "/approvals", queue, nav="approvals")
    app.route("GET", "/approvals/list", queue_fragment, touch=False, nav="approvals")
    app.route("GET", f"/approvals/{_ID}", one, nav="approvals")
    app.route("GET", f"/approvals/{_ID}/state", state_fragment, touch=False, nav="approvals")
    app.route("POST", f"/approvals/{_ID}/(?P<verdict>approve|deny)", vote, nav="approvals")


async def queue(ctx: Ctx, *, template: str = "approvals.html") -> Response:
    """The queue page, or (``approval_rows.html``) the list fragment its htmx poll swaps in."""
    principal = ctx.principal
    try:
        if principal.person:
            mine, why = (await ctx.services.approvals.list_for(principal, "pending", limit=PAGE))[0], None
        else:
            mine, why = [], NOT_A_PERSON
    except ApprovalStoreUnavailable:
        return _unavailable(ctx)
    return ctx.render(template, approvals=mine, why=why)


async def queue_fragment(ctx: Ctx) -> Response:
    return await queue(ctx, template="approval_rows.html")


async def state_fragment(ctx: Ctx) -> Response:
    """The status and vote count the detail page polls (the same authorization as the page)."""
    return await one(ctx, template="approval_state.html")


async def one(ctx: Ctx, *, notice: str | None = None, error: str | None = None, status: int = 200,
              template: str = "approval.html") -> Response:
    principal = ctx.principal
    try:
        view = await ctx.services.approvals.view(ctx.params["id"])
    except ApprovalStoreUnavailable:
        return _unavailable(ctx)
    if (view is None or not principal.person
            or not ctx.services.approvals.may_approve(view["tool"], principal, view["tool_risk"])):
        return ctx.render("error.html", status=404, message="No such approval.")  # the same for "not yours"
    done = ctx.request.query_params.get("done")
    if notice is None and done in ("approve", "deny"):
        notice = "Your approval was recorded." if done == "approve" else "Your denial was recorded."
    return ctx.render(template, status=status, a=view, notice=notice, error=error, max_reason=MAX_REASON)


async def vote(ctx: Ctx) -> Response:
    approval_id, verdict = ctx.params["id"], ctx.params["verdict"]
    reason = ctx.form.get("reason", "")
    if len(reason) > MAX_REASON:
        return await one(ctx, error=f"The reason is longer than {MAX_REASON} characters.", status=400)
    try:
        await ctx.services.approvals.vote(approval_id, ctx.principal, verdict, reason=reason)
    except ApproverRefused as exc:
        if exc.status == 404:
            return ctx.render("error.html", status=404, message="No such approval.")
        return await one(ctx, error=f"Not recorded: {exc.reason}.", status=exc.status)
    except ApprovalStoreUnavailable:
        return _unavailable(ctx)
    return ctx.redirect(f"/console/approvals/{approval_id}?done={verdict}")


def _unavailable(ctx: Ctx) -> Response:
    log.error("approval store unavailable (console)")
    return ctx.render("error.html", status=503, message="The approval store is unavailable; try again shortly.")
