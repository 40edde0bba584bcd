"""Containment: kill switches (list, set with a reason, lift) and recent anomaly alerts (responders).

=====  ====================================================  ============================================
GET    ``/console/containment``                              active and recent switches, the set form,
                                                             recent alerts (audit records of kind alert)
POST   ``/console/containment/kill-switches/confirm``        the confirmation step of a set (changes
                                                             nothing)
POST   ``/console/containment/kill-switches``                set (needs ``confirm=yes`` from that step)
POST   ``/console/containment/kill-switches/<id>/lift``      lift with a reason
=====  ====================================================  ============================================

The calls are the ``/kill-switches`` API's (:class:`~portcullis.kill.runtime.KillSwitches` ``set``/``lift``
with :func:`~portcullis.kill.api.actor_of` the session's principal), so the change is stored, takes effect
and is audited (``kill_switch`` record) exactly as the API's. Policy versions are :mod:`.policy_pages`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
from starlette.responses import Response

from portcullis.audit.errors import AuditUnavailable
from portcullis.audit.incident_services import get
from portcullis.audit.query import AuditQuery
from portcullis.console import roles
from portcullis.console.audit_pages import when
from portcullis.kill.api import actor_of
from portcullis.kill.model import (
    KINDS,
    MAX_REASON_CHARS,
    MAX_TARGET_CHARS,
    KillSwitchInputError,
    check_kind,
    check_reason,
    check_target,
)
from portcullis.kill.store import KillSwitchStoreUnavailable, UnknownSwitch

if TYPE_CHECKING:
    from portcullis.console.app import ConsoleApp, Ctx, Handler
    from portcullis.kill.runtime import KillSwitches

log = logging.getLogger("portcullis.console")

_ID = r"(?P<id>ks_[0-9a-f]{24})"
RECENT = 50
ALERTS = 50
ROLE = "responders"


def register(app: ConsoleApp) -> None:
    app.route("GET", "/containment", page, nav="containment")
    app.route("POST", "/containment/kill-switches/confirm", confirm, nav="containment")
    app.route("POST", "/containment/kill-switches", set_switch, nav="containment")
    app.route("POST", f"/containment/kill-switches/{_ID}/lift", lift, nav="containment")


async def page(ctx: Ctx, *, error: str | None = None, status: int = 200) -> Response:
    if not roles.reader(ctx):  # the Containment section's own entry in roles.SECTIONS
        return roles.refused(ctx, "responders and operators")
    if not roles.responder(ctx):  # an operator: the section's part for them
        return ctx.redirect("/console/containment/policy")
    kills = ctx.services.kills
    if kills is None:
        return _unavailable(ctx, "kill switch store")
    try:
        active = await anyio.to_thread.run_sync(kills.store.active, time.time())
        recent = await anyio.to_thread.run_sync(kills.store.history, RECENT)
    except KillSwitchStoreUnavailable:
        return _unavailable(ctx, "kill switch store")
    done = ctx.request.query_params.get("done")
    notice = {"set": "Kill switch set.", "lift": "Kill switch lifted."}.get(done or "")
    return ctx.render("containment.html", status=status, active=[_switch(s) for s in active],
                      recent=[_switch(s) for s in recent], alerts=await _alerts(ctx), kinds=KINDS,
                      max_reason=MAX_REASON_CHARS, max_target=MAX_TARGET_CHARS, notice=notice, error=error,
                      operator=roles.operator(ctx))


def _switch(switch: Any) -> dict[str, Any]:
    return {**switch.to_json(), "set_when": when(switch.set_at), "expires_when": when(switch.expires_at),
            "lifted_when": when(switch.lifted_at)}


async def _alerts(ctx: Ctx) -> list[dict[str, Any]] | None:
    """The newest anomaly alerts: the trail's ``alert`` records (None: the trail could not be read)."""
    opener = ctx.services.audit_reader
    if opener is None:
        return None
    try:
        async with opener() as reader:
            found = await reader.search(AuditQuery(kind="alert", limit=ALERTS))
    except AuditUnavailable:
        return None
    return [{"when": when(r.ts), "request_id": r.request_id, "rule": get(r.fields, "rule"),
             "key": get(r.fields, "key_text"), "observed": get(r.fields, "observed"),
             "threshold": get(r.fields, "threshold"), "baseline": get(r.fields, "baseline"),
             "containment": get(r.fields, "containment")} for r in found]


def _checked(form: dict[str, str]) -> tuple[str, str, str]:
    return check_kind(form.get("kind")), check_target(form.get("target")), check_reason(form.get("reason"))


def _responders_with_kills(action: Callable[[Ctx, KillSwitches], Awaitable[Response]]) -> Handler:
    """A kill switch action: responders only (the 403 page otherwise, nothing changed), and only while the
    kill switch store is configured; ``action`` gets the service."""

    async def guarded(ctx: Ctx) -> Response:
        if not roles.responder(ctx):
            return roles.refused(ctx, ROLE)
        if ctx.services.kills is None:
            return _unavailable(ctx, "kill switch store")
        return await action(ctx, ctx.services.kills)

    return guarded


@_responders_with_kills
async def confirm(ctx: Ctx, kills: KillSwitches) -> Response:
    """The confirmation step: what would be contained, nothing changed yet."""
    try:
        kind, target, reason = _checked(ctx.form)
    except KillSwitchInputError as exc:
        return await page(ctx, error=f"Not set: {exc.message}", status=400)
    return ctx.render("kill_confirm.html", kind=kind, target=target, reason=reason)


@_responders_with_kills
async def set_switch(ctx: Ctx, kills: KillSwitches) -> Response:
    if ctx.form.get("confirm") != "yes":
        return await page(ctx, error="Not set: confirm the switch first.", status=400)
    try:
        kind, target, reason = _checked(ctx.form)
        await kills.set(kind, target, reason, actor_of(ctx.principal), None)
    except KillSwitchInputError as exc:
        return await page(ctx, error=f"Not set: {exc.message}", status=400)
    except KillSwitchStoreUnavailable:
        return _unavailable(ctx, "kill switch store")
    return ctx.redirect("/console/containment?done=set")


@_responders_with_kills
async def lift(ctx: Ctx, kills: KillSwitches) -> Response:
    try:
        await kills.lift(ctx.params["id"], check_reason(ctx.form.get("reason")), actor_of(ctx.principal))
    except KillSwitchInputError as exc:
        return await page(ctx, error=f"Not lifted: {exc.message}", status=400)
    except UnknownSwitch:
        return await page(ctx, error="Not lifted: no such active kill switch.", status=404)
    except KillSwitchStoreUnavailable:
        return _unavailable(ctx, "kill switch store")
    return ctx.redirect("/console/containment?done=lift")


def _unavailable(ctx: Ctx, what: str) -> Response:
    log.error("console: store unavailable", extra={"fields": {"store": what}})
    return ctx.render("error.html", status=503, message=f"The {what} is unavailable; try again shortly.")
