"""The bundled demo tool services and the demo deployment that fronts them.

The services are service kit apps: every call here carries a fresh actor token minted by a
stand-in gateway (:class:`StandInGateway`), as the real gateway's forward stage does.
"""

from __future__ import annotations

import csv
import importlib
import io
import itertools
import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from mcp import Client, MCPError
from mcp.types import CallToolResult, TextContent

from portcullis.config.model import GatewayConfig, ToolManifest
from portcullis.demo.services import analytics, billing, files
from portcullis.identity.minting import (
    ACTOR_TOKEN_META_KEY,
    KeyRing,
    TokenMinter,
    gateway_issuer,
    service_audience,
)
from portcullis.identity.principal import Principal
from portcullis.pinning import definition_hash
from portcullis.service import GatewayTokenVerifier, ServiceApp
from portcullis.service.env import AUDIENCE_ENV, ISSUER_ENV, JWKS_ENV

SECRET = "TOPSECRET-d3m0"
DEPLOYMENT = Path(str(resources.files("portcullis.demo") / "deployment"))
DATA = Path(str(resources.files("portcullis.demo") / "data"))
ISSUER = gateway_issuer("demo-test")
PRINCIPAL = Principal(
    client_id="agent-console",
    auth_method="bearer",
    issuer="https://idp.example",
    user_id="alice",
    agent_id="refund-bot",
)
SERVICES: dict[str, ModuleType] = {"billing": billing, "analytics": analytics, "files": files}


class StandInGateway:
    """One signing key ring, and a fresh single-use actor token for every call, as the gateway mints."""

    def __init__(self) -> None:
        self.ring = KeyRing.generate()
        self.minter = TokenMinter(self.ring, issuer=ISSUER)
        self._request_ids = itertools.count(1)

    def verifier(self, service: str) -> GatewayTokenVerifier:
        """What the gateway's environment variables give the service ``service``."""
        return GatewayTokenVerifier(self.ring.jwks(), audience=service_audience(service), issuer=ISSUER)

    def server(self, service: str) -> ServiceApp:
        """The demo service ``service``, trusting this gateway."""
        return SERVICES[service].build_server(self.verifier(service))

    def token(self, service: str, name: str) -> str:
        """A token for one call of tool ``name`` at ``service``."""
        request_id = f"req-{next(self._request_ids)}"
        return self.minter.mint(
            PRINCIPAL, audience=service_audience(service), request_id=request_id, tool=f"{service}.{name}", target=name
        )

    async def call(self, client: Client, name: str, args: dict[str, Any]) -> CallToolResult:
        """Call tool ``name`` over ``client`` with a token for the service at the other end."""
        service = client.server_info.name
        meta = {ACTOR_TOKEN_META_KEY: self.token(service, name)}
        return await client.session.call_tool(name, args, meta=meta)

    async def invoke(self, server: ServiceApp, name: str, args: dict[str, Any]) -> CallToolResult:
        """One call on a fresh in-memory connection to ``server``."""
        async with Client(server) as client:
            return await self.call(client, name, args)


@pytest.fixture(autouse=True)
def _tool_logic_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests exercise the tools' own checks; the kit's policy re-check has its own tests."""
    monkeypatch.setenv("PORTCULLIS_POLICY_ENFORCE", "0")
    monkeypatch.delenv("PORTCULLIS_POLICY_ROOT", raising=False)


@pytest.fixture
def gateway() -> StandInGateway:
    return StandInGateway()


@pytest.fixture
def billing_app(gateway: StandInGateway) -> ServiceApp:
    return gateway.server("billing")


@pytest.fixture
def analytics_app(gateway: StandInGateway) -> ServiceApp:
    return gateway.server("analytics")


@pytest.fixture
def files_app(gateway: StandInGateway) -> ServiceApp:
    return gateway.server("files")


def text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


def assert_refused(result: CallToolResult, message: str) -> None:
    """The call failed as a tool error whose text ends with the service's fixed message."""
    assert result.is_error
    assert result.structured_content is None
    assert text_of(result).endswith(": " + message), text_of(result)


# --------------------------------------------------------------------------- billing


async def test_get_invoice_returns_bundled_invoice(gateway: StandInGateway, billing_app: ServiceApp) -> None:
    """A known invoice id returns that invoice as structured content."""
    result = await gateway.invoke(billing_app, "get_invoice", {"invoice_id": "INV-1001"})
    assert not result.is_error
    assert result.structured_content is not None
    assert result.structured_content["invoice_id"] == "INV-1001"
    assert result.structured_content["order_id"] == "ORD-20001"
    assert result.structured_content["currency"] == "EUR"


async def test_get_invoice_unknown_id_is_tool_error(gateway: StandInGateway, billing_app: ServiceApp) -> None:
    """An unknown invoice id is a tool error with a short message."""
    result = await gateway.invoke(billing_app, "get_invoice", {"invoice_id": "INV-9999"})
    assert_refused(result, "invoice not found")


async def test_process_refund_records_in_ledger_and_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gateway: StandInGateway, billing_app: ServiceApp
) -> None:
    """A valid refund is processed, kept in the ledger and appended to refunds.jsonl."""
    monkeypatch.setenv(billing.STATE_DIR_ENV, str(tmp_path))
    args = {"order_id": "ORD-20002", "amount": 49.5, "currency": "USD", "reason": "damaged in transit"}
    result = await gateway.invoke(billing_app, "process_refund", args)
    assert not result.is_error
    refund = result.structured_content
    assert refund is not None
    assert refund["status"] == "processed"
    assert (refund["order_id"], refund["amount"], refund["currency"]) == ("ORD-20002", 49.5, "USD")
    assert refund["refund_id"] in {r.refund_id for r in billing.ledger()}
    lines = (tmp_path / "refunds.jsonl").read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[-1])
    assert record["refund_id"] == refund["refund_id"]
    assert record["reason"] == "damaged in transit"


async def test_refund_ledger_records_who_requested_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gateway: StandInGateway, billing_app: ServiceApp
) -> None:
    """The ledger and its JSON line name the verified principal; the tool's result does not (its schema is pinned)."""
    monkeypatch.setenv(billing.STATE_DIR_ENV, str(tmp_path))
    args = {"order_id": "ORD-20003", "amount": 12.0, "currency": "EUR", "reason": "late delivery"}
    result = await gateway.invoke(billing_app, "process_refund", args)
    assert not result.is_error
    refund = result.structured_content
    assert refund is not None
    assert "requested_by" not in refund
    requested_by = {"client_id": "agent-console", "user_id": "alice", "agent_id": "refund-bot"}
    (entry,) = [r for r in billing.ledger() if r.refund_id == refund["refund_id"]]
    assert entry.requested_by.model_dump() == requested_by
    record = json.loads((tmp_path / "refunds.jsonl").read_text(encoding="utf-8").splitlines()[-1])
    assert record["refund_id"] == refund["refund_id"]
    assert record["requested_by"]["agent_id"] == PRINCIPAL.agent_id
    assert record["requested_by"] == requested_by


@pytest.mark.parametrize("amount", [0, -10.0])
async def test_process_refund_rejects_non_positive_amount(
    amount: float, gateway: StandInGateway, billing_app: ServiceApp
) -> None:
    """A zero or negative amount is refused and nothing is recorded."""
    before = len(billing.ledger())
    args = {"order_id": "ORD-20001", "amount": amount, "currency": "EUR", "reason": "test"}
    result = await gateway.invoke(billing_app, "process_refund", args)
    assert_refused(result, "amount must be a positive number")
    assert len(billing.ledger()) == before


async def test_process_refund_rejects_bad_currency(gateway: StandInGateway, billing_app: ServiceApp) -> None:
    """A currency that is not a 3-letter upper-case code is refused."""
    args = {"order_id": "ORD-20001", "amount": 5, "currency": "euro", "reason": "test"}
    result = await gateway.invoke(billing_app, "process_refund", args)
    assert result.is_error


# --------------------------------------------------------------------------- analytics


def _revenue_rows() -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((DATA / "revenue.csv").read_text(encoding="utf-8"))))


@pytest.mark.parametrize(
    "filters",
    [{}, {"region": "emea"}, {"month": "2024-07"}, {"region": "apac", "month": "2024-09"}, {"product": "gateway-lite"}],
)
async def test_summarize_revenue_applies_filters(
    filters: dict[str, str], gateway: StandInGateway, analytics_app: ServiceApp
) -> None:
    """The summary totals exactly the CSV rows matching every given filter."""
    rows = [r for r in _revenue_rows() if all(r[key] == value for key, value in filters.items())]
    assert rows
    result = await gateway.invoke(analytics_app, "summarize_revenue", filters)
    assert not result.is_error
    summary = result.structured_content
    assert summary is not None
    assert summary["row_count"] == len(rows)
    assert summary["total_revenue_cents"] == sum(int(r["revenue_cents"]) for r in rows)
    assert summary["orders"] == sum(int(r["orders"]) for r in rows)
    assert [b["region"] for b in summary["by_region"]] == sorted({r["region"] for r in rows})
    assert sum(b["revenue_cents"] for b in summary["by_region"]) == summary["total_revenue_cents"]


async def test_summarize_revenue_with_no_match_is_empty(gateway: StandInGateway, analytics_app: ServiceApp) -> None:
    """A filter that matches nothing gives zero totals, not an error."""
    result = await gateway.invoke(analytics_app, "summarize_revenue", {"product": "no-such-product"})
    assert not result.is_error
    assert result.structured_content == {"total_revenue_cents": 0, "orders": 0, "row_count": 0, "by_region": []}


@pytest.mark.parametrize("args", [{"region": "mars"}, {"month": "2024-13"}, {"month": "July"}])
async def test_summarize_revenue_rejects_bad_filters(
    args: dict[str, str], gateway: StandInGateway, analytics_app: ServiceApp
) -> None:
    """An unknown region or a malformed month is a tool error."""
    result = await gateway.invoke(analytics_app, "summarize_revenue", args)
    assert result.is_error


# --------------------------------------------------------------------------- files (bundled root)


async def test_read_file_returns_bundled_text(
    monkeypatch: pytest.MonkeyPatch, gateway: StandInGateway, files_app: ServiceApp
) -> None:
    """A file under the bundled root is returned as UTF-8 text with its size."""
    monkeypatch.delenv(files.ROOT_ENV, raising=False)
    result = await gateway.invoke(files_app, "read_file", {"path": "handbook/holidays.txt"})
    assert not result.is_error
    content = result.structured_content
    assert content is not None
    assert content["path"] == "handbook/holidays.txt"
    assert "Company holidays" in content["content"]
    assert content["size"] == (DATA / "files" / "handbook" / "holidays.txt").stat().st_size


async def test_list_dir_lists_bundled_root_sorted(
    monkeypatch: pytest.MonkeyPatch, gateway: StandInGateway, files_app: ServiceApp
) -> None:
    """Listing '.' gives the bundled top-level entries, sorted, with sizes for files only."""
    monkeypatch.delenv(files.ROOT_ENV, raising=False)
    result = await gateway.invoke(files_app, "list_dir", {})
    assert not result.is_error
    listing = result.structured_content
    assert listing is not None
    assert listing["path"] == "."
    assert [(e["name"], e["type"]) for e in listing["entries"]] == [
        ("README.txt", "file"),
        ("handbook", "dir"),
        ("reports", "dir"),
    ]
    assert listing["entries"][0]["size"] > 0
    assert listing["entries"][1]["size"] is None
    sub = await gateway.invoke(files_app, "list_dir", {"path": "handbook/"})
    assert [e["name"] for e in (sub.structured_content or {})["entries"]] == ["expenses.txt", "holidays.txt"]


# --------------------------------------------------------------------------- files (hostile paths)


@pytest.fixture
def hostile_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A root named 'root' with symlinks pointing out of it and a sibling 'root-evil' beside it."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "README.txt").write_text("hello from the root\n", encoding="utf-8")
    (root / "sub" / "inner.txt").write_text("inner\n", encoding="utf-8")
    evil = tmp_path / "root-evil"
    evil.mkdir()
    (evil / "secret.txt").write_text(SECRET, encoding="utf-8")
    (tmp_path / "outside.txt").write_text(SECRET, encoding="utf-8")
    (root / "link-out").symlink_to(tmp_path / "outside.txt")
    (root / "link-dir").symlink_to(evil, target_is_directory=True)
    (root / "link-in").symlink_to(root / "README.txt")
    (root / "sub-link").symlink_to(root / "sub", target_is_directory=True)
    monkeypatch.setenv(files.ROOT_ENV, str(root))
    return root


HOSTILE_PATHS = [
    "../etc/passwd",
    "/etc/passwd",
    "handbook/../../x",
    "a\x00b",
    "..%2f..%2fetc",
    "~/x",
    "C:\\x",
    "\\\\host\\share",
    "a/" * 600 + "x",
    "../outside.txt",
    "link-out",
    "link-in",
    "link-dir/secret.txt",
    "sub-link/inner.txt",
    "../root-evil/secret.txt",
    "sub/\x1b[2J",
    "sub/\u202etxt.exe",
]


@pytest.mark.parametrize("path", HOSTILE_PATHS)
async def test_read_file_refuses_hostile_path(
    hostile_root: Path, path: str, gateway: StandInGateway, files_app: ServiceApp
) -> None:
    """Every escaping, link-following or malformed path is a tool error that leaks nothing."""
    result = await gateway.invoke(files_app, "read_file", {"path": path})
    assert result.is_error
    assert result.structured_content is None
    message = text_of(result)
    assert SECRET not in message
    assert str(hostile_root.parent) not in message
    assert len(message) < 80


@pytest.mark.parametrize("path", ["..", "/", "/tmp", "~", "C:\\", "link-dir", "sub-link", "../root-evil", "README.txt"])
async def test_list_dir_refuses_hostile_path(
    hostile_root: Path, path: str, gateway: StandInGateway, files_app: ServiceApp
) -> None:
    """Listing outside the root, through a link or of a file is a tool error."""
    result = await gateway.invoke(files_app, "list_dir", {"path": path})
    assert result.is_error
    assert "secret.txt" not in text_of(result)
    assert str(hostile_root.parent) not in text_of(result)


async def test_absolute_path_inside_root_is_still_refused(
    hostile_root: Path, gateway: StandInGateway, files_app: ServiceApp
) -> None:
    """Even an absolute path that points inside the root is refused."""
    result = await gateway.invoke(files_app, "read_file", {"path": str(hostile_root / "README.txt")})
    assert_refused(result, "absolute paths are not allowed")


async def test_read_file_refuses_parent_escape(
    hostile_root: Path, gateway: StandInGateway, files_app: ServiceApp
) -> None:
    """A '..' component is refused with the fixed outside-the-root message."""
    result = await gateway.invoke(files_app, "read_file", {"path": "sub/../../outside.txt"})
    assert_refused(result, "path outside the allowed root")


async def test_read_file_refuses_sibling_prefix_directory(
    hostile_root: Path, gateway: StandInGateway, files_app: ServiceApp
) -> None:
    """A link into 'root-evil' is refused although its path starts with the root's path as a string."""
    result = await gateway.invoke(files_app, "read_file", {"path": "link-dir/secret.txt"})
    assert_refused(result, "symbolic links are not allowed")


async def test_list_dir_skips_symlinks(hostile_root: Path, gateway: StandInGateway, files_app: ServiceApp) -> None:
    """A listing of a root holding links shows only the real files and directories."""
    result = await gateway.invoke(files_app, "list_dir", {"path": "."})
    assert not result.is_error
    names = [e["name"] for e in (result.structured_content or {})["entries"]]
    assert names == ["README.txt", "sub"]


async def test_read_file_inside_hostile_root_still_works(
    hostile_root: Path, gateway: StandInGateway, files_app: ServiceApp
) -> None:
    """Ordinary files under a configured root are readable, including in subdirectories."""
    result = await gateway.invoke(files_app, "read_file", {"path": "./sub//inner.txt"})
    assert not result.is_error
    assert (result.structured_content or {})["content"] == "inner\n"
    assert (result.structured_content or {})["path"] == "sub/inner.txt"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
async def test_read_file_refuses_fifo(hostile_root: Path, gateway: StandInGateway, files_app: ServiceApp) -> None:
    """A named pipe is not a regular file and is refused without blocking."""
    os.mkfifo(hostile_root / "pipe")
    result = await gateway.invoke(files_app, "read_file", {"path": "pipe"})
    assert_refused(result, "not a regular file")


async def test_read_file_refuses_directory_oversize_and_binary(
    hostile_root: Path, gateway: StandInGateway, files_app: ServiceApp
) -> None:
    """Directories, files over 256 KiB and non-UTF-8 files are tool errors."""
    (hostile_root / "big.txt").write_bytes(b"a" * (files.MAX_READ_BYTES + 1))
    (hostile_root / "blob.bin").write_bytes(b"\xff\xfe\x00binary")
    expected = {"sub": "not a regular file", "big.txt": "file too large", "blob.bin": "file is not valid UTF-8 text"}
    for path, message in expected.items():
        result = await gateway.invoke(files_app, "read_file", {"path": path})
        assert_refused(result, message)


# --------------------------------------------------------------------------- only through the gateway


FIRST_CALLS = [
    ("billing", "get_invoice"),
    ("billing", "process_refund"),
    ("analytics", "summarize_revenue"),
    ("files", "read_file"),
    ("files", "list_dir"),
]


def assert_unauthenticated(refused: pytest.ExceptionInfo[MCPError]) -> None:
    """The service kit's bare refusal: no reason, no data."""
    error = refused.value.error
    assert (error.code, error.message, error.data) == (-31401, "unauthenticated", None)


@pytest.mark.parametrize(("service", "tool"), FIRST_CALLS)
async def test_a_call_without_a_token_is_refused_before_the_tool_runs(
    service: str, tool: str, gateway: StandInGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every demo tool refuses a call that did not come through the gateway; no refund is made."""
    monkeypatch.setenv(billing.STATE_DIR_ENV, str(tmp_path))
    monkeypatch.delenv(files.ROOT_ENV, raising=False)
    before = len(billing.ledger())
    async with Client(gateway.server(service)) as client:
        with pytest.raises(MCPError) as refused:
            await client.session.call_tool(tool, LEGITIMATE_CALLS[tool][0])
    assert_unauthenticated(refused)
    assert len(billing.ledger()) == before
    assert not (tmp_path / "refunds.jsonl").exists()


async def test_a_token_minted_for_billing_is_refused_by_analytics(
    gateway: StandInGateway, analytics_app: ServiceApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token is good at the one service it was minted for; the analytics tool body never runs."""
    ran: list[bool] = []
    real_kit = analytics._kit
    monkeypatch.setattr(analytics, "_kit", lambda: ran.append(True) or real_kit())
    token = gateway.token("billing", "summarize_revenue")
    async with Client(analytics_app) as client:
        with pytest.raises(MCPError) as refused:
            await client.session.call_tool("summarize_revenue", {}, meta={ACTOR_TOKEN_META_KEY: token})
        assert_unauthenticated(refused)
        assert ran == []
        result = await gateway.call(client, "summarize_revenue", {})  # the same service, a token for it
    assert not result.is_error
    assert ran == [True]


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_a_service_started_without_the_gateways_trust_refuses_to_start(service: str) -> None:
    """Run directly, without the three variables the gateway sets: one line on stderr, non-zero exit."""
    env = {k: v for k, v in os.environ.items() if k not in (JWKS_ENV, ISSUER_ENV, AUDIENCE_ENV)}
    started = subprocess.run(
        [sys.executable, "-m", f"portcullis.demo.services.{service}"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert started.returncode != 0
    assert "Traceback" not in started.stderr
    lines = started.stderr.strip().splitlines()
    assert len(lines) == 1, started.stderr
    assert "refuses to start" in lines[0] and JWKS_ENV in lines[0]
    assert started.stdout == ""


def test_a_service_given_another_services_audience_refuses_to_start(gateway: StandInGateway) -> None:
    """Trust variables meant for analytics do not start billing."""
    env = {
        **os.environ,
        JWKS_ENV: json.dumps(gateway.ring.jwks()),
        ISSUER_ENV: ISSUER,
        AUDIENCE_ENV: service_audience("analytics"),
    }
    started = subprocess.run(
        [sys.executable, "-m", "portcullis.demo.services.billing"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert started.returncode != 0
    assert "Traceback" not in started.stderr
    assert len(started.stderr.strip().splitlines()) == 1, started.stderr


# --------------------------------------------------------------------------- deployment


LEGITIMATE_CALLS: dict[str, list[dict[str, Any]]] = {
    "get_invoice": [{"invoice_id": "INV-1001"}, {"invoice_id": "INV-1008"}],
    "process_refund": [
        {"order_id": "ORD-20003", "amount": 10, "currency": "USD", "reason": "customer request"},
        {"order_id": "ORD-20004", "amount": 0.01, "currency": "JPY", "reason": ""},
    ],
    "summarize_revenue": [{}, {"region": "amer"}, {"month": "2024-10", "product": "gateway-pro"}, {"region": None}],
    "read_file": [{"path": "README.txt"}, {"path": "reports/q3-summary.md"}],
    "list_dir": [{}, {"path": "."}, {"path": "handbook"}],
}
MANIFEST_PATHS = sorted((DEPLOYMENT / "tools").rglob("*.yml"))


def _gateway() -> GatewayConfig:
    return GatewayConfig.model_validate(yaml.safe_load((DEPLOYMENT / "gateway.yaml").read_text(encoding="utf-8")))


def test_gateway_yaml_validates() -> None:
    """The demo gateway.yaml validates and runs each demo service as a module over stdio."""
    config = _gateway()
    assert set(config.services) == {"billing", "analytics", "files"}
    for name, service in config.services.items():
        assert service.transport == "stdio"
        assert service.module == f"portcullis.demo.services.{name}"
        assert service.env_passthrough == ()


def test_every_demo_tool_has_a_manifest() -> None:
    """The deployment holds exactly one manifest per demo tool, filed under its service."""
    found = {(p.parent.name, p.stem) for p in MANIFEST_PATHS}
    assert found == {
        ("billing", "get_invoice"),
        ("billing", "process_refund"),
        ("analytics", "summarize_revenue"),
        ("files", "read_file"),
        ("files", "list_dir"),
    }


@pytest.mark.parametrize("manifest_path", MANIFEST_PATHS, ids=lambda p: p.stem)
async def test_manifest_matches_service_and_accepts_legitimate_calls(
    manifest_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, gateway: StandInGateway
) -> None:
    """Each manifest validates, names a real tool, mirrors its annotations and accepts real calls."""
    monkeypatch.delenv(files.ROOT_ENV, raising=False)
    monkeypatch.setenv(billing.STATE_DIR_ENV, str(tmp_path))
    manifest = ToolManifest.model_validate(yaml.safe_load(manifest_path.read_text(encoding="utf-8")))
    assert (manifest_path.parent.name, manifest_path.stem) == (manifest.service, manifest.name)
    service = _gateway().services[manifest.service]
    server = importlib.import_module(str(service.module)).build_server(gateway.verifier(manifest.service))
    async with Client(server) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert manifest.name in tools
        tool = tools[manifest.name]
        live = tool.model_dump(by_alias=True, exclude_none=True, mode="json")
        assert manifest.pin == definition_hash(live), "demo service changed: review it, then `portcullis pin`"
        assert tool.annotations is not None
        live = tool.annotations.model_dump(by_alias=True, exclude_none=True)
        assert manifest.annotations.model_dump(exclude_none=True) == live
        if manifest.output_schema is not None:
            assert manifest.output_schema == tool.output_schema
        Draft202012Validator.check_schema(manifest.input_schema)
        validator = Draft202012Validator(manifest.input_schema)
        assert manifest.input_schema.get("additionalProperties") is False
        assert not validator.is_valid({**LEGITIMATE_CALLS[manifest.name][0], "unexpected": 1})
        for example in LEGITIMATE_CALLS[manifest.name]:
            assert not list(validator.iter_errors(example)), example
            assert Draft202012Validator(tool.input_schema).is_valid(example)
            result = await gateway.call(client, manifest.name, example)
            assert not result.is_error, (example, text_of(result))


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("get_invoice", {"invoice_id": "1001"}),
        ("process_refund", {"order_id": "ORD-1", "amount": 1, "currency": "USD", "reason": "x"}),
        ("process_refund", {"order_id": "ORD-20001", "amount": 0, "currency": "USD", "reason": "x"}),
        ("process_refund", {"order_id": "ORD-20001", "amount": 1_000_001, "currency": "USD", "reason": "x"}),
        ("process_refund", {"order_id": "ORD-20001", "amount": 1, "currency": "usd", "reason": "x"}),
        ("process_refund", {"order_id": "ORD-20001", "amount": 1, "currency": "USD", "reason": "x" * 501}),
        ("process_refund", {"order_id": "ORD-20001", "amount": 1, "currency": "USD"}),
        ("summarize_revenue", {"region": "mars"}),
        ("summarize_revenue", {"month": "2024-00"}),
        ("read_file", {"path": ""}),
        ("read_file", {"path": "a" * 1025}),
        ("read_file", {"path": "a\x00b"}),
        ("list_dir", {"path": "C:\\x"}),
    ],
)
def test_manifest_input_schema_is_tighter_than_service(tool: str, args: dict[str, Any]) -> None:
    """The gateway's input contract rejects malformed arguments the service's own schema would pass on."""
    (manifest_path,) = [p for p in MANIFEST_PATHS if p.stem == tool]
    manifest = ToolManifest.model_validate(yaml.safe_load(manifest_path.read_text(encoding="utf-8")))
    assert not Draft202012Validator(manifest.input_schema).is_valid(args)


@pytest.mark.parametrize(
    ("tool", "path"), [("read_file", "link-out"), ("read_file", "link-dir/secret.txt"), ("list_dir", "link-dir")]
)
async def test_links_are_refused_by_the_descriptor_relative_open(
    hostile_root: Path,
    tool: str,
    path: str,
    gateway: StandInGateway,
    files_app: ServiceApp,
) -> None:
    """No path is resolved before the open: the file kit's no-follow open itself refuses every link."""
    result = await gateway.invoke(files_app, tool, {"path": path})
    assert_refused(result, "symbolic links are not allowed")
    assert SECRET not in text_of(result)
