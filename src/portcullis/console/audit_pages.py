"""The audit: search, one request's timeline, the chain's verification status.

=====  ==============================================  =================================================
GET    ``/console/audit``                              the search form; with a query, the results (newest
                                                       first, :data:`PAGE` a page, at most :data:`MAX_PAGES`)
GET    ``/console/audit/request?id=<request id>``      every record of one request: decision, approval,
                                                       outcome (redactions are in its fields)
GET    ``/console/audit/chain``                        the chain status fragment the page polls
=====  ==============================================  =================================================

Reads go through the gateway's :class:`~portcullis.audit.reader.AuditReader` opener (read-only), the one the
approvers' recent calls use, with :class:`~portcullis.audit.query.AuditQuery` (the CLI's ``audit search``
filters). Responders and operators only (:mod:`.roles`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from portcullis.audit.errors import AuditUnavailable
from portcullis.audit.incident_services import get
from portcullis.audit.query import EFFECTS, AuditQuery, timeline_query
from portcullis.audit.verify import VerifyReport, verify_store
from portcullis.console import roles
from portcullis.console.chain_status import MAX_AGE_S, ChainStatus
from portcullis.policy.replay import hashed_paths

if TYPE_CHECKING:
    from portcullis.console.app import ConsoleApp, Ctx

log = logging.getLogger("portcullis.console")

PAGE = 50
MAX_PAGES = 20  # a search reads at most PAGE * MAX_PAGES records
MAX_FILTER = 256
FILTERS = ("since", "until", "agent", "user", "tool", "decision", "request_id")
ROLE = "responders and operators"


def register(app: ConsoleApp) -> None:
    chain = _chain_status(app)
    app.route("GET", "/audit", lambda ctx: search_page(ctx, chain), nav="audit")
    app.route("GET", "/audit/request", timeline_page, nav="audit")
    app.route("GET", "/audit/chain", lambda ctx: chain_fragment(ctx, chain), touch=False, nav="audit")


def _chain_status(app: ConsoleApp) -> ChainStatus | None:
    services = app.services
    store, key = services.audit, services.audit_public_key
    if store is None or key is None:
        return None

    async def verify() -> VerifyReport:
        return await verify_store(store, key)

    return ChainStatus(verify, max_age_s=MAX_AGE_S)


def when(ts: float | None) -> str:
    """A record time as UTC text."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def parse_query(args: Mapping[str, str]) -> tuple[AuditQuery | None, int, str | None]:
    """The form's filters as a query for ``page`` (1-based; a form with every field empty: the newest
    records); ``(None, 1, None)`` when no search was made; ``(None, 1, problem)`` for a bad one."""
    if not any(name in args for name in FILTERS):  # the page opened without a search
        return None, 1, None
    values = {name: args.get(name, "").strip() for name in FILTERS}
    try:
        page = int(args.get("page", "1") or "1")
    except ValueError:
        return None, 1, "page must be a number"
    if not 1 <= page <= MAX_PAGES:
        return None, 1, f"page must be from 1 to {MAX_PAGES}; narrow the search instead"
    if any(len(v) > MAX_FILTER for v in values.values()):
        return None, 1, f"a filter is longer than {MAX_FILTER} characters"
    try:
        since, until = _time(values["since"]), _time(values["until"])
    except ValueError:
        return None, 1, "times are YYYY-MM-DDTHH:MM (UTC)"
    if values["decision"] and values["decision"] not in EFFECTS:
        return None, 1, "decision must be allow, deny or require_approval"
    principal = {k: v for k, v in (("agent_id", values["agent"]), ("user_id", values["user"])) if v}
    try:
        query = AuditQuery(tool=values["tool"] or None, principal=principal, since=since, until=until,
                           effect=values["decision"] or None, request_id=values["request_id"] or None,
                           limit=page * PAGE)
    except ValueError as exc:
        return None, 1, str(exc)
    return query, page, None


def _time(text: str) -> float | None:
    if not text:
        return None
    parsed = datetime.fromisoformat(text)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def row(record: Any) -> dict[str, Any]:
    """The columns of one record in the results table (raw values: the template applies ``vis``)."""
    fields = record.fields
    verdict = get(fields, "decision", "effect") if record.kind == "decision" else (
        get(fields, "reason") if record.kind == "rejected" else get(fields, "outcome") if record.kind == "outcome"
        else get(fields, "action"))
    return {"index": record.index, "when": when(record.ts), "kind": record.kind, "request_id": record.request_id,
            "tool": get(fields, "tool", "name") or get(fields, "tool"),
            "agent": get(fields, "principal", "agent_id"), "user": get(fields, "principal", "user_id"),
            "verdict": verdict}


async def search_page(ctx: Ctx, chain: ChainStatus | None) -> Response:
    if not roles.reader(ctx):
        return roles.refused(ctx, ROLE)
    args = dict(ctx.request.query_params)
    query, page, problem = parse_query(args)
    rows: list[dict[str, Any]] = []
    more = False
    if query is not None:
        opener = ctx.services.audit_reader
        if opener is None:
            return _unavailable(ctx)
        try:
            async with opener() as reader:
                found = await reader.search(query)
        except AuditUnavailable:
            return _unavailable(ctx)
        rows = [row(r) for r in found[(page - 1) * PAGE:]]
        more = len(found) == query.limit and page < MAX_PAGES
    form = {name: args.get(name, "") for name in FILTERS}
    base = "&".join(f"{k}={v}" for k, v in _encoded(form).items() if v)
    return ctx.render("audit.html", form=form, rows=rows, searched=query is not None, problem=problem, page=page,
                      more=more, base=base, effects=sorted(EFFECTS), chain=_chain_view(chain),
                      page_size=PAGE, max_pages=MAX_PAGES, status=400 if problem else 200)


def _encoded(form: Mapping[str, str]) -> dict[str, str]:
    from urllib.parse import quote

    return {k: quote(v, safe="") for k, v in form.items()}


async def chain_fragment(ctx: Ctx, chain: ChainStatus | None) -> Response:
    if not roles.reader(ctx):
        return roles.refused(ctx, ROLE)
    return ctx.render("audit_chain.html", chain=_chain_view(chain))


def _chain_view(chain: ChainStatus | None) -> dict[str, Any] | None:
    if chain is None:
        return None
    view = chain.current()
    report = view.report
    return {"running": view.running, "checked_at": when(view.checked_at), "error": view.error,
            "ok": None if report is None else report.ok, "checked": None if report is None else report.records_checked,
            "reason": None if report is None else report.reason,
            "first_bad": None if report is None else report.first_bad_index}


_REQUEST_ID = re.compile(r"[^\x00-\x1f\x7f]{1,256}")


async def timeline_page(ctx: Ctx) -> Response:
    if not roles.reader(ctx):
        return roles.refused(ctx, ROLE)
    request_id = ctx.request.query_params.get("id", "")
    if not _REQUEST_ID.fullmatch(request_id):
        return ctx.render("error.html", status=404, message="No such request.")
    opener = ctx.services.audit_reader
    if opener is None:
        return _unavailable(ctx)
    try:
        query = timeline_query(request_id=request_id, limit=1)
        async with opener() as reader:
            found = await reader.timeline(query)
    except ValueError:
        return ctx.render("error.html", status=404, message="No such request.")
    except AuditUnavailable:
        return _unavailable(ctx)
    if not found:
        return ctx.render("error.html", status=404, message="No such request.")
    records = found[0].records
    steps = [{**row(r), "fields": r.fields, "hash": r.hash} for r in records]
    return ctx.render("audit_request.html", request_id=request_id, steps=steps, summary=summary(records))


def summary(records: Any) -> dict[str, Any]:
    """The request at a glance: its decision, approval steps, outcome and redactions (the argument paths the
    trail keeps only as keyed hashes, and the output filter's report)."""
    out: dict[str, Any] = {"decision": None, "rules": [], "approval": [], "outcome": None, "redacted": [],
                           "content": None}
    for record in records:
        fields = record.fields
        if record.kind == "decision":
            out["decision"] = get(fields, "decision", "effect")
            rules = get(fields, "decision", "rule_ids")
            out["rules"] = rules if isinstance(rules, list) else []
            out["redacted"] = ["/" + "/".join(p) for p in hashed_paths(get(fields, "arguments"))]
        elif record.kind == "rejected":
            out["decision"] = f"rejected: {get(fields, 'reason')}"
        elif record.kind == "approval":
            out["approval"].append(f"{get(fields, 'event')} ({get(fields, 'status')})")
        elif record.kind == "outcome":
            out["outcome"] = get(fields, "outcome")
            out["content"] = get(fields, "content")
    return out


def _unavailable(ctx: Ctx) -> Response:
    log.error("audit store unavailable (console)")
    return ctx.render("error.html", status=503, message="The audit store is unavailable; try again shortly.")
