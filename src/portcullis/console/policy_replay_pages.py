"""Policy replay-diff results (operators): replay the recorded decisions of a window against two stored
versions and show what would change.

=====  =============================================  ==================================================
POST   ``/console/containment/policy/replay``         ``from``, ``to`` (version ids), ``window`` (1h, 24h,
                                                      7d): the counts and the changed decisions
=====  =============================================  ==================================================

The replay is ``portcullis policy diff --format json`` run in a child process by the
:class:`~portcullis.console.replay.ChildReplayer` of the console services (never this process's Rego). A
hostile version id or window is a 400 and no child starts; a second replay while one runs gets a "a replay
is running" page (409); a child failure or timeout is an error page without details (502/504).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from portcullis.console import roles
from portcullis.console.audit_pages import when
from portcullis.console.replay import WINDOWS, ReplayBusy, ReplayFailed, valid

if TYPE_CHECKING:
    from portcullis.console.app import ConsoleApp, Ctx

ROLE = "operators"
_REF = 80


def register(app: ConsoleApp) -> None:
    app.route("POST", "/containment/policy/replay", replay, nav="containment")


async def replay(ctx: Ctx) -> Response:
    if not roles.operator(ctx):
        return roles.refused(ctx, ROLE)
    runner = ctx.services.replay
    if runner is None:
        return ctx.render("error.html", status=503, message="Replays are not available in this gateway.")
    old, new = ctx.form.get("from", "")[:_REF], ctx.form.get("to", "")[:_REF]
    window = ctx.form.get("window", "")
    if not valid(old, new, window):
        return ctx.render("error.html", status=400, message="Not replayed: choose two stored versions (ps-…) and "
                          f"a window of {', '.join(WINDOWS)}.")
    try:
        result = await runner.run(old, new, window)
    except (ReplayBusy, ReplayFailed) as refused:
        return ctx.render("error.html", status=refused.status, message=refused.message)
    return ctx.render("policy_replay.html", old=old, new=new, window=window, result=_shown(result))


def _shown(result: dict[str, Any]) -> dict[str, Any]:
    """The child's JSON as the template shows it (every string still escaped by ``| vis`` there)."""
    rows = result.get("rows")
    rows = rows if isinstance(rows, list) else []
    return {"replayed": result.get("replayed"), "changed": result.get("changed"),
            "not_replayable": result.get("not_replayable"), "records_read": result.get("records_read"),
            "limit_reached": result.get("limit_reached") is True,
            "transitions": _dict(result.get("transitions")),
            "rows": [_row(r) for r in rows if isinstance(r, dict)]}


def _row(row: dict[str, Any]) -> dict[str, Any]:
    old, new = _dict(row.get("old")), _dict(row.get("new"))
    ts = row.get("ts")
    return {"when": when(ts) if isinstance(ts, int | float) and 0 <= ts < 1e11 else "",
            "request_id": row.get("request_id"), "agent": row.get("agent"), "user": row.get("user"),
            "tool": row.get("tool"),
            "old": old.get("effect"), "new": new.get("effect"),
            "old_rules": ", ".join(str(r) for r in old.get("rule_ids") or []),
            "new_rules": ", ".join(str(r) for r in new.get("rule_ids") or [])}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
