"""Demo billing service: invoice lookups (read-only) and refunds (side-effecting).

Run it with ``python -m portcullis.demo.services.billing``; it speaks MCP over stdio and, being a
service kit app (:mod:`portcullis.service`), serves only calls carrying a gateway-minted actor
token: started without the gateway's trust variables it refuses to start. Invoices come from the
bundled ``demo/data/invoices.json``. Refunds go to an in-process ledger and, when
``PORTCULLIS_DEMO_STATE_DIR`` is set, are appended as JSON lines to ``<dir>/refunds.jsonl``; both
record who requested the refund (``requested_by``: the client, user and agent of the verified
principal). The tool's result does not carry it, so the tool definition the gateway pins is unchanged.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import uuid
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel

from portcullis.demo.services._common import new_service, serve
from portcullis.service import GatewayTokenVerifier, ServiceApp, current_principal

STATE_DIR_ENV = "PORTCULLIS_DEMO_STATE_DIR"
_CURRENCY = re.compile(r"[A-Z]{3}")

SERVICE = "billing"
INSTRUCTIONS = "Demo billing service: invoices and refunds."
READ_ONLY = ToolAnnotations(readOnlyHint=True, idempotentHint=True, openWorldHint=False)
SIDE_EFFECTING = ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=False, openWorldHint=False)


class Invoice(BaseModel):
    """One invoice as the billing system stores it."""

    invoice_id: str
    order_id: str
    customer: str
    amount: str
    currency: str
    status: str
    issued: str


class Refund(BaseModel):
    """The outcome of a processed refund."""

    refund_id: str
    order_id: str
    amount: float
    currency: str
    status: Literal["processed"]


class Requester(BaseModel):
    """Who asked for a refund: the verified principal's client, user and agent."""

    client_id: str
    user_id: str | None
    agent_id: str | None


class LedgerEntry(Refund):
    """A processed refund as the ledger keeps it, with who requested it."""

    requested_by: Requester


_ledger: list[LedgerEntry] = []
_ledger_lock = threading.Lock()


@cache
def _invoices() -> dict[str, Invoice]:
    raw = (resources.files("portcullis.demo") / "data" / "invoices.json").read_text(encoding="utf-8")
    return {item["invoice_id"]: Invoice.model_validate(item) for item in json.loads(raw)}


def ledger() -> list[LedgerEntry]:
    """A copy of the refunds processed by this process, oldest first."""
    with _ledger_lock:
        return list(_ledger)


def get_invoice(invoice_id: str) -> Invoice:
    """Look up one invoice by its id (for example INV-1001)."""
    invoice = _invoices().get(invoice_id)
    if invoice is None:
        raise ToolError("invoice not found")
    return invoice


def process_refund(order_id: str, amount: float, currency: str, reason: str) -> Refund:
    """Refund part or all of an order. Each call issues a new refund."""
    if not math.isfinite(amount) or amount <= 0:
        raise ToolError("amount must be a positive number")
    if not _CURRENCY.fullmatch(currency):
        raise ToolError("currency must be a 3-letter ISO 4217 code")
    principal = current_principal()
    requester = Requester(client_id=principal.client_id, user_id=principal.user_id, agent_id=principal.agent_id)
    refund = Refund(
        refund_id=f"RF-{uuid.uuid4().hex[:12]}",
        order_id=order_id,
        amount=amount,
        currency=currency,
        status="processed",
    )
    entry = LedgerEntry(**refund.model_dump(), requested_by=requester)
    with _ledger_lock:
        _ledger.append(entry)
        state_dir = os.environ.get(STATE_DIR_ENV)
        if state_dir:
            record = entry.model_dump() | {
                "reason": reason,
                "processed_at": datetime.now(UTC).isoformat(),
            }
            directory = Path(state_dir)
            directory.mkdir(parents=True, exist_ok=True)
            with (directory / "refunds.jsonl").open("a", encoding="utf-8") as out:
                out.write(json.dumps(record, sort_keys=True) + "\n")
    return refund


def build_server(verifier: GatewayTokenVerifier) -> ServiceApp:
    """The billing service, accepting only calls whose actor token ``verifier`` accepts."""
    app = new_service(SERVICE, verifier, instructions=INSTRUCTIONS)
    app.add_tool(get_invoice, annotations=READ_ONLY)
    app.add_tool(process_refund, annotations=SIDE_EFFECTING)
    return app


def main() -> None:
    """Serve over stdio, trusting the gateway named in the environment; refuse to start without it."""
    serve(SERVICE, build_server)


if __name__ == "__main__":
    main()
