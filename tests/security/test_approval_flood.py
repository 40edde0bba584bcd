"""Approval flood: one requester cannot open unlimited approvals, and no flood hides another tool's
request from its approver (the approver's list is filtered before it is paged, and paged).

The cap counts per requester identity (issuer, client, user, agent, tenant): varying the tool, the
arguments, the justification, the session, roles or scopes does not buy more slots; decided or
expired approvals free theirs; concurrent proposals (in one process or through two connections to
the same store) never pass it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest

from portcullis.approvals.api import ApprovalApi
from portcullis.approvals.service import OPEN_CAP_RULE, ApprovalService
from portcullis.approvals.store import SqliteApprovalStore
from portcullis.config.model import ApprovalsConfig
from portcullis.errors import PolicyRefused, to_wire
from portcullis.identity.principal import Principal
from portcullis.policy.decision import Decision
from tests.security.harness import BOB, REFUND, in_process_gateway, refund

NOW = 1_800_000_000.0
BOT = Principal(client_id="c", auth_method="dev", issuer="dev", user_id="alice", agent_id="billing-bot")
ANOTHER_BOT = Principal(client_id="c", auth_method="dev", issuer="dev", user_id="alice", agent_id="ops-bot")
FINANCE = Principal(client_id="bob", auth_method="dev", issuer="dev", user_id="bob", roles=("finance-approver",),
                    person=True)
OPS = Principal(client_id="olga", auth_method="dev", issuer="dev", user_id="olga", roles=("ops-approver",),
                person=True)
DECISION = Decision(effect="require_approval", reasons=("needs_approval",), rule_ids=("r",), policy_version="pv-1")
CONFIG: dict[str, Any] = {"ttl_s": 60, "max_open_per_requester": 5, "approvers": [
    {"tools": ["billing.*"], "approvers": ["role:finance-approver"]},
    {"tools": ["ops.*"], "approvers": ["role:ops-approver"]}]}


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Audit:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    async def __call__(self, event: str, approval: Any, **_: Any) -> None:
        self.events.append((event, approval.status))


def service_on(path: Path, clock: Clock, audit: Audit, **config: Any) -> ApprovalService:
    return ApprovalService(SqliteApprovalStore.open(path), ApprovalsConfig.model_validate({**CONFIG, **config}),
                           clock=clock, audit=audit)


@pytest.fixture
def kit(tmp_path: Path) -> tuple[ApprovalService, Clock, Audit]:
    clock, audit = Clock(), Audit()
    return service_on(tmp_path / "approvals.sqlite3", clock, audit), clock, audit


async def propose(service: ApprovalService, *, tool: str = "billing.process_refund", principal: Principal = BOT,
                  arguments: Mapping[str, Any] | None = None, justification: str = "", request_id: str = "r",
                  decision: Decision = DECISION, required: int = 1) -> str:
    approval = await service.propose(tool=tool, arguments=dict(arguments or {"amount": 300}), principal=principal,
                                     decision=decision, required=required, justification=justification,
                                     request_id=request_id)
    return approval.id


# --------------------------------------------------------------------------- the cap

def _variant(i: int) -> dict[str, Any]:
    """The same requester, the i-th way of dressing up one more request."""
    return {"arguments": {"amount": 300 + i, "order_id": f"ORD-{i}", "note": "\u202e" * i}}


EVASIONS: list[tuple[str, Any]] = [
    ("other-arguments", lambda i: {"arguments": {"amount": 300 + i}}),
    ("unicode-arguments", _variant),
    ("other-tools", lambda i: {"tool": f"billing.tool_{i}"}),
    ("tools-of-other-approvers", lambda i: {"tool": "ops.restart" if i % 2 else "billing.process_refund"}),
    ("other-justifications", lambda i: {"justification": "urgent " * i}),
    ("other-request-ids", lambda i: {"request_id": f"r-{i}"}),
    ("other-policy-versions", lambda i: {"decision": Decision(effect="require_approval", policy_version=f"pv-{i}")}),
    ("other-approver-counts", lambda i: {"required": 1 + i % 2}),
    ("other-sessions", lambda i: {"principal": Principal(client_id="c", auth_method="dev", issuer="dev",
                                                         user_id="alice", agent_id="billing-bot",
                                                         session_id=f"s-{i}")}),
    ("other-roles-and-scopes", lambda i: {"principal": Principal(
        client_id="c", auth_method="dev", issuer="dev", user_id="alice", agent_id="billing-bot",
        roles=(f"role-{i}",), scopes=(f"scope-{i}",), attributes={"n": str(i)})}),
    ("other-source-apps", lambda i: {"principal": Principal(client_id="c", auth_method="dev", issuer="dev",
                                                            user_id="alice", agent_id="billing-bot",
                                                            source_app=f"app-{i}")}),
]


@pytest.mark.parametrize("vary", [v for _, v in EVASIONS], ids=[n for n, _ in EVASIONS])
async def test_the_cap_counts_per_requester_whatever_else_varies(kit: Any, vary: Any) -> None:
    """Five open requests are allowed; the sixth is refused however it differs from the first five."""
    service, _, audit = kit
    for i in range(5):
        await propose(service, **vary(i))
    with pytest.raises(PolicyRefused) as refused:
        await propose(service, **vary(5))
    assert refused.value.data["rule_id"] == OPEN_CAP_RULE
    assert len(await service.list("pending", limit=100)) == 5
    assert [e for e, _ in audit.events] == ["proposed"] * 5 + ["refused"]


async def test_the_refusal_is_a_documented_policy_refusal_on_the_wire(kit: Any) -> None:
    """Over the cap the agent gets -31020 naming the cap's rule and when to retry, and no approval id."""
    service, _, _ = kit
    for i in range(5):
        await propose(service, arguments={"amount": i})
    with pytest.raises(PolicyRefused) as refused:
        await propose(service)
    wire = to_wire(refused.value, request_id=1)
    assert wire.body is not None
    assert wire.body["error"] == {"code": -31020, "message": "Call refused by policy",
                                  "data": {"rule_id": "approvals/max_open_per_requester", "retry_after_s": 60}}
    assert refused.value.decision.effect == "deny"  # type: ignore[attr-defined]


REQUESTERS = [
    ("another-agent", ANOTHER_BOT),
    ("another-user", Principal(client_id="c", auth_method="dev", issuer="dev", user_id="zed", agent_id="billing-bot")),
    ("another-client", Principal(client_id="c2", auth_method="dev", issuer="dev", user_id="alice",
                                 agent_id="billing-bot")),
    ("another-issuer", Principal(client_id="c", auth_method="dev", issuer="other", user_id="alice",
                                 agent_id="billing-bot")),
    ("another-tenant", Principal(client_id="c", auth_method="dev", issuer="dev", user_id="alice",
                                 agent_id="billing-bot", tenant="t2")),
]


@pytest.mark.parametrize("other", [p for _, p in REQUESTERS], ids=[n for n, _ in REQUESTERS])
async def test_one_requester_at_its_cap_does_not_block_another(kit: Any, other: Principal) -> None:
    """The cap is per requester identity: a flooding agent uses up only its own slots."""
    service, _, _ = kit
    for i in range(5):
        await propose(service, arguments={"amount": i})
    with pytest.raises(PolicyRefused):
        await propose(service)
    for i in range(5):
        await propose(service, principal=other, arguments={"amount": i})
    with pytest.raises(PolicyRefused):
        await propose(service, principal=other)


async def _deny(service: ApprovalService, approval_id: str, clock: Clock) -> None:
    await service.vote(approval_id, FINANCE, "deny")


async def _approve(service: ApprovalService, approval_id: str, clock: Clock) -> None:
    await service.vote(approval_id, FINANCE, "approve")


async def _execute(service: ApprovalService, approval_id: str, clock: Clock) -> None:
    await service.vote(approval_id, FINANCE, "approve")
    await service.redeem(approval_id=approval_id, tool="billing.process_refund", arguments={"amount": 0},
                         principal=BOT, decision=DECISION, request_id="r", before_use=anyio.lowlevel.checkpoint)


async def _expire_unswept(service: ApprovalService, approval_id: str, clock: Clock) -> None:
    clock.now += 61  # nobody touched or swept it: it still says pending, and no longer counts


async def _expire_swept(service: ApprovalService, approval_id: str, clock: Clock) -> None:
    clock.now += 61
    await service.sweep()


FREEING = [("denied", _deny), ("approved", _approve), ("executed", _execute), ("expired-unswept", _expire_unswept),
           ("expired-swept", _expire_swept)]


@pytest.mark.parametrize("settle", [f for _, f in FREEING], ids=[n for n, _ in FREEING])
async def test_a_decided_or_expired_approval_frees_its_slot(kit: Any, settle: Any) -> None:
    """Once the oldest request is decided, used or expired, the requester may open one more."""
    service, clock, _ = kit
    ids = [await propose(service, arguments={"amount": i}) for i in range(5)]
    with pytest.raises(PolicyRefused):
        await propose(service, arguments={"amount": 99})
    await settle(service, ids[0], clock)
    await propose(service, arguments={"amount": 99})


async def test_concurrent_proposals_never_pass_the_cap(tmp_path: Path) -> None:
    """Forty proposals at once, through two store connections (as two gateway processes): exactly five stored."""
    clock, audit = Clock(), Audit()
    services = [service_on(tmp_path / "approvals.sqlite3", clock, audit) for _ in range(2)]
    outcomes: list[str] = []

    async def attempt(i: int) -> None:
        try:
            await propose(services[i % 2], arguments={"amount": i})
            outcomes.append("stored")
        except PolicyRefused:
            outcomes.append("refused")

    async with anyio.create_task_group() as tg:
        for i in range(40):
            tg.start_soon(attempt, i)
    assert sorted(outcomes) == ["refused"] * 35 + ["stored"] * 5
    assert len(await services[0].list("pending", limit=100)) == 5


# --------------------------------------------------------------------------- what an approver lists

class Api:
    """The approvers' HTTP API driven in-process; the bearer token is the approver's user id."""

    def __init__(self, service: ApprovalService) -> None:
        people = {"bob": FINANCE, "olga": OPS}

        async def authenticate(headers: Mapping[str, str], scope: Mapping[str, Any]) -> Principal:
            return people[headers["authorization"].removeprefix("Bearer ")]

        self._api = ApprovalApi(service, authenticate)

    async def get(self, who: str, query: str) -> tuple[int, Any]:
        sent: list[Any] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: Any) -> None:
            sent.append(message)

        await self._api({"type": "http", "path": "/approvals", "method": "GET", "query_string": query.encode(),
                         "headers": [(b"authorization", f"Bearer {who}".encode())]}, receive, send)
        return sent[0]["status"], json.loads(sent[1]["body"])

    async def every_page(self, who: str, query: str) -> list[str]:
        ids: list[str] = []
        cursor = ""
        while True:
            status, body = await self.get(who, query + (f"&cursor={cursor}" if cursor else ""))
            assert status == 200, body
            ids.extend(a["id"] for a in body["approvals"])
            cursor = body["next_cursor"]
            if cursor is None:
                return ids


async def _flood(service: ApprovalService, clock: Clock, agents: int) -> None:
    """``agents`` requesters, each at its cap of billing requests, all newer than what came before."""
    for n in range(agents):
        flooder = Principal(client_id="c", auth_method="dev", issuer="dev", agent_id=f"flood-{n}")
        for i in range(5):
            clock.now += 0.001
            await propose(service, principal=flooder, arguments={"amount": i})


@pytest.mark.parametrize("flooders", [1, 40, 120], ids=["one-agent", "past-one-scan", "past-a-page-max"])
async def test_no_flood_hides_another_tools_request_from_its_approver(kit: Any, flooders: int) -> None:
    """An ops request older than hundreds of billing requests is still on the ops approver's first page."""
    service, clock, _ = kit
    ops_id = await propose(service, tool="ops.restart", principal=ANOTHER_BOT)
    await _flood(service, clock, flooders)
    api = Api(service)
    status, body = await api.get("olga", "status=pending")
    assert status == 200
    assert [a["id"] for a in body["approvals"]] == [ops_id] and body["next_cursor"] is None
    billing = await api.every_page("bob", "status=pending&limit=500")
    assert len(billing) == 5 * flooders and ops_id not in billing


@pytest.mark.parametrize("limit", [1, 3, 7, 50])
async def test_pages_cover_every_decidable_approval_once_newest_first(kit: Any, limit: int) -> None:
    """Walking the pages (same-instant ties included) yields each approval the approver may decide exactly once."""
    service, clock, _ = kit
    expected: list[str] = []
    for n in range(6):
        requester = Principal(client_id="c", auth_method="dev", issuer="dev", agent_id=f"bot-{n}")
        await propose(service, tool="ops.restart", principal=requester)  # not bob's to decide
        for i in range(4):  # clock not moved: these share one instant (the id breaks the tie)
            expected.append(await propose(service, principal=requester, arguments={"amount": i}))
        clock.now += 1
    got = await Api(service).every_page("bob", f"limit={limit}")
    assert sorted(got) == sorted(expected) and len(got) == len(set(got))
    by_id = {a.id: a for a in await service._store.list(limit=1000)}
    keys = [(by_id[i].created_at, i) for i in got]
    assert keys == sorted(keys, reverse=True)


BAD_QUERIES = [
    ("limit-zero", "limit=0"), ("limit-negative", "limit=-1"), ("limit-over-max", "limit=501"),
    ("limit-huge", "limit=99999999999999999999"), ("limit-float", "limit=1.5"), ("limit-exponent", "limit=1e3"),
    ("limit-word", "limit=all"), ("limit-arabic-digits", "limit=%D9%A1%D9%A2"), ("limit-space", "limit=%205"),
    ("cursor-unknown", "cursor=apr_" + "0" * 32), ("cursor-sql", "cursor=%27%20OR%201%3D1%20--"),
    ("cursor-uppercase", "cursor=APR_" + "A" * 32), ("cursor-short", "cursor=apr_123"),
    ("cursor-newline", "cursor=apr_" + "0" * 32 + "%0a"), ("status-unknown", "status=refused"),
]


@pytest.mark.parametrize("query", [q for _, q in BAD_QUERIES], ids=[n for n, _ in BAD_QUERIES])
async def test_malformed_paging_is_refused_with_400(kit: Any, query: str) -> None:
    """A limit outside 1..500 or a cursor that names no stored approval is a 400, never a full dump."""
    service, _, _ = kit
    await propose(service)
    status, body = await Api(service).get("bob", query)
    assert status == 400 and set(body) == {"error"}


async def test_a_cursor_from_another_tool_reveals_nothing_of_it(kit: Any) -> None:
    """Paging from an approval the approver may not decide lists only what that approver may decide."""
    service, clock, _ = kit
    older = await propose(service)
    clock.now += 1
    ops_id = await propose(service, tool="ops.restart", principal=ANOTHER_BOT)
    status, body = await Api(service).get("bob", f"cursor={ops_id}")
    assert status == 200 and [a["id"] for a in body["approvals"]] == [older]


class CountingStore:
    """The real store, counting the rows each listing reads (the seam the scan bound is about)."""

    def __init__(self, store: SqliteApprovalStore) -> None:
        self._store, self.read = store, 0

    async def list(self, **kwargs: Any) -> list[Any]:
        rows = await self._store.list(**kwargs)
        self.read += len(rows)
        return rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


# (id, billing approvals flooding the table, scan bound, pages olga's walk takes, rows one request may read)
SCAN_ROWS = [("under-the-bound", 40, 500, 1, 500), ("at-the-bound", 100, 500, 2, 500),
             ("past-the-bound", 240, 500, 3, 500), ("far-past-a-larger-bound", 240, 1000, 2, 1000)]


@pytest.mark.parametrize(("flooders", "scan_max", "pages", "bound"), [r[1:] for r in SCAN_ROWS],
                         ids=[r[0] for r in SCAN_ROWS])
async def test_one_listing_request_reads_a_bounded_number_of_rows(tmp_path: Path, flooders: int, scan_max: int,
                                                                  pages: int, bound: int) -> None:
    """A table of approvals this approver may not decide: each request reads at most the bound and
    answers a sealed continuation cursor; walking the cursors still finds the one ops approval."""
    clock, audit = Clock(), Audit()
    real = SqliteApprovalStore.open(tmp_path / "approvals.sqlite3")
    counting = CountingStore(real)
    service = ApprovalService(counting, ApprovalsConfig.model_validate(CONFIG), clock=clock,  # type: ignore[arg-type]
                              audit=audit, scan_max=scan_max)
    ops_id = await propose(service, tool="ops.restart", principal=ANOTHER_BOT)
    await _flood(service, clock, flooders)
    api, cursor, seen, reads = Api(service), "", [], []
    while True:
        counting.read = 0
        status, body = await api.get("olga", "status=pending" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200, body
        reads.append(counting.read)
        seen.extend(a["id"] for a in body["approvals"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert cursor.startswith("scan_") and "apr_" not in cursor  # names no approval olga may not see
        assert not any(a.id[4:] in cursor for a in await real.list(limit=2000))
    assert seen == [ops_id] and len(reads) == pages and max(reads) <= bound


async def test_a_forged_or_foreign_continuation_cursor_is_refused(tmp_path: Path) -> None:
    """A continuation cursor sealed by another process (or altered) is an unknown cursor: 400."""
    clock, audit = Clock(), Audit()
    services = [ApprovalService(SqliteApprovalStore.open(tmp_path / "approvals.sqlite3"),
                                ApprovalsConfig.model_validate(CONFIG), clock=clock, audit=audit, scan_max=500)
                for _ in range(2)]
    await _flood(services[0], clock, 120)
    status, body = await Api(services[0]).get("olga", "status=pending")
    cursor = body["next_cursor"]
    assert status == 200 and cursor.startswith("scan_")
    flipped = cursor[:-1] + ("0" if cursor[-1] != "0" else "1")
    for service, sent in ((services[1], cursor), (services[0], flipped), (services[0], "scan_" + "0" * 88)):
        status, body = await Api(service).get("olga", f"cursor={sent}")
        assert status == 400 and body == {"error": "unknown cursor"}


# --------------------------------------------------------------------------- through the pipeline

async def test_an_agent_over_its_cap_gets_the_refusal_and_it_is_audited(tmp_path: Path) -> None:
    """Through the real pipeline: the call over the cap is not forwarded, answers -31020, and both the
    approval step (``refused``) and the call's decision are on the audit record."""
    async with in_process_gateway(tmp_path, approvals_config={"max_open_per_requester": 3}) as gw:
        for i in range(3):
            await gw.pending_id(refund(150 + i))
        answer = await gw.call(REFUND, refund(200))
        assert answer.code == -31020 and answer.error["data"]["rule_id"] == OPEN_CAP_RULE
        records = await gw.records()
        steps = [r.fields["event"] for r in records if r.kind == "approval"]
        assert steps == ["proposed"] * 3 + ["refused"]
        decision = await gw.decision_of_last_call()
        assert decision["decision"]["effect"] == "deny"
        assert OPEN_CAP_RULE in decision["decision"]["rule_ids"]
        # one decided request frees a slot
        first = (await gw.approvals.list("pending"))[-1]["id"]
        await gw.approvals.vote(first, BOB, "deny")
        assert (await gw.call(REFUND, refund(200))).code == -31010
