"""Forensic search and timelines over a real SQLite audit store, read-only and injection-proof."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portcullis.audit import (
    AuditUnavailable,
    AuditWriter,
    Checkpointer,
    CheckpointPolicy,
    SqliteAuditStore,
    keyed_hash,
    make_record,
    verify_store,
)
from portcullis.audit.query import AuditQuery
from portcullis.audit.reader import search, timeline

T0 = 1_800_000_000.0
HMAC_KEY = b"h" * 32


class Clock:
    """A clock that advances one second per reading: record i gets ts T0 + i + 1."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def principal(agent: str, user: str, *, roles: Sequence[str] = (), tenant: str = "acme") -> dict[str, Any]:
    """As ``Principal.to_claims`` writes it: absent and empty fields are left out."""
    return {"client_id": f"{agent}-client", "auth_method": "jwt", "issuer": "https://idp.example.com",
            "user_id": user, "agent_id": agent, "source_app": "desk", "tenant": tenant, "roles": list(roles),
            "scopes": ["mcp:tools"]}


def decision(tool: str, who: dict[str, Any], effect: str, rule_ids: Sequence[str], **arguments: Any) -> dict[str, Any]:
    service, _, upstream = tool.partition(".")
    return {"environment": "prod", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7",
            "protocol_version": "2026-07-28",
            "tool": {"name": tool, "service": service, "upstream_name": upstream,
                     "definition_hash": "sha256:" + hashlib.sha256(tool.encode()).hexdigest(),
                     "service_version": "1.4.2"},
            "principal": who,
            "decision": {"effect": effect, "reasons": [f"{effect} by {','.join(rule_ids) or 'default'}"],
                         "rule_ids": list(rule_ids), "policy_version": "2027-01-01.1"},
            "arguments": arguments}


def outcome(result: str, *, error_code: int | None = None, size: int = 512) -> dict[str, Any]:
    return {"outcome": result, "error_code": error_code, "output": {"bytes": size, "classification": "internal"},
            "duration_ms": 12.5, "upstream_span_id": "b7ad6b7169203331"}


def rejected(tool: str, who: dict[str, Any], reason: str, error_code: int = -32602) -> dict[str, Any]:
    return {"environment": "prod", "trace_id": None, "span_id": None, "protocol_version": "2026-07-28",
            "tool": {"name": tool[:128]}, "principal": who, "reason": reason, "error_code": error_code}


ALICE = principal("billing-bot", "alice", roles=["finance"])
CAROL = principal("billing-bot", "carol", roles=["finance"])
BOB = principal("support-bot", "bob", roles=["support"], tenant="globex")
CARD = keyed_hash(HMAC_KEY, "4111111111111111")

# index → (kind, request_id, fields); decisions and outcomes of req-6 and req-7 interleave
SCENARIO: list[tuple[str, str, dict[str, Any]]] = [
    ("decision", "req-1", decision("billing.get_invoice", ALICE, "allow", ["billing-read"], invoice_id="INV-1")),  # 0
    ("outcome", "req-1", outcome("ok")),  # 1
    ("decision", "req-2", decision("billing.refund", ALICE, "deny", ["refund-limit"], amount=5000, card=CARD)),  # 2
    ("decision", "req-3", decision("crm.lookup", BOB, "require_approval", ["crm-pii"], email="x@example.com")),  # 3
    ("rejected", "req-4", rejected("billing.delete_all", ALICE, "unknown_tool")),  # 4
    ("decision", "req-5", decision("crm.lookup", BOB, "allow", ["crm-read"], customer="C-9")),  # 5
    ("outcome", "req-5", outcome("timeout", error_code=-31003, size=0)),  # 6
    ("decision", "req-6", decision("billing.get_invoice", CAROL, "allow", ["billing-read"], invoice_id="INV-2")),  # 7
    ("decision", "req-7", decision("crm.notes", BOB, "allow", ["crm-read", "crm-notes"], customer="C-9")),  # 8
    ("outcome", "req-6", outcome("ok")),  # 9
    ("outcome", "req-7", outcome("tool_error", error_code=-31004)),  # 10
]


def ts(index: int) -> float:
    return T0 + index + 1


async def build_store(path: Path, key: Ed25519PrivateKey, entries: Sequence[tuple[str, str, dict[str, Any]]] = SCENARIO,
                      *, every_records: int = 4) -> None:
    """Write ``entries`` through the real writer, one batch each, checkpointing every few records and at close."""
    async with await SqliteAuditStore.open(path) as store:
        checkpointer = Checkpointer(store, key, clock=Clock(),
                                    policy=CheckpointPolicy(every_records=every_records, every_s=1e9))
        async with AuditWriter(store, clock=Clock(), max_delay_s=0, checkpointer=checkpointer) as writer:
            for kind, request_id, fields in entries:
                await writer.record(kind, request_id, fields)


@pytest.fixture
async def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "audit.sqlite3"
    await build_store(path, Ed25519PrivateKey.generate())
    return path


def indexes(records: Sequence[Any]) -> list[int]:
    return [r.index for r in records]


async def test_search_without_filters_returns_the_newest_records_first_up_to_the_limit(store_path: Path) -> None:
    """An unfiltered search is the tail of the chain, newest first, cut at the limit."""
    assert indexes(await search(store_path, AuditQuery())) == list(range(10, -1, -1))
    found = await search(store_path, AuditQuery(limit=3))
    assert indexes(found) == [10, 9, 8]
    assert found[0].fields == SCENARIO[10][2] and found[0].request_id == "req-7"


@pytest.mark.parametrize(("query", "expected"), [
    (AuditQuery(tool="billing.get_invoice"), [7, 0]),
    (AuditQuery(tool="billing.delete_all"), [4]),  # a rejected call carries the raw tool name
    (AuditQuery(principal={"agent_id": "billing-bot"}), [7, 4, 2, 0]),
    (AuditQuery(principal={"agent_id": "billing-bot", "user_id": "carol"}), [7]),
    (AuditQuery(principal={"client_id": "support-bot-client"}), [8, 5, 3]),
    (AuditQuery(principal={"tenant": "globex"}), [8, 5, 3]),
    (AuditQuery(principal={"roles": "finance"}), [7, 4, 2, 0]),  # one member of the list
    (AuditQuery(principal={"roles": "fin"}), []),  # membership is exact, not a substring
    (AuditQuery(effect="allow"), [8, 7, 5, 0]),
    (AuditQuery(effect="deny"), [4, 2]),  # deny also matches calls rejected before a decision
    (AuditQuery(effect="deny", kind="decision"), [2]),
    (AuditQuery(effect="require_approval"), [3]),
    (AuditQuery(kind="outcome"), [10, 9, 6, 1]),
    (AuditQuery(kind="rejected"), [4]),
    (AuditQuery(request_id="req-5"), [6, 5]),
    (AuditQuery(since=ts(3), until=ts(5)), [5, 4, 3]),  # both bounds inclusive
    (AuditQuery(since=ts(9)), [10, 9]),
    (AuditQuery(until=ts(0)), [0]),
    (AuditQuery(tool="crm.lookup", effect="allow", principal={"agent_id": "support-bot"}), [5]),
    (AuditQuery(tool="billing.get_invoice", principal={"agent_id": "support-bot"}), []),
])
async def test_each_search_filter_selects_exactly_its_records(store_path: Path, query: AuditQuery,
                                                              expected: list[int]) -> None:
    """Every filter, alone and combined (AND), selects exactly the records it names."""
    assert indexes(await search(store_path, query)) == expected


INJECTIONS = [
    "' OR '1'='1",
    "billing.get_invoice' --",
    "x') OR ('1'='1",
    "'); DROP TABLE audit_record; --",
    "\" OR \"\"=\"",
    "%",
    "_",
    "*",
    "$.tool.name",
    "billing.get_invoice\x00",
]


@pytest.mark.parametrize("value", INJECTIONS)
@pytest.mark.parametrize("field", ["tool", "request_id", "agent_id", "roles"])
async def test_sql_looking_values_are_matched_literally_and_change_nothing(store_path: Path, field: str,
                                                                           value: str) -> None:
    """Values are bound parameters: injection attempts and wildcards match nothing and the store stays whole."""
    query = (AuditQuery(principal={field: value}) if field in ("agent_id", "roles")
             else AuditQuery(**{field: value}))
    assert await search(store_path, query) == []
    assert await timeline(store_path, request_id=value) == []
    async with await SqliteAuditStore.open_readonly(store_path) as store:
        assert len(await store.read(0, 100)) == len(SCENARIO)


async def test_a_tool_named_like_an_injection_is_found_by_that_exact_name(tmp_path: Path) -> None:
    """An attacker's tool name is data: searching for it finds that record and nothing else."""
    hostile = "x' OR '1'='1"
    path = tmp_path / "a.db"
    await build_store(path, Ed25519PrivateKey.generate(),
                      [*SCENARIO, ("rejected", "req-8", rejected(hostile, ALICE, "unknown_tool"))])
    assert indexes(await search(path, AuditQuery(tool=hostile))) == [11]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"principal": {"password": "x"}}, "unknown principal field"),
    ({"principal": {"agent_id') OR 1=1 --": "x"}}, "unknown principal field"),
    ({"principal": {"attributes": "x"}}, "unknown principal field"),
    ({"effect": "permit"}, "effect must be"),
    ({"kind": "approvals"}, "kind must be"),
    ({"limit": 0}, "limit"),
    ({"limit": 100_001}, "limit"),
    ({"limit": True}, "limit"),
    ({"since": float("nan")}, "finite"),
    ({"tool": 5}, "strings"),
    ({"principal": {"agent_id": "bot\udcff"}}, "valid Unicode"),  # a CLI argument that was not UTF-8
])
def test_bad_queries_are_refused_before_any_sql(kwargs: dict[str, Any], message: str) -> None:
    """Principal field names are whitelisted and every other filter is checked when the query is built."""
    with pytest.raises(ValueError, match=message):
        AuditQuery(**kwargs)


def test_a_query_cannot_be_changed_after_it_is_built() -> None:
    """AuditQuery copies its principal filters, so mutating the caller's dict changes nothing."""
    filters = {"agent_id": "billing-bot"}
    query = AuditQuery(principal=filters)
    filters["agent_id"] = "other"
    assert query.principal == {"agent_id": "billing-bot"}
    with pytest.raises(TypeError):
        query.principal["agent_id"] = "other"  # type: ignore[index]


async def test_timeline_of_a_request_groups_its_decision_and_outcome(store_path: Path) -> None:
    """One request's timeline is its decision then its outcome, even with other records in between."""
    [group] = await timeline(store_path, request_id="req-6")
    assert group.request_id == "req-6" and indexes(group.records) == [7, 9]
    assert group.of_kind("decision") is group.records[0] and group.of_kind("outcome") is group.records[1]
    assert group.of_kind("rejected") is None


async def test_timeline_of_an_agent_lists_its_requests_in_order_with_their_outcomes(store_path: Path) -> None:
    """An agent's requests come oldest first; outcomes (which carry no principal) come with them."""
    groups = await timeline(store_path, agent_id="billing-bot")
    assert [(g.request_id, indexes(g.records)) for g in groups] == [
        ("req-1", [0, 1]), ("req-2", [2]), ("req-4", [4]), ("req-6", [7, 9])]
    support = await timeline(store_path, agent_id="support-bot")
    assert [(g.request_id, indexes(g.records)) for g in support] == [
        ("req-3", [3]), ("req-5", [5, 6]), ("req-7", [8, 10])]


async def test_timeline_limit_keeps_the_latest_requests_and_window_keeps_whole_requests(store_path: Path) -> None:
    """The limit keeps the newest requests; a request in the window brings its later outcome along."""
    latest = await timeline(store_path, agent_id="billing-bot", limit=2)
    assert [g.request_id for g in latest] == ["req-4", "req-6"]
    windowed = await timeline(store_path, agent_id="billing-bot", since=ts(3), until=ts(7))
    assert [(g.request_id, indexes(g.records)) for g in windowed] == [("req-4", [4]), ("req-6", [7, 9])]
    assert [g.request_id for g in await timeline(store_path, agent_id="nobody")] == []


async def test_search_never_creates_a_missing_store(tmp_path: Path) -> None:
    """Searching a path with no store fails with AuditUnavailable and leaves no file behind."""
    missing = tmp_path / "nope.sqlite3"
    with pytest.raises(AuditUnavailable) as info:
        await search(missing, AuditQuery())
    assert "no audit store" in info.value.detail
    with pytest.raises(AuditUnavailable):
        await timeline(missing, agent_id="a")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", ["junk", "other-db", "empty"])
async def test_a_file_that_is_not_an_audit_store_is_refused(tmp_path: Path, content: str) -> None:
    """Junk bytes, a foreign SQLite database or an empty file are AuditUnavailable, not a crash."""
    path = tmp_path / "x.sqlite3"
    if content == "junk":
        path.write_bytes(b"this is not a database at all " * 100)
    elif content == "other-db":
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE t (x)")
        conn.commit()
        conn.close()
    else:
        path.write_bytes(b"")
    with pytest.raises(AuditUnavailable) as info:
        await search(path, AuditQuery())
    assert "not a readable audit store" in info.value.detail


async def test_the_read_only_store_refuses_writes_and_search_leaves_the_file_unchanged(store_path: Path) -> None:
    """A read-only store cannot append, and searching does not change a byte of the database."""
    before = store_path.read_bytes()
    async with await SqliteAuditStore.open_readonly(store_path) as store:
        head = await store.head()
        assert head is not None
        with pytest.raises(AuditUnavailable):
            await store.append([make_record(head[0] + 1, T0, "x", "decision", {}, head[1])])
    await search(store_path, AuditQuery(tool="crm.lookup"))
    await timeline(store_path, agent_id="billing-bot")
    assert store_path.read_bytes() == before


async def test_a_record_with_unparseable_fields_breaks_no_search(store_path: Path) -> None:
    """A tampered row whose fields are not JSON matches no filter but still shows in an unfiltered search."""
    conn = sqlite3.connect(store_path)
    conn.execute("UPDATE audit_record SET fields = '{not json' WHERE idx = 7")
    conn.commit()
    conn.close()
    assert indexes(await search(store_path, AuditQuery(tool="billing.get_invoice"))) == [0]
    [seven] = await search(store_path, AuditQuery(request_id="req-6", kind="decision"))
    assert seven.fields == {"__unparseable__": "{not json"}


async def test_a_snapshot_hides_records_appended_while_it_is_open(store_path: Path) -> None:
    """Reads inside one snapshot describe one moment, so an export cannot mix two states of the store."""
    async with await SqliteAuditStore.open_readonly(store_path) as reader:
        async with reader.snapshot():
            head = await reader.head()
            assert head is not None
            async with await SqliteAuditStore.open(store_path) as writer:
                await writer.append([make_record(head[0] + 1, T0 + 99, "req-9", "decision", {}, head[1])])
            assert await reader.head() == head
        assert (await reader.head() or (0, ""))[0] == head[0] + 1


async def test_the_store_indexes_request_ids(tmp_path: Path) -> None:
    """The store schema has an index on request_id, so timelines of one request need no scan."""
    async with await SqliteAuditStore.open(tmp_path / "a.db"):
        pass
    conn = sqlite3.connect(tmp_path / "a.db")
    plan = conn.execute("EXPLAIN QUERY PLAN SELECT * FROM audit_record WHERE request_id = ?", ("r",)).fetchall()
    conn.close()
    assert any("audit_record_request_id" in str(row) for row in plan)


async def test_the_scenario_store_verifies(store_path: Path) -> None:
    """The fixture used by these tests and the CLI tests is itself an intact, checkpointed chain."""
    key = Ed25519PrivateKey.generate()
    await build_store(store_path.with_name("b.db"), key)
    async with await SqliteAuditStore.open_readonly(store_path.with_name("b.db")) as store:
        report = await verify_store(store, key.public_key())
        assert report.ok and report.records_checked == len(SCENARIO)
        assert [c.index for c in await store.checkpoints()] == [0, 4, 8, 10]
