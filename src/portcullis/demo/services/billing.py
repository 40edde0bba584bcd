"""Demo billing service: invoice lookups (read-only) and refunds (side-effecting).

Run it with ``python -m portcullis.demo.services.billing``; it speaks MCP over stdio. Invoices
come from the bundled ``demo/data/invoices.json``. Refunds go to an in-process ledger and, when
``PORTCULLIS_DEMO_STATE_DIR`` is set, are appended as JSON lines to ``<dir>/refunds.jsonl``.
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

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel

STATE_DIR_ENV = "PORTCULLIS_DEMO_STATE_DIR"
_CURRENCY = re.compile(r"[A-Z]{3}")

server = MCPServer(name="billing", instructions="Demo billing service: invoices and refunds.")


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


_ledger: list[Refund] = []
_ledger_lock = threading.Lock()


@cache
def _invoices() -> dict[str, Invoice]:
    raw = (resources.files("portcullis.demo") / "data" / "invoices.json").read_text(encoding="utf-8")
    return {item["invoice_id"]: Invoice.model_validate(item) for item in json.loads(raw)}


def ledger() -> list[Refund]:
    """A copy of the refunds processed by this process, oldest first."""
    with _ledger_lock:
        return list(_ledger)


@server.tool(
    annotations=ToolAnnotations(readOnlyHint=True, idempotentHint=True, openWorldHint=False),
)
def get_invoice(invoice_id: str) -> Invoice:
    """Look up one invoice by its id (for example INV-1001)."""
    invoice = _invoices().get(invoice_id)
    if invoice is None:
        raise ToolError("invoice not found")
    return invoice


@server.tool(
    annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=False, openWorldHint=False),
)
def process_refund(order_id: str, amount: float, currency: str, reason: str) -> Refund:
    """Refund part or all of an order. Each call issues a new refund."""
    if not math.isfinite(amount) or amount <= 0:
        raise ToolError("amount must be a positive number")
    if not _CURRENCY.fullmatch(currency):
        raise ToolError("currency must be a 3-letter ISO 4217 code")
    refund = Refund(
        refund_id=f"RF-{uuid.uuid4().hex[:12]}",
        order_id=order_id,
        amount=amount,
        currency=currency,
        status="processed",
    )
    with _ledger_lock:
        _ledger.append(refund)
        state_dir = os.environ.get(STATE_DIR_ENV)
        if state_dir:
            record = refund.model_dump() | {
                "reason": reason,
                "processed_at": datetime.now(UTC).isoformat(),
            }
            directory = Path(state_dir)
            directory.mkdir(parents=True, exist_ok=True)
            with (directory / "refunds.jsonl").open("a", encoding="utf-8") as out:
                out.write(json.dumps(record, sort_keys=True) + "\n")
    return refund


def main() -> None:
    """Serve over stdio."""
    server.run()


if __name__ == "__main__":
    main()
