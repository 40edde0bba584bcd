"""The hash chain, keyed hashes, checkpoints and verification, including every tampering case."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portcullis.audit import (
    GENESIS_HASH,
    AuditWriter,
    Checkpointer,
    CheckpointPolicy,
    SqliteAuditStore,
    canonical_bytes,
    export_jsonl,
    hash_sensitive,
    keyed_hash,
    make_record,
    sign_checkpoint,
    verify_chain,
    verify_export,
    verify_store,
)
from portcullis.audit.record import chain_hash

KEY = Ed25519PrivateKey.generate()
PUBLIC = KEY.public_key()
AUDIT_KEY = b"k" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        self.now += 0.5
        return self.now


def chain(n: int) -> list:
    records, prev = [], GENESIS_HASH
    for i in range(n):
        records.append(make_record(i, 1000.0 + i, f"req-{i}", "decision", {"tool": "t", "n": i}, prev))
        prev = records[-1].hash
    return records


async def filled_store(path: Path, n: int = 20, every: int = 5) -> None:
    """Write ``n`` records through the writer with a checkpoint every ``every`` records."""
    async with await SqliteAuditStore.open(path) as store:
        clock = Clock()
        checkpointer = Checkpointer(store, KEY, clock=clock, policy=CheckpointPolicy(every_records=every, every_s=1e9))
        async with AuditWriter(store, clock=clock, max_delay_s=0, checkpointer=checkpointer) as writer:
            for i in range(n):
                await writer.record("decision", f"req-{i}", {"tool": "refund", "amount": i})


async def verify_file(path: Path):
    async with await SqliteAuditStore.open(path) as store:
        return await verify_store(store, PUBLIC)


def tamper(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    with conn:
        for statement in statements:
            conn.execute(statement)
    conn.close()


def test_record_hash_is_sha256_of_prev_hash_and_canonical_body() -> None:
    """The hash is sha256 over the previous hash followed by the sorted, compact UTF-8 body."""
    record = make_record(0, 1.5, "r", "outcome", {"b": 1, "a": "é"}, GENESIS_HASH)
    body = b'{"fields":{"a":"\xc3\xa9","b":1},"index":0,"kind":"outcome","prev_hash":"' + GENESIS_HASH.encode()
    body += b'","request_id":"r","ts":1.5}'
    assert canonical_bytes(record.body()) == body
    assert record.hash == chain_hash(GENESIS_HASH, body)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), {1, 2}, "\ud800"])
def test_canonical_bytes_refuses_non_json_values(bad: object) -> None:
    """NaN, infinities, sets and lone surrogates are refused rather than written ambiguously."""
    with pytest.raises(ValueError):
        canonical_bytes({"x": bad})


def test_keyed_hashes_correlate_equal_values_without_revealing_them() -> None:
    """Equal values give equal keyed hashes, different values or keys differ, and the value never appears."""
    secret = "4111111111111111"
    digest = keyed_hash(AUDIT_KEY, secret)
    assert digest.startswith("hmac-sha256:") and secret not in digest
    assert digest == keyed_hash(AUDIT_KEY, secret)
    assert digest != keyed_hash(AUDIT_KEY, "4111111111111112")
    assert digest != keyed_hash(b"j" * 32, secret)
    assert keyed_hash(AUDIT_KEY, 1) != keyed_hash(AUDIT_KEY, "1")
    fields = hash_sensitive({"card": secret, "amount": 5}, ["card"], AUDIT_KEY)
    assert fields == {"card": digest, "amount": 5} and secret not in json.dumps(fields)


def test_keyed_hash_refuses_a_short_audit_key() -> None:
    """A key shorter than 16 bytes is a configuration error, not a weak hash."""
    with pytest.raises(ValueError):
        keyed_hash(b"short", "x")


def test_intact_chain_with_checkpoints_verifies() -> None:
    """An untouched chain with a valid checkpoint reports ok and counts every record."""
    records = chain(10)
    checkpoints = [sign_checkpoint(KEY, 9, records[9].hash, 2000.0)]
    assert verify_chain(records, checkpoints, PUBLIC) == verify_chain(iter(records), checkpoints, PUBLIC)
    report = verify_chain(records, checkpoints, PUBLIC)
    assert (report.ok, report.first_bad_index, report.records_checked, report.truncated) == (True, None, 10, False)


def test_consistently_rewritten_history_is_caught_by_its_checkpoint() -> None:
    """Rewriting record 3 and recomputing every later hash still fails at the signed checkpoint."""
    records = chain(10)
    checkpoints = [sign_checkpoint(KEY, 6, records[6].hash, 2000.0)]
    forged, prev = records[:3], records[2].hash
    for r in records[3:]:
        forged.append(make_record(r.index, r.ts, r.request_id, r.kind, {**r.fields, "tool": "x"}, prev))
        prev = forged[-1].hash
    report = verify_chain(forged, checkpoints, PUBLIC)
    assert (report.ok, report.first_bad_index) == (False, 6)
    assert "checkpoint" in report.reason


def test_checkpoint_from_another_key_is_refused() -> None:
    """A checkpoint signed by a key other than the audit key fails at its index."""
    records = chain(5)
    other = sign_checkpoint(Ed25519PrivateKey.generate(), 2, records[2].hash, 1.0)
    report = verify_chain(records, [other], PUBLIC)
    assert (report.ok, report.first_bad_index, report.reason) == (False, 2, "checkpoint signature invalid")


async def test_untouched_store_verifies(tmp_path: Path) -> None:
    """Records written through the writer verify, with checkpoints every five records."""
    db = tmp_path / "audit.db"
    await filled_store(db)
    async with await SqliteAuditStore.open(db) as store:
        assert [c.index for c in await store.checkpoints()] == [0, 5, 10, 15, 19]
    report = await verify_file(db)
    assert (report.ok, report.records_checked) == (True, 20)


@pytest.mark.parametrize(("statements", "first_bad", "reason"), [
    (["UPDATE audit_record SET fields = '{\"amount\":999,\"tool\":\"refund\"}' WHERE idx = 7"], 7, "hash does not"),
    (["UPDATE audit_record SET ts = ts + 1 WHERE idx = 12"], 12, "hash does not"),
    (["DELETE FROM audit_record WHERE idx = 9"], 9, "missing"),
    (["UPDATE audit_record SET idx = -1 WHERE idx = 3",
      "UPDATE audit_record SET idx = 3 WHERE idx = 8",
      "UPDATE audit_record SET idx = 8 WHERE idx = -1"], 3, "prev_hash"),
    (["DELETE FROM audit_record WHERE idx >= 13"], 13, "truncated"),
    (["UPDATE audit_checkpoint SET signature = replace(signature, substr(signature, 1, 1), "
      "CASE substr(signature, 1, 1) WHEN 'a' THEN 'b' ELSE 'a' END) WHERE idx = 10"], 10, "signature"),
    (["UPDATE audit_checkpoint SET hash = (SELECT hash FROM audit_record WHERE idx = 4) WHERE idx = 5"], 5,
     "signature"),
    (["UPDATE audit_record SET hash = 'é' || substr(hash, 2) WHERE idx = 6"], 6, "hash does not"),
    (["UPDATE audit_record SET prev_hash = X'00ff' WHERE idx = 11"], 11, "prev_hash"),
], ids=["edit-field", "edit-ts", "delete-row", "swap-rows", "truncate-tail", "corrupt-signature",
        "repoint-checkpoint", "non-ascii-hash", "blob-prev-hash"])
async def test_tampered_store_reports_the_first_broken_index(
        tmp_path: Path, statements: list[str], first_bad: int, reason: str) -> None:
    """Each tampering of the SQLite file is reported at exactly the first index it breaks."""
    db = tmp_path / "audit.db"
    await filled_store(db)
    tamper(db, *statements)
    report = await verify_file(db)
    assert (report.ok, report.first_bad_index) == (False, first_bad)
    assert reason in report.reason
    assert report.truncated == (reason == "truncated")


async def test_forged_row_with_a_random_hash_fails_at_its_own_index(tmp_path: Path) -> None:
    """A row appended directly to the database with a made-up hash fails where it sits."""
    db = tmp_path / "audit.db"
    await filled_store(db)
    tamper(db, "INSERT INTO audit_record SELECT 20, ts, 'x', kind, fields, hash, '" + "f" * 64 + "' "
               "FROM audit_record WHERE idx = 19")
    report = await verify_file(db)
    assert (report.ok, report.first_bad_index, report.records_checked) == (False, 20, 20)


async def test_well_formed_forged_row_breaks_the_chain_at_the_next_index(tmp_path: Path) -> None:
    """A forged row with a correct hash spliced in at 6 is caught where the displaced record no longer fits."""
    db = tmp_path / "audit.db"
    await filled_store(db, every=100)  # only checkpoints at 0 and the head
    conn = sqlite3.connect(db)
    prev = conn.execute("SELECT hash FROM audit_record WHERE idx = 5").fetchone()[0]
    forged = make_record(6, 1.0, "forged", "decision", {"tool": "refund", "amount": 10**6}, prev)
    with conn:
        conn.execute("UPDATE audit_record SET idx = -idx - 1000 WHERE idx >= 6")
        conn.execute("UPDATE audit_record SET idx = -idx - 1000 + 1 WHERE idx <= -1000")
        conn.execute("INSERT INTO audit_record VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (6, forged.ts, forged.request_id, forged.kind, canonical_bytes(forged.fields).decode(),
                      forged.prev_hash, forged.hash))
    conn.close()
    report = await verify_file(db)
    assert (report.ok, report.first_bad_index) == (False, 7)


async def test_export_round_trips_and_detects_tampering(tmp_path: Path) -> None:
    """A JSON-lines export verifies; editing one record line in it fails at that record."""
    db, out = tmp_path / "audit.db", tmp_path / "audit.jsonl"
    await filled_store(db)
    async with await SqliteAuditStore.open(db) as store:
        assert await export_jsonl(store, out) == 20
    lines = out.read_text("utf-8").splitlines()
    assert [json.loads(x)["type"] for x in lines] == ["record"] * 20 + ["checkpoint"] * 5
    assert verify_export(out, PUBLIC).ok
    edited = json.loads(lines[4])
    edited["fields"]["amount"] = 0
    lines[4] = json.dumps(edited)
    out.write_text("\n".join(lines) + "\n", "utf-8")
    report = verify_export(out, PUBLIC)
    assert (report.ok, report.first_bad_index) == (False, 4)


@pytest.mark.parametrize("line", ['{"type":"record"}', "not json", '{"type":"note"}', '{"type":"checkpoint","type":1}'])
def test_malformed_export_fails_verification(tmp_path: Path, line: str) -> None:
    """An export with a line that is not a well-formed record or checkpoint fails, naming the line."""
    out = tmp_path / "audit.jsonl"
    out.write_text(line + "\n", "utf-8")
    report = verify_export(out, PUBLIC)
    assert not report.ok and "line 1" in report.reason
