"""Telling approvers: the ``Notifier`` seam and a chat-style incoming-webhook implementation.

A notifier is offered every new approval request and must never block or fail a call: offers go
into a bounded queue (a full queue drops the notice and counts it; the approval itself is stored
and listed either way), and a background task delivers them with a few retries.

:class:`WebhookNotifier` POSTs a Slack-style ``{"text", "blocks"}`` payload, signed like the SIEM
webhook (``X-Portcullis-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>." + body>``), with an
approve and a deny **link**. A notice carries the summary and the hash of the arguments, never
the arguments themselves (only an authenticated approver sees those). A link is signed and
expiring (:class:`LinkSigner`): it binds the approval id, the verdict, the expiry and the hash of
the exact arguments. Following it (GET) needs no credentials, so it shows the summary and the
hash only; voting through it is a POST that still carries the approver's own bearer token — a
link forwarded, previewed by a chat bot or leaked approves nothing by itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

import anyio
import httpx2

from portcullis.approvals.model import Approval, visible
from portcullis.audit.keys import create_once, read_private
from portcullis.audit.siem.webhook import SIGNATURE_HEADER, signature_header

log = logging.getLogger("portcullis.approvals")
LINK_KEY_FILE = "approval-links.key"


class Notifier(Protocol):
    def offer(self, approval: Approval) -> bool: ...
    async def run(self) -> None: ...


def load_link_key(state_dir: Path) -> bytes:
    """The key that signs approval links (32 random bytes in the state directory, owner-only),
    created once the way the audit keys are (atomic, never replaced, mode checked on read)."""
    path = state_dir / LINK_KEY_FILE
    create_once(path, lambda: secrets.token_bytes(32), 0o600)
    key = read_private(path)
    if len(key) < 32:
        raise ValueError(f"{path} is shorter than 32 bytes")
    return key


class LinkSigner:
    """Signed, expiring approve / deny links to the admin listener's ``/approvals/<id>/<verdict>``."""

    def __init__(self, key: bytes, base_url: str) -> None:
        if len(key) < 32:
            raise ValueError("link key must be at least 32 bytes")
        self._key, self._base = key, base_url.rstrip("/")

    def _mac(self, approval_id: str, verdict: str, exp: int, args_hash: str) -> str:
        message = f"{approval_id}\n{verdict}\n{exp}\n{args_hash}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def link(self, approval: Approval, verdict: str) -> str:
        exp = int(approval.expires_at)
        query = urlencode({"exp": exp, "sig": self._mac(approval.id, verdict, exp, approval.arguments_hash)})
        return f"{self._base}/approvals/{approval.id}/{verdict}?{query}"

    def status_link(self, approval: Approval) -> str:
        """A signed link to the approval's status only (no arguments): for the requester."""
        return self.link(approval, "status")

    def request_state(self, approval: Approval) -> str:
        """The 2026-07-28 ``requestState`` of a held call: the approval id, signed (callers may not forge it)."""
        exp = int(approval.expires_at)
        return f"{approval.id}.{exp}.{self._mac(approval.id, 'request-state', exp, approval.arguments_hash)}"

    @staticmethod
    def state_id(state: str) -> str | None:
        """The approval id a ``requestState`` names (unverified: :meth:`check_state` verifies)."""
        parts = state.split(".") if isinstance(state, str) and len(state) < 256 else []
        return parts[0] if len(parts) == 3 and parts[0].startswith("apr_") else None

    def check_state(self, approval: Approval, state: str) -> bool:
        parts = state.split(".")
        if len(parts) != 3 or parts[0] != approval.id or not parts[1].isdigit() or not parts[2].isascii():
            return False
        expected = self._mac(approval.id, "request-state", int(parts[1]), approval.arguments_hash)
        return hmac.compare_digest(expected, parts[2])

    def check(self, approval: Approval, verdict: str, exp: str, sig: str, now: float) -> bool:
        """Whether a link's ``exp`` and ``sig`` are genuine for this approval and verdict, and unexpired."""
        if not exp.isascii() or not exp.isdigit() or len(exp) > 12 or not sig.isascii():
            return False
        if now >= int(exp):
            return False
        return hmac.compare_digest(self._mac(approval.id, verdict, int(exp), approval.arguments_hash), sig.lower())


def chat_payload(approval: Approval, signer: LinkSigner) -> dict[str, Any]:
    """A Slack-style incoming-webhook message: summary, bound hash, two link buttons.

    Never the arguments: a chat channel is not an approver's credential, so the notice names the
    call (tool, requester, rules) and the hash it is bound to; the arguments are shown only to an
    authenticated approver (``GET /approvals/<id>``, ``portcullis approvals show``)."""
    who = approval.requester
    requester = visible(str(who.get("user_id") or "-")) + " via " + visible(str(who.get("agent_id") or
                                                                              who.get("client_id")))
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(approval.expires_at))
    text = f"Approval needed: {approval.tool} by {requester} ({approval.required} approver(s), expires {expires})"
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": f"*Executes*\n`{approval.arguments_hash}`"},
                {"type": "mrkdwn", "text": f"*Rules*\n{visible(', '.join(approval.rule_ids)) or '-'}"},
                {"type": "mrkdwn", "text": f"*Why*\n{visible(approval.justification) or '-'}"},
            ]},
            {"type": "actions", "elements": [
                {"type": "button", "text": {"type": "plain_text", "text": "Review and approve"}, "style": "primary",
                 "url": signer.link(approval, "approve")},
                {"type": "button", "text": {"type": "plain_text", "text": "Review and deny"}, "style": "danger",
                 "url": signer.link(approval, "deny")},
            ]},
        ],
        "approval": {"id": approval.id, "tool": visible(approval.tool), "summary": visible(approval.summary()),
                     "arguments_hash": approval.arguments_hash,
                     "expires_at": approval.expires_at, "required": approval.required},
    }


class WebhookNotifier:
    """Delivers :func:`chat_payload` to an incoming webhook (see the module docstring)."""

    def __init__(self, url: str, key: bytes, signer: LinkSigner, *, allow_insecure_http: bool = False,
                 timeout_s: float = 10.0, max_pending: int = 1000, attempts: int = 3,
                 clock: Callable[[], float] = time.time, transport: httpx2.AsyncBaseTransport | None = None) -> None:
        parsed = httpx2.URL(url)
        if parsed.scheme not in ("https", "http") or not parsed.host or parsed.userinfo:
            raise ValueError("notify webhook url must be https://host/... without credentials")
        if parsed.scheme == "http" and not allow_insecure_http:
            raise ValueError("notify webhook url must be https:// (allow_insecure_http permits http://)")
        if len(key) < 16:
            raise ValueError("notify webhook HMAC key must be at least 16 bytes")
        self._url, self._key, self._signer = url, key, signer
        self._timeout_s, self._attempts, self._clock, self._transport = timeout_s, attempts, clock, transport
        # approval notices, and other signed notices (anomaly alerts: offer_payload) through the same sender
        self._send, self._receive = anyio.create_memory_object_stream[Approval | dict[str, Any]](max_pending)
        self.sent = self.dropped = self.failed = 0

    def offer(self, approval: Approval) -> bool:
        try:
            self._send.send_nowait(approval)
        except anyio.WouldBlock:
            self.dropped += 1
            log.warning("approval notice dropped: the notifier queue is full", extra={"fields": {
                "approval_id": approval.id}})
            return False
        return True

    def offer_payload(self, payload: dict[str, Any]) -> bool:
        """Queue a ready-made JSON notice (an anomaly alert), signed and retried like an approval notice."""
        try:
            self._send.send_nowait(payload)
        except anyio.WouldBlock:
            self.dropped += 1
            log.warning("notice dropped: the notifier queue is full")
            return False
        return True

    async def run(self) -> None:
        async with httpx2.AsyncClient(timeout=self._timeout_s, follow_redirects=False,
                                      transport=self._transport) as client, self._receive:
            async for item in self._receive:
                await self._deliver(client, item)

    async def _deliver(self, client: httpx2.AsyncClient, item: Approval | dict[str, Any]) -> None:
        payload = chat_payload(item, self._signer) if isinstance(item, Approval) else item
        body = json.dumps(payload, separators=(",", ":")).encode()
        ref = {"approval_id": item.id} if isinstance(item, Approval) else {"notice": "alert"}
        for attempt in range(self._attempts):
            headers = {"content-type": "application/json",
                       SIGNATURE_HEADER: signature_header(self._key, body, int(self._clock()))}
            try:
                response = await client.post(self._url, content=body, headers=headers)
                if 200 <= response.status_code < 300:
                    self.sent += 1
                    return
                status = f"HTTP {response.status_code}"
            except httpx2.HTTPError as exc:
                status = type(exc).__name__
            log.warning("approval notice not delivered", extra={"fields": {
                **ref, "attempt": attempt + 1, "status": status}})
            await anyio.sleep(min(30.0, 0.5 * 2**attempt))
        self.failed += 1
