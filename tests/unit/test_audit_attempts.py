"""Attempt records: aggregation (bounded keys, exact counts), the recorder over a real audit chain,
the transport's refusal paths in process (a real GatewayApp and Authenticator), the audit store failing."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portcullis.audit import AuditRecord, AuditWriter, Checkpoint, SqliteAuditStore, verify_store
from portcullis.audit.attempts import (
    OVERFLOW_SOURCE,
    REASONS,
    Attempt,
    AttemptAggregator,
    AttemptRecorder,
    token_hash,
)
from portcullis.errors import (
    BadHost,
    BodyTooLarge,
    ForbiddenOrigin,
    HeaderMismatch,
    InvalidRequest,
    MethodNotAllowed,
    MissingSession,
    NotAcceptable,
    ParseError,
    UnknownSession,
    UnsupportedMediaType,
)
from portcullis.identity.authenticate import Authenticator, AuthFailure
from portcullis.identity.config import ClaimMap
from portcullis.identity.revocation import SqliteRevocations
from portcullis.observability import GatewayMetrics
from portcullis.transport.app import GatewayApp, attempt_reason
from portcullis.transport.http_guard import ATTEMPTS, ClientConnections
from portcullis.transport.http_guard import REASONS as GUARD_REASONS
from portcullis.transport.origin_guard import OriginGuard
from portcullis.transport.session_token import SessionSealer

KEY = b"k" * 32
NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def attempt(source: str = "203.0.113.7", reason: str = "invalid_token", status: int = 401, **kw: Any) -> Attempt:
    return Attempt(source, reason, status, **kw)


# --------------------------------------------------------------------------- the aggregator (pure)


def test_a_first_attempt_is_due_at_once_and_repeats_wait_for_the_window() -> None:
    agg = AttemptAggregator(window_s=10, max_keys=100)
    agg.observe(attempt(), NOW)
    first = agg.take(10)
    assert len(first) == 1 and first[0]["count"] == 1 and first[0]["first_ts"] == first[0]["last_ts"] == NOW
    agg.observe(attempt(), NOW + 1)
    agg.observe(attempt(), NOW + 2)
    agg.close_windows(NOW + 9.9)
    assert agg.take(10) == []
    agg.close_windows(NOW + 10)
    [repeats] = agg.take(10)
    assert (repeats["count"], repeats["first_ts"], repeats["last_ts"]) == (2, NOW + 1, NOW + 2)
    assert agg.keys() == 0
    agg.observe(attempt(), NOW + 11)  # a new window: written at once again
    assert [r["count"] for r in agg.take(10)] == [1]


def test_a_key_whose_window_had_no_repeats_writes_nothing_more() -> None:
    agg = AttemptAggregator(window_s=1, max_keys=10)
    agg.observe(attempt(), NOW)
    agg.take(10)
    agg.close_windows(NOW + 5)
    assert agg.take(10) == [] and agg.keys() == 0


def test_ten_thousand_identical_failures_are_two_records_whose_counts_add_up() -> None:
    agg = AttemptAggregator(window_s=10, max_keys=10_000)
    for i in range(10_000):
        agg.observe(attempt(), NOW + i / 10_000)
    agg.close_windows(NOW, every=True)
    records = agg.take(100)
    assert [r["count"] for r in records] == [1, 9_999]
    assert sum(r["count"] for r in records) == 10_000 == agg.seen


def test_fifty_thousand_distinct_sources_keep_the_keys_bounded_and_the_counts_exact() -> None:
    agg = AttemptAggregator(window_s=10, max_keys=10_000)
    for i in range(50_000):
        agg.observe(attempt(source=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"), NOW)
    assert agg.keys() == 10_001  # the table, plus one overflow key for (invalid_token, 401)
    agg.close_windows(NOW, every=True)
    records = agg.take(100_000)
    assert sum(r["count"] for r in records) == 50_000
    assert len(records) == 10_002
    overflow = [r for r in records if r["source"] == OVERFLOW_SOURCE]
    assert [r["count"] for r in overflow] == [1, 39_999]
    assert all(r["token_hash"] is None and r["method"] is None for r in overflow)


def test_overflow_is_per_reason_and_status() -> None:
    agg = AttemptAggregator(window_s=10, max_keys=1)
    agg.observe(attempt(source="a"), NOW)
    agg.observe(attempt(source="b"), NOW)
    agg.observe(attempt(source="c", reason="host_refused", status=421), NOW)
    assert {(r["source"], r["reason"]) for r in agg.take(10)} == {
        ("a", "invalid_token"), ("*", "invalid_token"), ("*", "host_refused")}


def test_reasons_and_namings_are_a_closed_set() -> None:
    with pytest.raises(ValueError):
        Attempt("a", "because", 401)
    with pytest.raises(ValueError):
        Attempt("a", "invalid_token", 401, named="guessed")
    with pytest.raises(ValueError):
        AttemptAggregator(window_s=0)


def test_the_token_hash_is_keyed_short_and_stable() -> None:
    h = token_hash(KEY, "eyJ.secret.sig")
    assert h == token_hash(KEY, "eyJ.secret.sig") != token_hash(b"x" * 32, "eyJ.secret.sig")
    assert h.startswith("hmac-sha256:") and len(h) == len("hmac-sha256:") + 16 and "secret" not in h


# --------------------------------------------------------------------------- classification


@pytest.mark.parametrize(("exc", "reason"), [
    (AuthFailure(401, "invalid_token", "x", "c", detail="no credentials"), "missing_credentials"),
    (AuthFailure(401, "invalid_token", "x", "c", detail="expired"), "invalid_token"),
    (AuthFailure(401, "invalid_token", "x", "c", detail="revoked"), "revoked"),
    (AuthFailure(403, "insufficient_scope", "x", "c", detail="missing scope"), "insufficient_scope"),
    (AuthFailure(503, "temporarily_unavailable", "x", "c"), "auth_unavailable"),
    (BadHost(), "host_refused"), (ForbiddenOrigin(), "origin_refused"), (MethodNotAllowed(), "method_not_allowed"),
    (UnsupportedMediaType(), "unsupported_media_type"), (NotAcceptable(), "not_acceptable"),
    (BodyTooLarge(), "body_too_large"), (ParseError(), "parse_error"), (InvalidRequest(), "invalid_request"),
    (HeaderMismatch(), "header_mismatch"), (MissingSession(), "missing_session"),
    (UnknownSession(), "unknown_session"), (RuntimeError(), None),
])
def test_refusals_map_to_reasons_by_type(exc: BaseException, reason: str | None) -> None:
    assert attempt_reason(exc) == reason
    assert reason is None or reason in REASONS


def test_protocol_level_refusals_reach_the_observer() -> None:
    seen: list[tuple[str | None, str, int]] = []

    class Observer:
        def refused(self, source: str | None, reason: str, status: int) -> None:
            seen.append((source, reason, status))

    clients = ClientConnections(1, observer=Observer())
    assert clients.admit("198.51.100.4") and not clients.admit("198.51.100.4")
    clients.refuse("2001:db8::/64", "header_limit")
    assert seen == [("198.51.100.4", "too_many_connections", 503), ("2001:db8::/64", "header_limits", 431)]
    assert clients.stats()["per_client_cap"] == 1
    assert set(ATTEMPTS) == set(GUARD_REASONS) and all(r in REASONS for r, _ in ATTEMPTS.values())


# --------------------------------------------------------------------------- the recorder over a real chain


class FailingStore:
    """A real store whose appends can be made to fail (a full disk)."""

    def __init__(self, inner: SqliteAuditStore) -> None:
        self.inner, self.failing = inner, False

    async def append(self, batch: Sequence[AuditRecord]) -> None:
        if self.failing:
            raise OSError("disk full")
        await self.inner.append(batch)

    async def head(self) -> tuple[int, str] | None:
        return await self.inner.head()

    async def read(self, from_index: int, limit: int) -> list[AuditRecord]:
        return await self.inner.read(from_index, limit)

    async def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        await self.inner.add_checkpoint(checkpoint)

    async def checkpoints(self) -> list[Checkpoint]:
        return await self.inner.checkpoints()


async def all_records(store: SqliteAuditStore) -> list[AuditRecord]:
    return await store.read(0, 1_000_000)


async def test_a_flood_through_the_recorder_grows_the_chain_by_two_records_and_verifies(tmp_path: Path) -> None:
    clock = Clock()
    metrics = GatewayMetrics(process_metrics=False)
    exported: list[dict[str, Any]] = []
    async with await SqliteAuditStore.open(tmp_path / "a.db") as store:
        async with AuditWriter(store, clock=clock, export=exported.append) as writer:
            recorder = AttemptRecorder(writer, audit_key=KEY, clock=clock, window_s=10, hooks=metrics)
            async with anyio.create_task_group() as tg:
                tg.start_soon(recorder.run, 0.01)
                for _ in range(10_000):
                    recorder.note(attempt(token_hash="hmac-sha256:00", who="hmac-sha256:00"))
                with anyio.fail_after(30):
                    while not await store.head():
                        await anyio.sleep(0.01)  # the first is written without waiting for the window
                tg.cancel_scope.cancel()  # a clean stop flushes the repeats
        records = await all_records(store)
        assert [r.kind for r in records] == ["attempt", "attempt"]
        assert sum(r.fields["count"] for r in records) == 10_000
        assert records[0].fields["token_hash"] == "hmac-sha256:00"
        key = Ed25519PrivateKey.generate()
        report = await verify_store(store, key.public_key())
        assert report.ok, report
    assert [r["fields"]["count"] for r in exported] == [1, 9_999]
    assert metrics.attempts_total.labels("invalid_token").value == 10_000
    assert metrics.audit_records_total.labels("attempt").value == 2


async def test_fifty_thousand_distinct_keys_through_the_recorder(tmp_path: Path) -> None:
    clock = Clock()
    async with await SqliteAuditStore.open(tmp_path / "a.db", durability="process") as store:
        async with AuditWriter(store, clock=clock) as writer:
            recorder = AttemptRecorder(writer, audit_key=KEY, clock=clock, window_s=10, max_keys=10_000)
            for i in range(50_000):
                recorder.note(attempt(source=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"))
            await recorder.flush(every=True)
        records = await all_records(store)
    assert len(records) == 10_002
    assert sum(r.fields["count"] for r in records) == 50_000


async def test_an_unavailable_store_is_counted_and_logged_never_raised(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    metrics = GatewayMetrics(process_metrics=False)
    async with await SqliteAuditStore.open(tmp_path / "a.db") as inner:
        store = FailingStore(inner)
        store.failing = True
        async with AuditWriter(store, clock=clock) as writer:
            recorder = AttemptRecorder(writer, audit_key=KEY, clock=clock, hooks=metrics)
            recorder.note(attempt())
            recorder.note(attempt(source="198.51.100.1"))
            await recorder.flush(every=True)
        assert await inner.head() is None
    assert metrics.audit_failures_total.labels().value == 2
    assert "attempt record not written" in caplog.text


# --------------------------------------------------------------------------- the transport, in process


def build_app(tmp_path: Path, recorder: AttemptRecorder | None, *, max_body: int = 1000) -> GatewayApp:
    auth = Authenticator(verifier=None, claim_map=ClaimMap(), required_scopes=("mcp:tools",),
                         revocations=SqliteRevocations(tmp_path / "revocations.db"), cert_mapper=None,
                         allow_anonymous=False, resource_metadata_url="http://127.0.0.1:1/.well-known/prm",
                         issuer_names={}, dev_issuer_name=None)
    return GatewayApp(dispatcher=None, sealer=SessionSealer([b"s" * 32], ttl_s=60, clock=Clock()),  # type: ignore[arg-type]
                      guard=OriginGuard(["127.0.0.1:*"], ["http://127.0.0.1:*"]), authenticator=auth,
                      protected_resource_metadata={}, jwks=dict, max_body_bytes=max_body, max_json_depth=32,
                      attempts=recorder)


async def call(app: GatewayApp, headers: dict[str, str], body: bytes = b"{}", *, method: str = "POST",
               client: Any = ("203.0.113.9", 40000)) -> int:
    sent: list[dict[str, Any]] = []
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": "/mcp", "client": client,
             "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]}
    await app(scope, receive, send)  # type: ignore[arg-type]
    return int(sent[0]["status"])


BASE = {"Host": "127.0.0.1:8080", "Content-Type": "application/json", "Accept": "application/json"}
FORGED = "eyJhbGciOiJub25lIn0." + base64.urlsafe_b64encode(json.dumps({"sub": "x"}).encode()).decode() + ".sig"


@pytest.mark.parametrize(("headers", "method", "status", "reason", "extra"), [
    ({}, "POST", 401, "missing_credentials", {"named": "unread", "method": None, "token_hash": None}),
    ({"Authorization": f"Bearer {FORGED}"}, "POST", 401, "invalid_token", {"detail": "not_a_bearer_token"}),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, "POST", 401, "invalid_token", {}),
    ({"Host": "evil.example"}, "POST", 421, "host_refused", {}),
    ({"Origin": "https://evil.example"}, "POST", 403, "origin_refused", {}),
    ({}, "GET", 405, "method_not_allowed", {}),
    ({"Content-Type": "text/plain"}, "POST", 415, "unsupported_media_type", {}),
    ({"Accept": "text/html"}, "POST", 406, "not_acceptable", {}),
    ({"Mcp-Method": "tools/call", "Mcp-Name": "\x1b[31mx" + "A" * 10_000}, "POST", 401, "missing_credentials",
     {"named": "headers", "method": "tools/call", "tool": {"name": ("\x1b[31mx" + "A" * 10_000)[:128]}}),
], ids=["no-token", "alg-none", "basic", "wrong-host", "wrong-origin", "get", "text-plain", "accept-html",
        "hostile-names"])
async def test_refusals_in_process_leave_attempts(tmp_path: Path, headers: dict[str, str], method: str, status: int,
                                                  reason: str, extra: dict[str, Any]) -> None:
    clock = Clock()
    async with await SqliteAuditStore.open(tmp_path / "a.db", durability="process") as store:
        async with AuditWriter(store, clock=clock) as writer:
            recorder = AttemptRecorder(writer, audit_key=KEY, clock=clock)
            app = build_app(tmp_path, recorder)
            assert await call(app, {**BASE, **headers}, method=method) == status
            await recorder.flush(every=True)
        [record] = await all_records(store)
        text = (tmp_path / "a.db").read_bytes()
    fields = record.fields
    assert (record.kind, fields["reason"], fields["status"], fields["source"], fields["count"]) == (
        "attempt", reason, status, "203.0.113.9", 1)
    for name, value in extra.items():
        assert fields[name] == value, name
    assert FORGED.encode() not in text and b"dXNlcjpwYXNz" not in text
    if "Authorization" in headers:
        assert fields["token_hash"] == token_hash(KEY, headers["Authorization"])


async def test_an_ipv6_peer_is_recorded_per_64(tmp_path: Path) -> None:
    clock = Clock()
    async with await SqliteAuditStore.open(tmp_path / "a.db", durability="process") as store:
        async with AuditWriter(store, clock=clock) as writer:
            recorder = AttemptRecorder(writer, audit_key=KEY, clock=clock)
            app = build_app(tmp_path, recorder)
            for host in ("2001:db8::1", "2001:db8::2"):
                assert await call(app, BASE, client=[host, 1234]) == 401
            await recorder.flush(every=True)
        records = await all_records(store)
    assert [(r.fields["source"], r.fields["count"]) for r in records] == [("2001:db8::/64", 1), ("2001:db8::/64", 1)]


async def test_the_refusal_stands_when_the_audit_store_fails(tmp_path: Path) -> None:
    clock = Clock()
    metrics = GatewayMetrics(process_metrics=False)
    async with await SqliteAuditStore.open(tmp_path / "a.db") as inner:
        store = FailingStore(inner)
        store.failing = True
        async with AuditWriter(store, clock=clock) as writer:
            recorder = AttemptRecorder(writer, audit_key=KEY, clock=clock, hooks=metrics)
            app = build_app(tmp_path, recorder)
            async with anyio.create_task_group() as tg:
                tg.start_soon(recorder.run, 0.01)
                assert await call(app, BASE) == 401
                assert await call(app, {**BASE, "Host": "evil.example"}) == 421
                with anyio.fail_after(30):
                    while metrics.audit_failures_total.labels().value < 2:
                        await anyio.sleep(0.01)
                tg.cancel_scope.cancel()
    assert metrics.attempts_total.labels("missing_credentials").value == 1


async def test_without_a_recorder_refusals_are_answered_as_before(tmp_path: Path) -> None:
    assert await call(build_app(tmp_path, None), BASE) == 401
