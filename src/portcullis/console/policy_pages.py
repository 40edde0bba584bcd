"""Policy versions (operators): the active version and history, a version's files, a diff between two
versions, a rollback with a confirmation step.

=====  =====================================================  ===========================================
GET    ``/console/containment/policy``                        status, history, the diff form
GET    ``/console/containment/policy/diff?from=&to=``         a unified diff of two stored versions' files
POST   ``/console/containment/policy/rollback/confirm``       the confirmation step (changes nothing)
POST   ``/console/containment/policy/rollback``               rollback (needs ``confirm=yes``)
=====  =====================================================  ===========================================

The diff page's replay-diff form posts to :mod:`.policy_replay_pages` (a child process, never this one's Rego).

The calls are the ``/policy`` API's (:class:`~portcullis.policy.reloader.PolicyReloader` ``status``,
``history``, ``fetch``, ``rollback`` with :func:`~portcullis.transport.policy_api.author_of`), so a rollback
is validated, stored, audited (``policy_version`` record, fail closed) and announced exactly as the API's.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from portcullis.console import roles
from portcullis.console.audit_pages import when
from portcullis.console.live_metrics import live_figures
from portcullis.console.replay import WINDOWS
from portcullis.policy.reloader import MAX_MESSAGE
from portcullis.policy.versions import VersionStoreUnavailable
from portcullis.transport.policy_api import author_of

if TYPE_CHECKING:
    from portcullis.console.app import ConsoleApp, Ctx

ROLE = "operators"
HISTORY = 50
MAX_DIFF_LINES = 5000
_REF = 80


def register(app: ConsoleApp) -> None:
    app.route("GET", "/containment/policy", page, nav="containment")
    app.route("GET", "/containment/policy/diff", diff, nav="containment")
    app.route("POST", "/containment/policy/rollback/confirm", confirm, nav="containment")
    app.route("POST", "/containment/policy/rollback", rollback, nav="containment")


async def page(ctx: Ctx, *, error: str | None = None, result: dict[str, Any] | None = None,
               status: int = 200) -> Response:
    if not roles.operator(ctx):
        return roles.refused(ctx, ROLE)
    reloader = ctx.services.policy
    if reloader is None:
        return _unavailable(ctx)
    try:
        history = await reloader.history(HISTORY)
    except VersionStoreUnavailable:
        return _unavailable(ctx)
    for event in history:
        event["when"] = when(event["at"])
    versions = list(dict.fromkeys(e["version"] for e in history if e["version"]))
    done = ctx.request.query_params.get("done")
    return ctx.render("policy.html", status=status, state=reloader.status(), history=history, versions=versions,
                      error=error, result=result, max_message=MAX_MESSAGE, shadow=_shadow_counts(ctx),
                      notice="Rolled back." if done == "rollback" else None)


async def diff(ctx: Ctx) -> Response:
    if not roles.operator(ctx):
        return roles.refused(ctx, ROLE)
    if ctx.services.policy is None:
        return _unavailable(ctx)
    args = ctx.request.query_params
    old_ref, new_ref = args.get("from", "")[:_REF], args.get("to", "")[:_REF]
    try:
        old, new = await ctx.services.policy.fetch(old_ref), await ctx.services.policy.fetch(new_ref)
    except VersionStoreUnavailable:
        return _unavailable(ctx)
    if old is None or new is None:
        return await page(ctx, error="Unknown policy version.", status=404)
    return ctx.render("policy_diff.html", old=old.summary(), new=new.summary(), lines=diff_lines(old.files, new.files),
                      windows=WINDOWS)


def diff_lines(old: dict[str, str], new: dict[str, str]) -> list[tuple[str, str]]:
    """A unified diff of two sets of files as ``(class, line)`` (``add``, ``del``, ``hunk``, ``file``, ``""``),
    at most :data:`MAX_DIFF_LINES` lines (then a last line says it was cut)."""
    out: list[tuple[str, str]] = []
    for path in sorted(set(old) | set(new)):
        a, b = old.get(path, "").splitlines(), new.get(path, "").splitlines()
        for line in difflib.unified_diff(a, b, f"a/{path}" if path in old else "/dev/null",
                                         f"b/{path}" if path in new else "/dev/null", lineterm=""):
            kind = ("file" if line.startswith(("---", "+++")) else "hunk" if line.startswith("@@")
                    else "add" if line.startswith("+") else "del" if line.startswith("-") else "")
            out.append((kind, line))
            if len(out) >= MAX_DIFF_LINES:
                return [*out, ("hunk", f"… cut at {MAX_DIFF_LINES} lines")]
    return out


async def confirm(ctx: Ctx) -> Response:
    if not roles.operator(ctx):
        return roles.refused(ctx, ROLE)
    if ctx.services.policy is None:
        return _unavailable(ctx)
    ref = ctx.form.get("version", "")[:_REF]
    try:
        stored = await ctx.services.policy.fetch(ref)
    except VersionStoreUnavailable:
        return _unavailable(ctx)
    if stored is None:
        return await page(ctx, error="Unknown policy version.", status=404)
    state = ctx.services.policy.status()
    return ctx.render("policy_confirm.html", version=stored.summary(), active=state.get("version"),
                      message=ctx.form.get("message", "")[:MAX_MESSAGE], max_message=MAX_MESSAGE)


async def rollback(ctx: Ctx) -> Response:
    if not roles.operator(ctx):
        return roles.refused(ctx, ROLE)
    if ctx.services.policy is None:
        return _unavailable(ctx)
    if ctx.form.get("confirm") != "yes":
        return await page(ctx, error="Not rolled back: confirm the rollback first.", status=400)
    ref = ctx.form.get("version", "")[:_REF]
    result = await ctx.services.policy.rollback(ref or None, author_of(ctx.principal), ctx.form.get("message", ""))
    if result.get("status") == "refused":
        return await page(ctx, error=f"Refused: {result.get('reason')}", result=result, status=422)
    return ctx.redirect("/console/containment/policy?done=rollback")


def _shadow_counts(ctx: Ctx) -> dict[str, int]:
    """The shadow version's decisions against the active one's since start (agree, disagree, error, dropped),
    from what ``/metrics`` serves; empty when metrics are off or none was counted."""
    render = ctx.services.metrics
    if render is None:
        return {}
    body = render()[0]
    if not body.startswith(b"# HELP"):
        return {}
    try:
        counts: dict[str, int] = live_figures(body.decode("utf-8"))["shadow"]
    except (ValueError, UnicodeDecodeError):
        return {}
    return counts


def _unavailable(ctx: Ctx) -> Response:
    return ctx.render("error.html", status=503, message="The policy version store is unavailable; try again shortly.")
