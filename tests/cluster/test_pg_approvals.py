"""The PostgreSQL approval store: the SQLite store's contract, and exactly-once across replicas."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import anyio
import pytest

from portcullis.approvals.pg_store import PostgresApprovalStore
from portcullis.approvals.service import ApprovalService
from portcullis.approvals.store import ApprovalStoreUnavailable, OpenApprovalsExceeded, UnknownCursor
from portcullis.errors import ApprovalInvalid
from portcullis.storage.postgres import Database
from tests.cluster.pg import database, migrated, terminate
from tests.unit.test_approvals import ARGS, BOB, BOT, CONFIG, DECISION, TOOL, Audit, Clock


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    with migrated(pg_url) as db:
        yield db


async def propose(service: ApprovalService, request_id: str = "r1") -> str:
    approval = await service.propose(tool=TOOL, arguments=ARGS, principal=BOT, decision=DECISION, required=1,
                                     justification="", request_id=request_id)
    return approval.id


async def redeem(service: ApprovalService, approval_id: str) -> Any:
    async def nothing() -> None:
        pass

    return await service.redeem(approval_id=approval_id, tool=TOOL, arguments=ARGS, principal=BOT,
                                decision=DECISION, request_id="r2", before_use=nothing)


async def test_store_contract_create_get_list_paging_recent_prune(db: Database) -> None:
    clock = Clock()
    service = ApprovalService(PostgresApprovalStore(db), CONFIG, clock=clock, audit=Audit())
    store = PostgresApprovalStore(db)
    ids = []
    for i in range(5):
        clock.now += 1
        ids.append(await propose(service, f"r{i}"))
    assert (await store.get(ids[0])) is not None and (await store.get("nope")) is None
    first = await store.list(limit=2)
    assert [a.id for a in first] == ids[::-1][:2]
    second = await store.list(limit=2, before=first[-1].id)
    assert [a.id for a in second] == ids[::-1][2:4]
    with pytest.raises(UnknownCursor):
        await store.list(before="missing")
    assert [a.id for a in await store.list(status="pending")] == ids[::-1]
    assert len(await store.recent(requester_key=first[0].requester_key, tool=TOOL, limit=10, exclude=ids[0])) == 4
    assert await store.count_open(first[0].requester_key, clock.now) == 5
    assert await store.count_open(first[0].requester_key, clock.now + 3600) == 0  # expired ones free their slot
    await service.vote(ids[0], BOB, "deny")
    assert await store.prune(created_before=clock.now + 1) == 1  # denied goes; pending stays
    assert await store.get(ids[0]) is None and await store.get(ids[1]) is not None
    store.open_counts()  # the scrape never waits on the network: the first answer is what was known (nothing)
    deadline = anyio.current_time() + 20
    while store.open_counts() != {"pending": 4} and anyio.current_time() < deadline:
        await anyio.sleep(0.02)
    assert store.open_counts() == {"pending": 4}


async def test_max_open_holds_under_concurrent_proposals_on_two_replicas(db: Database, pg_url: str) -> None:
    with migrated(pg_url) as other:
        stores = [PostgresApprovalStore(db), PostgresApprovalStore(other)]
        service = ApprovalService(stores[0], CONFIG, clock=Clock(), audit=Audit())
        template = await stores[0].get(await propose(service))
        assert template is not None
        outcomes: list[str] = []

        async def create(i: int) -> None:
            try:
                await stores[i % 2].create(replace(template, id=f"ap-{i}"), max_open=4, now=template.created_at)
                outcomes.append("stored")
            except OpenApprovalsExceeded:
                outcomes.append("refused")

        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(create, i)
        assert outcomes.count("stored") == 3  # the template is the fourth open one
        assert await stores[1].count_open(template.requester_key, template.created_at) == 4


async def test_approved_on_one_replica_redeemed_exactly_once_by_8_redeemers_on_two(db: Database,
                                                                                    pg_url: str) -> None:
    with migrated(pg_url) as other:
        clock, audits = Clock(), [Audit(), Audit()]
        replicas = [ApprovalService(PostgresApprovalStore(d), CONFIG, clock=clock, audit=a)
                    for d, a in zip((db, other), audits, strict=True)]
        approval_id = await propose(replicas[0])
        await replicas[0].vote(approval_id, BOB, "approve")
        outcomes: list[str] = []

        async def attempt(i: int) -> None:
            try:
                await redeem(replicas[i % 2], approval_id)
                outcomes.append("ran")
            except ApprovalInvalid:
                outcomes.append("refused")

        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(attempt, i)
        assert sorted(outcomes) == ["ran"] + ["refused"] * 7
        assert sum([e for e, _ in a.events].count("executed") for a in audits) == 1
        stored = await PostgresApprovalStore(other).get(approval_id)
        assert stored is not None and stored.status == "executed"


async def test_a_connection_killed_mid_transition_fails_closed_writes_nothing_then_recovers(db: Database) -> None:
    store = PostgresApprovalStore(db)
    service = ApprovalService(store, CONFIG, clock=Clock(), audit=Audit())
    approval_id = await propose(service)
    await service.vote(approval_id, BOB, "approve")

    def killed_midway(approval: Any) -> Any:
        assert terminate(db) >= 1  # our own backends only, the one holding this transaction among them
        return replace(approval, status="executed")

    with pytest.raises(ApprovalStoreUnavailable) as refused:
        await store.transition(approval_id, killed_midway)
    assert "approval store failed" in refused.value.detail and "@127.0.0.1" in refused.value.detail  # masked name
    stored = await store.get(approval_id)  # recovered: a fresh connection
    assert stored is not None and stored.status == "approved"  # nothing written
    await redeem(service, approval_id)  # and still redeemable, once
    stored = await store.get(approval_id)
    assert stored is not None and stored.status == "executed"


async def test_a_statement_past_its_timeout_fails_closed(pg_url: str) -> None:
    with migrated(pg_url, statement_timeout_ms=200) as db, migrated(pg_url) as other:
        store = PostgresApprovalStore(db)
        approval_id = await propose(ApprovalService(store, CONFIG, clock=Clock(), audit=Audit()))
        with other.pool.connection() as holder, holder.transaction():  # another replica holds the row
            holder.execute("SELECT 1 FROM approvals_approval WHERE id = %s FOR UPDATE", (approval_id,))
            with pytest.raises(ApprovalStoreUnavailable):
                await store.transition(approval_id, lambda a: replace(a, status="denied"))
        stored = await store.get(approval_id)
        assert stored is not None and stored.status == "pending"


def test_an_unreachable_database_is_a_clear_error() -> None:
    from portcullis.storage.postgres import StorageUnavailable

    with pytest.raises(StorageUnavailable) as refused:
        database("postgresql://portcullis:s3cret@127.0.0.1:1/none?sslmode=disable", connect_timeout_s=2)
    assert "s3cret" not in str(refused.value) + refused.value.detail
    assert "127.0.0.1:1/none" in refused.value.detail
