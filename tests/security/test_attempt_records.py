"""Every refused attempt leaves an ``attempt`` record: a hostile-input table against a real gateway process.

One gateway (the demo, attempts window 1 s) takes every row's request, then stops cleanly (which
flushes the counted repeats). Each row then asserts its record's fields, and the whole run asserts
that no token text is in the store, the gateway's log or an export, that the counts of a flood add
up exactly, and that ``portcullis audit verify`` passes on the chain.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import pytest

from portcullis.audit.record import AuditRecord
from portcullis.audit.store import SqliteAuditStore
from portcullis.identity.dev_issuer import issue_token
from tests.e2e.harness import GatewayProcess, run_cli
from tests.security.conftest import billing_demo_with, exchange, status_of

MODERN = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": META}}
HEADERS = {"Content-Type": "application/json", "Accept": "application/json", "MCP-Protocol-Version": MODERN,
           "Mcp-Method": "tools/list"}
LEGACY = {"Content-Type": "application/json", "Accept": "application/json"}
HOSTILE_NAME = "\x1b]0;pwned\x07\x1b[31m\nforged log line\r\n" + "B" * 10_240
FLOOD = 300


@dataclass
class Row:
    name: str
    send: Callable[[GatewayProcess, list[str]], int]  # appends any secret text it used to the list
    status: int
    reason: str
    fields: dict[str, Any]
    authenticated: bool = False


def post(gateway: GatewayProcess, headers: dict[str, str], body: Any = LIST, *, raw: bytes | None = None) -> int:
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx2.post(gateway.url, headers=headers, content=content, timeout=30).status_code


def bearer(token: str, secrets: list[str], headers: dict[str, str] = HEADERS) -> dict[str, str]:
    secrets.append(token)
    return {**headers, "Authorization": f"Bearer {token}"}


def _alg_none(g: GatewayProcess) -> str:
    return "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + g.token().split(".")[1] + "."  # {"alg":"none","typ":"JWT"}


def _other_key(g: GatewayProcess) -> str:
    other = g.state_dir.parent / "other-issuer"
    other.mkdir(exist_ok=True)
    return issue_token(other, audience=g.audience, user="alice", agent=None,
                       client=None, scopes=["mcp:tools"])


def _revoked(g: GatewayProcess, secrets: list[str]) -> int:
    token = g.token(user="revoked-user", agent="revoked-agent")
    jti = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "==="))["jti"]
    done = run_cli("token", "revoke", "--config", str(g.config), "--jti", jti,
                   env={"PORTCULLIS_STATE_DIR": str(g.state_dir)})
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 20
    status = 200
    while time.monotonic() < deadline and status == 200:  # the list is re-read within about a second
        time.sleep(0.2)
        status = post(g, bearer(token, secrets))
    return status


def _too_many_headers(g: GatewayProcess, secrets: list[str]) -> int:
    lines = "".join(f"X-H{i}: v\r\n" for i in range(150))
    request = f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{lines}\r\n".encode()
    return status_of(exchange(g.port, request)) or 0


ROWS = [
    Row("no-token", lambda g, s: post(g, HEADERS), 401, "missing_credentials",
        {"method": "tools/list", "named": "headers", "token_hash": None, "principal": None}),
    Row("garbage-token", lambda g, s: post(g, bearer("garbage-SECRET-not-a-jwt", s)), 401, "invalid_token",
        {"detail": "malformed"}),
    Row("other-signing-key", lambda g, s: post(g, bearer(_other_key(g), s)), 401, "invalid_token", {}),
    Row("expired", lambda g, s: post(g, bearer(issue_token(g.state_dir, audience=g.audience, user="alice",
                                                            agent=None, client=None, scopes=["mcp:tools"],
                                                            ttl_s=60, now=time.time() - 3600), s)),
        401, "invalid_token", {}),
    Row("alg-none", lambda g, s: post(g, bearer(_alg_none(g), s)), 401, "invalid_token", {}),
    Row("other-audience", lambda g, s: post(g, bearer(issue_token(g.state_dir, audience="https://other.example/mcp",
                                                                  user="alice", agent=None, client=None,
                                                                  scopes=["mcp:tools"]), s)),
        401, "invalid_token", {}),
    Row("missing-scope", lambda g, s: post(g, bearer(g.token(scopes=("other:scope",)), s)), 403,
        "insufficient_scope", {}),
    Row("revoked-jti", _revoked, 401, "revoked", {"detail": "revoked"}),
    Row("wrong-host", lambda g, s: post(g, {**HEADERS, "Host": "evil.example"}), 421, "host_refused", {}),
    Row("wrong-origin", lambda g, s: post(g, {**HEADERS, "Origin": "https://evil.example"}), 403,
        "origin_refused", {}),
    Row("oversized-body", lambda g, s: post(g, bearer(g.token(), s), raw=b" " * 2_000_000), 413,
        "body_too_large", {}, authenticated=True),
    Row("malformed-json", lambda g, s: post(g, bearer(g.token(), s), raw=b'{"jsonrpc": "2.0", "id": 1,'), 400,
        "parse_error", {"method": "tools/list", "named": "headers"}, authenticated=True),
    Row("batch", lambda g, s: post(g, bearer(g.token(), s), [LIST, LIST]), 400, "invalid_request", {},
        authenticated=True),
    Row("missing-session", lambda g, s: post(g, bearer(g.token(), s, LEGACY),
                                             {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
        400, "missing_session", {"method": "tools/list", "named": "body"}, authenticated=True),
    Row("hostile-tool-name", lambda g, s: post(g, bearer(g.token(), s, LEGACY), {
        "jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": HOSTILE_NAME, "arguments": {}}}),
        400, "missing_session", {"method": "tools/call", "tool": {"name": HOSTILE_NAME[:128]}}, authenticated=True),
    Row("hostile-header-name", lambda g, s: post(g, {**HEADERS, "Mcp-Name": "C" * 10_240}), 401,
        "missing_credentials", {"tool": {"name": "C" * 128}, "named": "headers"}),
    Row("too-many-headers", _too_many_headers, 431, "header_limits", {"method": None, "named": "unread"}),
]


@dataclass
class Run:
    statuses: dict[str, int]
    records: list[AuditRecord]
    secrets: list[str]
    blobs: dict[str, bytes]  # store files, the log and an export
    verify: tuple[int, str]
    search: str


# one worker runs the whole module, so its module-scoped gateway starts once (tests/conftest.py)
pytestmark = pytest.mark.xdist_group("security/test_attempt_records.py")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    root = billing_demo_with(tmp_path_factory.mktemp("attempts") / "deployment", audit={"attempts": {"window_s": 1.0}})
    secrets: list[str] = []
    statuses: dict[str, int] = {}
    gateway = GatewayProcess(root)
    try:
        gateway.wait_ready()
        well_formed = bearer(gateway.token(user="well-formed-user"), secrets)
        statuses["well-formed"] = post(gateway, well_formed)
        for row in ROWS:
            statuses[row.name] = row.send(gateway, secrets)
        with httpx2.Client(timeout=30) as client:
            for _ in range(FLOOD):
                client.post(gateway.url, headers={**HEADERS, "Mcp-Method": "flood/x"}, content=b"{}")
    finally:
        gateway.stop()  # a clean stop writes the repeats still counted
    store_path = gateway.state_dir / "audit.sqlite3"

    async def read() -> list[AuditRecord]:
        async with await SqliteAuditStore.open_readonly(store_path) as store:
            return await store.read(0, 1_000_000)

    records = anyio.run(read)
    export = root.parent / "export.jsonl"
    env = {"PORTCULLIS_STATE_DIR": str(gateway.state_dir)}
    done = run_cli("audit", "export", "--store", str(store_path), "--out", str(export), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    verified = run_cli("audit", "verify", "--store", str(store_path), "--public-key",
                       str(gateway.state_dir / "audit-signing.pub.pem"), env=env)
    search = run_cli("audit", "search", "--store", str(store_path), "--kind", "attempt", "--limit", "1000",
                     env={**env, "COLUMNS": "400"})
    blobs = {p.name: p.read_bytes() for p in gateway.state_dir.glob("audit.sqlite3*")}
    blobs["gateway.log"] = (root.parent / f"gateway-{gateway.port}.log").read_bytes()
    blobs["export"] = export.read_bytes()
    yield Run(statuses, records, secrets, blobs, (verified.returncode, verified.stdout + verified.stderr),
              search.stdout + search.stderr)


def attempts(run: Run) -> list[dict[str, Any]]:
    return [r.fields for r in run.records if r.kind == "attempt"]


def matching(run: Run, row: Row) -> list[dict[str, Any]]:
    return [f for f in attempts(run) if f["reason"] == row.reason and f["status"] == row.status
            and all(f.get(k) == v for k, v in row.fields.items())]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_each_refusal_is_answered_as_before_and_leaves_its_attempt(run: Run, row: Row) -> None:
    assert run.statuses[row.name] == row.status
    found = matching(run, row)
    assert found, (row.name, [(f["reason"], f["status"], f.get("detail")) for f in attempts(run)])
    record = found[0]
    assert record["source"] == "127.0.0.1" and record["count"] >= 1
    assert record["first_ts"] <= record["last_ts"]
    if row.authenticated:
        assert record["principal"]["user_id"] == "alice" and record["token_hash"] is None
    else:
        assert record["principal"] is None
    if row.name in ("garbage-token", "other-signing-key", "expired", "alg-none", "other-audience"):
        assert record["token_hash"].startswith("hmac-sha256:") and len(record["token_hash"]) == 28


def test_a_well_formed_authenticated_call_leaves_no_attempt(run: Run) -> None:
    assert run.statuses["well-formed"] == 200
    assert not [f for f in attempts(run) if (f["principal"] or {}).get("user_id") == "well-formed-user"]
    assert any(f["principal"] for f in attempts(run))  # authenticated refusals do name their principal


def test_forged_tokens_correlate_by_their_hash_and_differ_from_each_other(run: Run) -> None:
    hashes = [f["token_hash"] for f in attempts(run) if f["reason"] == "invalid_token"]
    assert len(set(hashes)) == len(hashes) >= 5


def test_a_flood_is_a_bounded_number_of_records_whose_counts_add_up(run: Run) -> None:
    flood = [f for f in attempts(run) if f["method"] == "flood/x"]
    assert sum(f["count"] for f in flood) == FLOOD
    assert 1 <= len(flood) <= 2 * 60  # at most two per one-second window, however long the run took


def test_no_token_text_reaches_the_store_the_log_or_the_export(run: Run) -> None:
    assert len(run.secrets) >= 10
    for name, blob in run.blobs.items():
        for secret in run.secrets:
            for part in {secret, *(p for p in secret.split(".") if len(p) > 16)}:
                assert part.encode() not in blob, (name, part[:20])
        assert b"forged log line" not in blob or name != "gateway.log"


def test_the_chain_with_attempt_records_verifies(run: Run) -> None:
    code, output = run.verify
    assert code == 0, output


def test_the_cli_view_shows_attempts_escaped(run: Run) -> None:
    assert "attempt: missing_session (400)" in run.search
    assert "\x1b" not in run.search and "\x07" not in run.search

