"""Demo analytics service: read-only revenue aggregates over a bundled CSV.

Run it with ``python -m portcullis.demo.services.analytics``; it speaks MCP over stdio and, being a
service kit app (:mod:`portcullis.service`), serves only calls carrying a gateway-minted actor
token: started without the gateway's trust variables it refuses to start. The rows come from
``demo/data/revenue.csv`` (month, region, product, revenue_cents, orders), loaded once into an
in-memory SQLite image and queried through the SQL kit (:mod:`portcullis.kits.sql`): one declared
template with typed, bounded parameters, run read-only under the kit's authorizer.
"""

from __future__ import annotations

import csv
import io
import re
import sqlite3
from functools import cache
from importlib import resources

from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel

from portcullis.demo.services._common import new_service, serve
from portcullis.kits.sql import Param, ReadOnlyPolicy, SqlKit, SqlKitError, declare_template
from portcullis.kits.sql.sqlite_engine import SqliteReadOnly
from portcullis.service import GatewayTokenVerifier, ServiceApp
from portcullis.service.minimise import Metric, aggregate, declared_output

REGIONS = ("emea", "amer", "apac")
_MONTH = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")

SERVICE = "analytics"
INSTRUCTIONS = "Demo analytics service: revenue summaries."
READ_ONLY = ToolAnnotations(readOnlyHint=True, destructiveHint=False, idempotentHint=True, openWorldHint=False)


_COLUMNS = ("month", "region", "product", "revenue_cents", "orders")
_POLICY = ReadOnlyPolicy.build("sqlite", {"revenue": _COLUMNS}, functions=())
# A NULL filter matches every row; the parameters repeat the manifest's bounds behind the gateway.
_REVENUE_ROWS = declare_template(
    "revenue_rows",
    "SELECT region, revenue_cents, orders FROM revenue"
    " WHERE (:region IS NULL OR region = :region) AND (:month IS NULL OR month = :month)"
    " AND (:product IS NULL OR product = :product)",
    [
        Param("region", "text", nullable=True, pattern="emea|amer|apac"),
        Param("month", "text", nullable=True, pattern="[0-9]{4}-(0[1-9]|1[0-2])"),
        Param("product", "text", nullable=True, pattern="[a-z0-9][a-z0-9-]{0,63}"),
    ],
    policy=_POLICY,
    max_rows=10_000,
)


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
def _kit() -> SqlKit:
    """The CSV loaded once into a SQLite image; every query runs on a read-only copy of it."""
    text = (resources.files("portcullis.demo") / "data" / "revenue.csv").read_text(encoding="utf-8")
    rows = [
        (r["month"], r["region"], r["product"], int(r["revenue_cents"]), int(r["orders"]))
        for r in csv.DictReader(io.StringIO(text))
    ]
    with sqlite3.connect(":memory:") as conn:
        conn.execute(
            "CREATE TABLE revenue (month TEXT, region TEXT, product TEXT, revenue_cents INTEGER, orders INTEGER)"
        )
        conn.executemany("INSERT INTO revenue VALUES (?, ?, ?, ?, ?)", rows)
        image = conn.serialize()
    conn.close()
    return SqlKit(SqliteReadOnly.from_image(image, _POLICY), _POLICY, [_REVENUE_ROWS])


# The rows are already monthly totals per region and product, not records about people, so one row
# may form a group (k=1); a service aggregating per-person rows would set k to its threshold.
MIN_GROUP_ROWS = 1
_BY_REGION = (Metric("sum", "/revenue_cents", "revenue_cents"), Metric("sum", "/orders", "orders"))


@declared_output("/total_revenue_cents", "/orders", "/row_count", "/by_region/*/region",
                 "/by_region/*/revenue_cents", "/by_region/*/orders")
async def summarize_revenue(
    region: str | None = None, month: str | None = None, product: str | None = None
) -> RevenueSummary:
    """Total revenue and orders with a per-region breakdown, optionally filtered by region, month, product."""
    if region is not None and region not in REGIONS:
        raise ToolError("region must be one of: emea, amer, apac")
    if month is not None and not _MONTH.fullmatch(month):
        raise ToolError("month must look like YYYY-MM")
    try:
        result = await _kit().run("revenue_rows", {"region": region, "month": month, "product": product})
    except SqlKitError:
        raise ToolError("the revenue data could not be read for these filters") from None
    if result.truncated:
        raise ToolError("too many revenue rows to summarise")
    typed = [(str(name), _integer(cents), _integer(count)) for name, cents, count in result.rows]
    rows = [{"region": name, "revenue_cents": cents, "orders": count} for name, cents, count in typed]
    groups = aggregate(rows, ["/region"], _BY_REGION, k=MIN_GROUP_ROWS).groups
    by_region = [
        RegionTotal(region=g["region"], revenue_cents=g["revenue_cents"], orders=g["orders"])
        for g in sorted(groups, key=lambda g: str(g["region"]))
    ]
    return RevenueSummary(
        total_revenue_cents=sum(cents for _, cents, _ in typed),
        orders=sum(count for _, _, count in typed),
        row_count=len(rows),
        by_region=by_region,
    )


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ToolError("the revenue data is malformed")
    return value


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
