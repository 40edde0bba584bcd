"""Demo analytics service: read-only revenue aggregates over a bundled CSV.

Run it with ``python -m portcullis.demo.services.analytics``; it speaks MCP over stdio and, being a
service kit app (:mod:`portcullis.service`), serves only calls carrying a gateway-minted actor
token: started without the gateway's trust variables it refuses to start. The rows come from
``demo/data/revenue.csv`` (month, region, product, revenue_cents, orders).
"""

from __future__ import annotations

import csv
import io
import re
from functools import cache
from importlib import resources
from typing import NamedTuple

from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel

from portcullis.demo.services._common import new_service, serve
from portcullis.service import GatewayTokenVerifier, ServiceApp
from portcullis.service.minimise import Metric, aggregate, declared_output

REGIONS = ("emea", "amer", "apac")
_MONTH = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")

SERVICE = "analytics"
INSTRUCTIONS = "Demo analytics service: revenue summaries."
READ_ONLY = ToolAnnotations(readOnlyHint=True, destructiveHint=False, idempotentHint=True, openWorldHint=False)


class _Row(NamedTuple):
    month: str
    region: str
    product: str
    revenue_cents: int
    orders: int


class RegionTotal(BaseModel):
    """Revenue and order count of one region within the filtered rows."""

    region: str
    revenue_cents: int
    orders: int


class RevenueSummary(BaseModel):
    """An aggregate over the rows that match every given filter."""

    total_revenue_cents: int
    orders: int
    row_count: int
    by_region: list[RegionTotal]


@cache
def _rows() -> tuple[_Row, ...]:
    text = (resources.files("portcullis.demo") / "data" / "revenue.csv").read_text(encoding="utf-8")
    return tuple(
        _Row(r["month"], r["region"], r["product"], int(r["revenue_cents"]), int(r["orders"]))
        for r in csv.DictReader(io.StringIO(text))
    )


# The rows are already monthly totals per region and product, not records about people, so one row
# may form a group (k=1); a service aggregating per-person rows would set k to its threshold.
MIN_GROUP_ROWS = 1
_BY_REGION = (Metric("sum", "/revenue_cents", "revenue_cents"), Metric("sum", "/orders", "orders"))


@declared_output("/total_revenue_cents", "/orders", "/row_count", "/by_region/*/region",
                 "/by_region/*/revenue_cents", "/by_region/*/orders")
def summarize_revenue(
    region: str | None = None, month: str | None = None, product: str | None = None
) -> RevenueSummary:
    """Total revenue and orders with a per-region breakdown, optionally filtered by region, month, product."""
    if region is not None and region not in REGIONS:
        raise ToolError("region must be one of: emea, amer, apac")
    if month is not None and not _MONTH.fullmatch(month):
        raise ToolError("month must look like YYYY-MM")
    rows = [
        row
        for row in _rows()
        if (region is None or row.region == region)
        and (month is None or row.month == month)
        and (product is None or row.product == product)
    ]
    groups = aggregate((row._asdict() for row in rows), ["/region"], _BY_REGION, k=MIN_GROUP_ROWS).groups
    by_region = [
        RegionTotal(region=g["region"], revenue_cents=g["revenue_cents"], orders=g["orders"])
        for g in sorted(groups, key=lambda g: str(g["region"]))
    ]
    return RevenueSummary(
        total_revenue_cents=sum(r.revenue_cents for r in rows),
        orders=sum(r.orders for r in rows),
        row_count=len(rows),
        by_region=by_region,
    )


def build_server(verifier: GatewayTokenVerifier) -> ServiceApp:
    """The analytics service, accepting only calls whose actor token ``verifier`` accepts."""
    app = new_service(SERVICE, verifier, instructions=INSTRUCTIONS)
    app.add_tool(summarize_revenue, annotations=READ_ONLY)
    return app


def main() -> None:
    """Serve over stdio, trusting the gateway named in the environment; refuse to start without it."""
    serve(SERVICE, build_server)


if __name__ == "__main__":
    main()
