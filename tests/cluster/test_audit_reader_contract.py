"""The AuditReader contract, run alike against SQLite and PostgreSQL: the same records, the same queries,
the same answers; hostile filter values are matched literally and never widen a search."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portcullis.approvals.recent_calls import audit_recent_calls
from portcullis.audit import AuditUnavailable, AuditWriter, SqliteAuditStore
from portcullis.audit.checkpoint import Checkpointer, CheckpointPolicy
from portcullis.audit.pg_store import PG_COMPONENT, open_postgres_audit
from portcullis.audit.query import AuditQuery, timeline_query
from portcullis.audit.reader import AuditReader, open_sqlite_reader, postgres_reader
from portcullis.storage.config import PostgresConfig
from portcullis.storage.migrations import migrate
from tests.cluster.conftest import fresh_pg_schema, pg_url_for
from tests.unit.test_audit_query import ALICE, SCENARIO, Clock, principal, rejected, ts

CONFIG = PostgresConfig(url_ref="secret://env/PORTCULLIS_TEST_UNUSED", pool_size=2, connect_timeout_s=3,
                        statement_timeout_ms=2000)

# stored as tool name, request id, agent id and role of one rejected record each; every one must find
# exactly its own record (so "%" finds neither "%%" nor anything else, NUL and its escapes stay apart)
HOSTILE = [
    "' OR '1'='1", "x') OR ('1'='1", "'); DROP TABLE audit_record; --", '" OR ""="', "%", "%%", "_", "bill%",
    "billing_bot", "\\", "\\\\", "a\\b", "a\x00b", "\x00", "a\\u0000b", "a\\\x00b", "\\u0000", "a\ufffeb",
    "a\\ufffeb", "\ufffe", "é☃𝄞\u202e\u200b", "tab\tnew\nline", "$.tool.name", "*", "x" * 20_000,
    "billing-bot ", "BILLING-BOT",
]
# never stored: each matches nothing (wildcards, prefixes, case, the NUL stand-in and escaped forms)
ABSENT = ["%billing%", "billing%", "billing-bo_", "billing", "Billing-Bot", "a", "\x00\x00", "x" * 20_001,
          "a\\u0000", "a\ufffe", "\\ufffe", "'", "\\\\\\", "\ud800"[:0] + "\u0000b"]


def request_id(n: int) -> str:
    """PostgreSQL text holds no NUL, so the writer's request id column cannot either (see test below)."""
    return HOSTILE[n] if "\x00" not in HOSTILE[n] else f"nul-{n}"


def _hostile_entries() -> list[tuple[str, str, dict[str, Any]]]:
    out = list(SCENARIO)
    for n, value in enumerate(HOSTILE):
        who = principal(value, f"user-{n}", roles=[value, "other"])
        out.append(("rejected", request_id(n), rejected(value, who, "unknown_tool")))
    return out


ENTRIES = _hostile_entries()
Opener = Callable[[], AbstractAsyncContextManager[AuditReader]]


async def _write(store: Any) -> None:
    checkpointer = Checkpointer(store, Ed25519PrivateKey.generate(), clock=Clock(),
                                policy=CheckpointPolicy(every_records=8, every_s=1e9))
    async with AuditWriter(store, clock=Clock(), max_delay_s=0, checkpointer=checkpointer) as writer:
        for kind, request_id, fields in ENTRIES:
            await writer.record(kind, request_id, fields)


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("reader") / "audit.sqlite3"

    async def write() -> None:
        async with await SqliteAuditStore.open(path) as store:
            await _write(store)

    anyio.run(write)
    return path


@pytest.fixture(scope="module")
def pg_store() -> Iterator[str]:
    """One schema for the module's read-only tests, written once (the writes are the slow part)."""
    with fresh_pg_schema() as schema:
        url = pg_url_for(schema)
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn, [PG_COMPONENT])

        async def write() -> None:
            async with await open_postgres_audit(CONFIG, url=url) as store:
                await _write(store)

        anyio.run(write)
        yield url


@asynccontextmanager
async def _pg_reader(url: str) -> AsyncIterator[AuditReader]:
    async with await open_postgres_audit(CONFIG, url=url) as store:  # read-write, like the gateway's pool
        yield postgres_reader(store)


@pytest.fixture(params=["sqlite", "postgresql"])
def reader(request: pytest.FixtureRequest) -> Opener:
    if request.param == "sqlite":
        path = request.getfixturevalue("sqlite_store")
        return lambda: open_sqlite_reader(path)
    url = request.getfixturevalue("pg_store")
    return lambda: _pg_reader(url)


def indexes(records: Sequence[Any]) -> list[int]:
    return [r.index for r in records]


@pytest.mark.parametrize(("query", "expected"), [
    (AuditQuery(tool="billing.get_invoice"), [7, 0]),
    (AuditQuery(tool="billing.delete_all"), [4]),
    (AuditQuery(principal={"agent_id": "billing-bot"}), [7, 4, 2, 0]),
    (AuditQuery(principal={"agent_id": "billing-bot", "user_id": "carol"}), [7]),
    (AuditQuery(principal={"client_id": "support-bot-client"}), [8, 5, 3]),
    (AuditQuery(principal={"tenant": "globex"}), [8, 5, 3]),
    (AuditQuery(principal={"roles": "finance"}), [7, 4, 2, 0]),
    (AuditQuery(principal={"roles": "fin"}), []),
    (AuditQuery(effect="allow"), [8, 7, 5, 0]),
    (AuditQuery(effect="deny", until=ts(10)), [4, 2]),
    (AuditQuery(effect="deny", kind="decision"), [2]),
    (AuditQuery(effect="require_approval"), [3]),
    (AuditQuery(kind="outcome"), [10, 9, 6, 1]),
    (AuditQuery(request_id="req-5"), [6, 5]),
    (AuditQuery(since=ts(3), until=ts(5)), [5, 4, 3]),
    (AuditQuery(until=ts(0)), [0]),
    (AuditQuery(tool="crm.lookup", effect="allow", principal={"agent_id": "support-bot"}), [5]),
    (AuditQuery(limit=3), [len(ENTRIES) - 1, len(ENTRIES) - 2, len(ENTRIES) - 3]),
])
async def test_search_selects_the_same_records_in_both_stores(reader: Opener, query: AuditQuery,
                                                              expected: list[int]) -> None:
    async with reader() as opened:
        assert indexes(await opened.search(query)) == expected


async def test_timeline_and_window_edges_are_the_same_in_both_stores(reader: Opener) -> None:
    async with reader() as opened:
        [group] = await opened.timeline(timeline_query(request_id="req-6"))
        assert group.request_id == "req-6" and indexes(group.records) == [7, 9]
        groups = await opened.timeline(timeline_query(agent_id="support-bot"))
        assert [(g.request_id, indexes(g.records)) for g in groups] == [
            ("req-3", [3]), ("req-5", [5, 6]), ("req-7", [8, 10])]
        windowed = await opened.timeline(timeline_query(agent_id="billing-bot", since=ts(4), until=ts(8)))
        assert [(g.request_id, indexes(g.records)) for g in windowed] == [("req-4", [4]), ("req-6", [7, 9])]
        async with opened.snapshot():
            edges = await opened.window_edges(ts(2), ts(5))
            assert edges is not None and (edges[0].index, edges[1].index) == (2, 5)
            assert await opened.window_edges(ts(10_000), ts(20_000)) is None
            assert indexes(await opened.read(3, 2)) == [3, 4]
            assert [c.index for c in await opened.checkpoints()][:2] == [0, 8]


@pytest.mark.parametrize("n", range(len(HOSTILE)))
async def test_a_hostile_value_finds_exactly_its_own_record(reader: Opener, n: int) -> None:
    value, index = HOSTILE[n], len(SCENARIO) + n
    async with reader() as opened:
        tool = value[:128]  # a rejected record keeps the first 128 characters of the name
        for query in (AuditQuery(tool=tool), AuditQuery(principal={"agent_id": value}),
                      AuditQuery(principal={"roles": value}), AuditQuery(request_id=request_id(n)),
                      AuditQuery(tool=tool, principal={"agent_id": value}, effect="deny")):
            found = await opened.search(query)
            assert indexes(found) == [index], (value[:40], query)
            assert found[0].fields["principal"]["agent_id"] == value
        [group] = await opened.timeline(timeline_query(agent_id=value))
        assert indexes(group.records) == [index]


@pytest.mark.parametrize("value", ABSENT)
async def test_a_value_never_stored_matches_nothing(reader: Opener, value: str) -> None:
    async with reader() as opened:
        for query in (AuditQuery(tool=value), AuditQuery(principal={"agent_id": value}),
                      AuditQuery(principal={"roles": value}), AuditQuery(request_id=value)):
            assert await opened.search(query) == [], (value[:40], query)
        assert await opened.timeline(timeline_query(agent_id=value)) == []
        assert len(await opened.read(0, 1000)) == len(ENTRIES)  # and nothing changed


async def test_approvers_see_the_requesters_recent_decided_calls_from_either_store(reader: Opener) -> None:
    """The approvals view's history (the composition root builds it over the store the gateway writes)."""
    recent = audit_recent_calls(reader, clock=lambda: ts(12))
    calls = await recent("billing.get_invoice", ALICE, 5)  # ALICE's agent, billing-bot: carol's call too
    assert [(c["request_id"], c["effect"], c["arguments"]) for c in calls] == [
        ("req-6", "allow", {"invoice_id": "INV-2"}), ("req-1", "allow", {"invoice_id": "INV-1"})]
    assert await recent("billing.get_invoice", {**ALICE, "issuer_name": "other-idp"}, 5) == []
    assert [c["request_id"] for c in await recent("crm.lookup", {"user_id": "bob"}, 1)] == ["req-5"]
    assert await recent("billing.get_invoice", {"agent_id": "billing-bot"}, 5) != []
    assert await audit_recent_calls(reader, clock=lambda: ts(12) + 2 * 86400)("billing.get_invoice", ALICE, 5) == []


async def test_a_postgresql_read_cannot_write_and_is_bounded_by_the_statement_timeout(pg_url: str) -> None:
    """Reads run in READ ONLY transactions, even on the gateway's read-write pool, under statement_timeout."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        migrate(conn, [PG_COMPONENT])
    cfg = CONFIG.model_copy(update={"statement_timeout_ms": 200})
    async with await open_postgres_audit(cfg, url=pg_url) as store:
        await _write(store)
        cols = "idx, ts, request_id, kind, fields, prev_hash, hash"
        with pytest.raises(AuditUnavailable) as refused:
            await store.select_records(f"DELETE FROM audit_record WHERE idx = %s RETURNING {cols}", (0,))
        assert "25006" in str(refused.value.detail)  # read_only_sql_transaction
        with pytest.raises(AuditUnavailable) as cancelled:
            await store.select_records(f"SELECT {cols} FROM audit_record, pg_sleep(5) LIMIT 1", ())
        assert "57014" in str(cancelled.value.detail)  # query_canceled: the statement timeout
        assert len(await postgres_reader(store).search(AuditQuery(limit=1000))) == len(ENTRIES)
