"""The approvers' HTTP API, served on the admin listener.

Every request is authenticated exactly as an MCP request is (``Authorization: Bearer …`` through
the gateway's own authenticator: issuers, algorithms, audience, revocation) and authorized
against ``approvals.approvers``: only people who may approve some tool may list, only approvers
of an approval's tool may see or decide it.

=======  ==============================  =====================================================
GET      ``/approvals?status=pending``   one page of the approvals this approver may decide
                                        (brief, newest first; ``limit`` 1 to 500, default 100;
                                        ``cursor``: the ``next_cursor`` of the previous page;
                                        one request reads at most 5000 stored approvals, so a
                                        page may be short, even empty, with a ``next_cursor``)
GET      ``/approvals/<id>``             everything bound to one approval, made visible
                                         (values the policy hides as keyed hashes)
POST     ``/approvals/<id>/approve``     body ``{"reason": "…"}`` (optional)
POST     ``/approvals/<id>/deny``        body ``{"reason": "…"}`` (optional)
=======  ==============================  =====================================================

A vote's body, when it has one, must say ``Content-Type: application/json``. Authentication, the
body's bounds and the answers are :mod:`portcullis.transport.admin_json`'s, shared by every admin API.
Answers are JSON; errors are ``{"error": "<fixed text>"}`` with 400, 401, 403, 404, 405, 409,
413, 415, 500 or 503 — never a stack trace or a token.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from urllib.parse import parse_qs

from portcullis.approvals.model import STATUSES, visible
from portcullis.approvals.service import NOT_A_PERSON, PAGE_MAX, ApprovalService, ApproverRefused
from portcullis.approvals.store import ApprovalStoreUnavailable, UnknownCursor
from portcullis.errors import PortcullisError
from portcullis.transport.admin_json import (
    Answer,
    Authenticate,
    Receive,
    Scope,
    Send,
    read_json_object,
    request_headers,
    respond,
)

log = logging.getLogger("portcullis.approvals")

MAX_BODY = 8192
PAGE_DEFAULT = 100
_CURSOR = re.compile(r"^(apr_[0-9a-f]{32}|scan_[0-9a-f]{88})$")  # a page's last id, or a sealed continuation
_ONE = re.compile(r"^/approvals/(apr_[0-9a-f]{32})$")
_VOTE = re.compile(r"^/approvals/(apr_[0-9a-f]{32})/(approve|deny|status)$")


class ApprovalApi:
    """ASGI handler for ``/approvals…`` on the admin listener."""

    def __init__(self, service: ApprovalService, authenticate: Authenticate,
                 clock: Callable[[], float] = time.time) -> None:
        self._service, self._authenticate, self._clock = service, authenticate, clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, lambda: self._handle(scope, receive), log, _errors)

    async def _handle(self, scope: Scope, receive: Receive) -> Answer:
        path, method = scope["path"], scope["method"]
        headers = request_headers(scope)
        one, vote = _ONE.match(path), _VOTE.match(path)
        if path != "/approvals" and one is None and vote is None:
            return 404, {"error": "not found"}
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        link = vote is not None and ("sig" in query or "exp" in query)
        if link:  # a signed link from a notice: genuine, unexpired, for these exact arguments?
            assert vote is not None
            approval = await self._service.get(vote.group(1))
            signer = self._service.links
            if (approval is None or signer is None
                    or not signer.check(approval, vote.group(2), (query.get("exp") or [""])[0],
                                        (query.get("sig") or [""])[0], self._clock())):
                return 403, {"error": "link invalid or expired"}
            if vote.group(2) == "status":  # the requester's link: state only, never the arguments
                if method != "GET":
                    return 405, {"error": "method not allowed"}
                return 200, {"id": approval.id, "tool": approval.tool, "status": approval.status,
                             "approvals": len(approval.approvals()), "required": approval.required,
                             "expires_at": approval.expires_at}
            if method == "GET":  # shows, never decides (link previews and forwarded links approve nothing)
                # unauthenticated: the summary and the bound hash only, never the arguments
                return 200, {"id": approval.id, "tool": visible(approval.tool), "status": approval.status,
                             "summary": visible(approval.summary()), "arguments_hash": approval.arguments_hash,
                             "expires_at": approval.expires_at, "verdict": vote.group(2),
                             "how": f"GET /approvals/{approval.id} with your own bearer token (or run: portcullis "
                                    f"approvals show {approval.id}) to see the arguments; POST this URL with it "
                                    f"(or run: portcullis approvals {vote.group(2)} {approval.id}) to record "
                                    "your verdict"}
        wanted = "POST" if vote else "GET"
        if method != wanted:
            return 405, {"error": "method not allowed"}
        approver = await self._authenticate(headers, scope)
        if not approver.person:
            raise ApproverRefused(NOT_A_PERSON)
        if path == "/approvals":
            status = (query.get("status") or [None])[0]
            if status is not None and status not in STATUSES:
                return 400, {"error": "unknown status"}
            limit_text = (query.get("limit") or [str(PAGE_DEFAULT)])[0]
            if not limit_text.isascii() or not limit_text.isdigit() or not 1 <= int(limit_text) <= PAGE_MAX:
                return 400, {"error": f"limit must be a whole number from 1 to {PAGE_MAX}"}
            cursor = (query.get("cursor") or [None])[0]
            if cursor is not None and _CURSOR.match(cursor) is None:
                return 400, {"error": "unknown cursor"}
            try:
                mine, next_cursor = await self._service.list_for(approver, status, limit=int(limit_text),
                                                                 cursor=cursor)
            except UnknownCursor:
                return 400, {"error": "unknown cursor"}
            return 200, {"approvals": mine, "next_cursor": next_cursor}
        if one is not None:
            view = await self._service.view(one.group(1))
            if view is None or not self._service.may_approve(view["tool"], approver, view["tool_risk"]):
                return 404, {"error": "no such approval"}  # the same for "not yours": ids cannot be probed
            return 200, view
        assert vote is not None
        if vote.group(2) == "status":
            return 404, {"error": "not found"}
        body = await read_json_object(headers, receive, MAX_BODY, optional=True)
        reason = body.get("reason", "")
        if not isinstance(reason, str):
            return 400, {"error": "reason must be a string"}
        updated = await self._service.vote(vote.group(1), approver, vote.group(2), reason=reason)
        return 200, {"id": updated.id, "status": updated.status, "approvals": len(updated.approvals()),
                     "required": updated.required}


def _errors(exc: Exception) -> Answer | None:
    if isinstance(exc, ApproverRefused):
        return exc.status, {"error": exc.reason}
    if isinstance(exc, ApprovalStoreUnavailable):
        log.error("approval store unavailable")
        return 503, {"error": "approval store unavailable"}
    if isinstance(exc, PortcullisError):
        log.warning("approval API request refused", extra={"fields": {"error": type(exc).__name__}})
        return 400, {"error": exc.message}
    return None
