"""The audit tail: an attacker who can write the store (with or without the signing key) against
checkpoints that left the machine (SIEM JSON lines, or a file of C2SP signed notes).

The store is written through the real writer, checkpointer and SIEM export queue (JSON-lines
exporter), then stopped cleanly; the SIEM file is the anchor file. Every tampering row is then
run through ``portcullis audit verify --anchors`` and must exit 1 with its own message.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from typer.testing import CliRunner

from portcullis.audit import make_record, sign_checkpoint
from portcullis.audit.checkpoint import Checkpointer, CheckpointPolicy
from portcullis.audit.keys import PUBLIC_KEY_FILE, AuditKeys
from portcullis.audit.note import checkpoint_export, origin_for, sign_note
from portcullis.audit.record import Checkpoint
from portcullis.audit.siem.jsonl import JsonlExporter
from portcullis.audit.siem.queue import ExportQueue
from portcullis.audit.store import SqliteAuditStore
from portcullis.audit.writer import AuditWriter
from portcullis.cli.main import app

T0 = 1_800_000_000.0
RECORDS = 24
runner = CliRunner()


class StepClock:
    """Advances 0.3 s per reading: with a 1 s window a checkpoint falls every few records."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        self.now += 0.3
        return self.now


async def write_store(state: Path, key: Ed25519PrivateKey, siem: Path, count: int = RECORDS) -> None:
    """``count`` records through the real writer; each checkpoint goes to a JSON-lines SIEM file; clean stop."""
    queue = ExportQueue([JsonlExporter(siem, fsync=False)])
    async with await SqliteAuditStore.open(state / "audit.sqlite3") as store, queue:
        clock = StepClock()
        checkpointer = Checkpointer(store, key, clock=clock, policy=CheckpointPolicy(every_records=1000, every_s=1.0),
                                    on_checkpoint=lambda c: queue.offer(checkpoint_export(key, c)) and None)
        async with AuditWriter(store, clock=clock, max_delay_s=0, checkpointer=checkpointer) as writer:
            for i in range(count):
                record = await writer.record("decision", f"req-{i}", {"tool": {"name": "billing.get_invoice"},
                                                                        "decision": {"effect": "allow"}, "n": i})
                queue.offer(record.to_json())


@pytest.fixture
async def state(tmp_path: Path) -> Path:
    root = tmp_path / "state"
    keys = AuditKeys.load_or_create(root)
    await write_store(root, keys.signing_key, tmp_path / "siem.jsonl")
    return root


def key_of(state: Path) -> Ed25519PrivateKey:
    return AuditKeys.load_or_create(state).signing_key


def anchors_file(state: Path) -> Path:
    return state.parent / "siem.jsonl"


def verify(state: Path, *extra: str) -> Any:
    result = runner.invoke(app, ["audit", "verify", "--store", str(state / "audit.sqlite3"), "--public-key",
                                 str(state / PUBLIC_KEY_FILE), *extra], env={"COLUMNS": "400"})
    assert "Traceback" not in result.output
    return result


def rows(state: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(state / "audit.sqlite3") as conn:
        return conn.execute("SELECT idx, ts, request_id, kind, fields, prev_hash, hash FROM audit_record "
                            "ORDER BY idx").fetchall()


def anchored_indexes(state: Path) -> list[int]:
    return [json.loads(line)["index"] for line in anchors_file(state).read_text().splitlines()
            if json.loads(line).get("kind") == "checkpoint"]


def rewrite(state: Path, keep: int, new_fields: list[dict[str, Any]], *, resign: bool) -> None:
    """Keep records ``0..keep-1``, replace the rest with ``new_fields`` re-chained; with ``resign``, sign the
    new head with the key beside the store (an attacker who has it) after dropping the checkpoints past ``keep``."""
    kept = rows(state)[:keep]
    prev = kept[-1][6] if kept else "0" * 64
    conn = sqlite3.connect(state / "audit.sqlite3")
    conn.execute("DELETE FROM audit_record WHERE idx >= ?", (keep,))
    conn.execute("DELETE FROM audit_checkpoint WHERE idx >= ?", (keep,))
    ts = T0 + 500
    for n, fields in enumerate(new_fields):
        record = make_record(keep + n, ts + n, f"forged-{n}", "decision", fields, prev)
        conn.execute("INSERT INTO audit_record VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (record.index, record.ts, record.request_id, record.kind, json.dumps(record.fields),
                      record.prev_hash, record.hash))
        prev = record.hash
    if resign and (keep or new_fields):
        head = keep + len(new_fields) - 1
        cp = sign_checkpoint(key_of(state), head, prev, ts + 100)
        conn.execute("INSERT OR REPLACE INTO audit_checkpoint VALUES (?, ?, ?, ?, ?)",
                     (cp.index, cp.hash, cp.ts, cp.key_id, cp.signature))
    conn.commit()
    conn.close()


def original_fields(state: Path, start: int, stop: int) -> list[dict[str, Any]]:
    return [json.loads(r[4]) for r in rows(state)[start:stop]]


def denied(fields: dict[str, Any]) -> dict[str, Any]:
    return {**fields, "decision": {"effect": "deny"}}


# --------------------------------------------------------------------------- the window


def test_clean_stop_signs_and_exports_the_last_record(state: Path) -> None:
    """After a clean stop the newest record is covered by a checkpoint that also reached the SIEM."""
    assert anchored_indexes(state)[-1] == RECORDS - 1
    result = verify(state, "--anchors", str(anchors_file(state)))
    assert result.exit_code == 0, result.output
    assert f"the latest covers records 0..{RECORDS - 1}" in result.output


# --------------------------------------------------------------------------- the attacks


TAIL = RECORDS - 1  # index of the last anchored record


@pytest.mark.parametrize(("name", "attack", "index", "says"), [
    # truncation: the last records, the last one, everything; store checkpoints past the cut dropped too
    ("truncate-last", lambda s: rewrite(s, RECORDS - 1, [], resign=False), RECORDS - 1, "tail truncated: the store"),
    ("truncate-half", lambda s: rewrite(s, RECORDS // 2, [], resign=True), RECORDS // 2, "tail truncated: the store"),
    ("truncate-all-but-one", lambda s: rewrite(s, 1, [], resign=True), 1, "tail truncated: the store"),
    # truncate then append as many forged records, re-chained, head re-signed with the key beside the store
    ("truncate-and-refill", lambda s: rewrite(s, RECORDS - 3, [{"forged": n} for n in range(3)], resign=True),
     None, "store re-chained"),
    ("truncate-and-append-more", lambda s: rewrite(s, RECORDS - 2, [{"forged": n} for n in range(5)], resign=True),
     None, "store re-chained"),
    # the last record rewritten (deny for allow) and re-chained, re-signed
    ("rewrite-last", lambda s: rewrite(s, RECORDS - 1, [denied(f) for f in original_fields(s, RECORDS - 1, RECORDS)],
                                       resign=True), TAIL, "store re-chained"),
    # a record in the middle rewritten, every later one re-chained, head re-signed
    ("rewrite-middle", lambda s: rewrite(s, 5, [denied(f) for f in original_fields(s, 5, 6)]
                                         + original_fields(s, 6, RECORDS), resign=True), None, "store re-chained"),
    # the whole store re-chained from genesis (all store checkpoints replaced)
    ("rechain-all", lambda s: rewrite(s, 0, [denied(f) for f in original_fields(s, 0, RECORDS)], resign=True),
     None, "store re-chained"),
    # without the key: the tail rewritten and re-chained, store checkpoints past it dropped
    ("rewrite-tail-no-key", lambda s: rewrite(s, RECORDS - 2, [denied(f) for f in original_fields(s, RECORDS - 2,
                                              RECORDS)], resign=False), None, "store re-chained"),
])
def test_tampered_tail_is_caught_by_anchors_kept_elsewhere(state: Path, name: str,
                                                                 attack: Callable[[Path], None], index: int | None,
                                                                 says: str) -> None:
    """Each rewrite of the store exits 1 with --anchors, naming the index and what happened."""
    attack(state)
    result = verify(state, "--anchors", str(anchors_file(state)))
    assert result.exit_code == 1, result.output
    assert says in result.output
    if index is None:  # the first anchor at or after the rewrite
        first = {"rewrite-middle": 5, "rechain-all": 0, "rewrite-tail-no-key": RECORDS - 2,
                 "truncate-and-refill": RECORDS - 3, "truncate-and-append-more": RECORDS - 2}[name]
        index = min(i for i in anchored_indexes(state) if i >= first)
    assert f"FAILED at index {index}:" in result.output
    assert "meaning:" in result.output


@pytest.mark.parametrize("name", ["truncate-and-resign", "rechain-all-and-resign", "rewrite-last-and-resign"])
def test_the_same_attacks_with_the_key_pass_the_store_alone(state: Path, name: str) -> None:
    """Whoever holds the key beside the store can make it verify on its own: that is why anchors exist."""
    if name == "truncate-and-resign":
        rewrite(state, RECORDS - 3, [], resign=True)
    elif name == "rechain-all-and-resign":
        rewrite(state, 0, [denied(f) for f in original_fields(state, 0, RECORDS)], resign=True)
    else:
        rewrite(state, RECORDS - 1, [denied(f) for f in original_fields(state, RECORDS - 1, RECORDS)], resign=True)
    assert verify(state).exit_code == 0
    assert verify(state, "--anchors", str(anchors_file(state))).exit_code == 1


def test_an_in_place_edit_is_reported_as_an_edit_even_with_anchors(state: Path) -> None:
    """An edit without re-chaining is named by the chain itself, at its own index."""
    with sqlite3.connect(state / "audit.sqlite3") as conn:
        conn.execute("UPDATE audit_record SET fields = json_set(fields, '$.decision.effect', 'deny') WHERE idx = 7")
    result = verify(state, "--anchors", str(anchors_file(state)))
    assert result.exit_code == 1 and "FAILED at index 7: record hash does not match" in result.output


# --------------------------------------------------------------------------- the anchor file itself


def plain_notes(state: Path) -> str:
    return "\n".join(json.loads(line)["note"] for line in anchors_file(state).read_text().splitlines()
                     if json.loads(line).get("kind") == "checkpoint")


def tamper_first_note(text: str, how: str, key: Ed25519PrivateKey) -> str:
    note_end = text.index("\n\n") + 1
    body, rest = text[:note_end], text[note_end:]
    lines = body.split("\n")
    if how == "size":
        lines[1] = str(int(lines[1]) + 1)
    elif how == "root":
        lines[2] = base64.b64encode(b"\x00" * 32).decode()
    elif how == "origin":
        lines[0] = "example.com/other-log"
    elif how == "other-key":
        other = Ed25519PrivateKey.generate()
        forged = sign_note(other, Checkpoint(int(lines[1]) - 1, base64.b64decode(lines[2]).hex(), T0, "", ""))
        return forged + rest[rest.index("\n", 1) + 1:]
    elif how == "leading-zero":
        lines[1] = "0" + lines[1]
    elif how == "no-signature":
        return body + "\n" + rest[rest.index("\n", 1) + 1:]
    elif how == "bad-base64":
        sig_end = rest.index("\n", 1)
        return body + rest[:sig_end - 4] + "!!!!" + rest[sig_end:]
    elif how == "control-char":
        lines[0] = lines[0] + "\r"
    return "\n".join(lines) + rest


@pytest.mark.parametrize("how", ["size", "root", "origin", "other-key", "leading-zero", "no-signature", "bad-base64",
                                 "control-char"])
def test_a_damaged_or_forged_anchor_fails_verification(state: Path, tmp_path: Path, how: str) -> None:
    """An anchor that does not verify with the public key is a finding, never silently skipped."""
    path = tmp_path / "notes.txt"
    path.write_text(tamper_first_note(plain_notes(state), how, key_of(state)))
    result = verify(state, "--anchors", str(path))
    assert result.exit_code == 1, result.output
    assert "FAILED: anchor file" in result.output and "line 1" in result.output


def test_plain_notes_and_an_export_work_as_anchors(state: Path, tmp_path: Path) -> None:
    """A file of concatenated signed notes anchors like the SIEM file; an intact store passes with it."""
    path = tmp_path / "notes.txt"
    path.write_text(plain_notes(state))
    assert verify(state, "--anchors", str(path)).exit_code == 0
    rewrite(state, RECORDS - 1, [], resign=True)
    result = verify(state, "--anchors", str(path))
    assert result.exit_code == 1 and "tail truncated: the store ends" in result.output


def test_an_anchor_file_without_checkpoints_fails(state: Path, tmp_path: Path) -> None:
    """Anchors that anchor nothing must not read as a pass."""
    path = tmp_path / "records-only.jsonl"
    path.write_text("".join(line + "\n" for line in anchors_file(state).read_text().splitlines()
                            if json.loads(line).get("kind") != "checkpoint"))
    result = verify(state, "--anchors", str(path))
    assert result.exit_code == 1 and "no checkpoint in the anchor file" in result.output


# --------------------------------------------------------------------------- the note format


def test_notes_follow_the_c2sp_signed_note_format(state: Path) -> None:
    """Origin, decimal size, base64 head hash, blank line, em-dash line with key hash || Ed25519 signature."""
    key = key_of(state)
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    for line in anchors_file(state).read_text().splitlines():
        obj = json.loads(line)
        if obj.get("kind") != "checkpoint":
            continue
        body, signature_line = obj["note"].split("\n\n")
        origin, size, root = body.split("\n")
        assert origin == origin_for(key.public_key()) and int(size) == obj["index"] + 1
        assert base64.b64decode(root).hex() == obj["head_hash"]
        dash, name, blob_b64 = signature_line.rstrip("\n").split(" ")
        assert dash == "\u2014" and name == origin
        blob = base64.b64decode(blob_b64)
        assert blob[:4] == hashlib.sha256(name.encode() + b"\n\x01" + raw).digest()[:4]
        key.public_key().verify(blob[4:], (body + "\n").encode())
        assert "hash" not in obj  # SIEM consumers de-duplicate records on "hash"


# --------------------------------------------------------------------------- anchors from a URL


class _Serve:
    """A loopback HTTP server answering every GET with ``status`` and ``body`` (and a redirect for 302)."""

    def __init__(self, status: int, body: bytes) -> None:
        import http.server
        import threading

        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(outer.status)
                if outer.status == 302:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.status, self.body = status, body
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/anchors?token=sekrit"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_anchors_can_be_fetched_from_a_url_and_catch_a_truncation(state: Path) -> None:
    """An http:// URL needs --allow-insecure-http; with it the served notes anchor like a file."""
    served = _Serve(200, plain_notes(state).encode())
    try:
        refused = verify(state, "--anchors", served.url)
        assert refused.exit_code == 1 and "must be https://" in refused.output and "sekrit" not in refused.output
        assert verify(state, "--anchors", served.url, "--allow-insecure-http").exit_code == 0
        rewrite(state, RECORDS - 1, [], resign=True)
        result = verify(state, "--anchors", served.url, "--allow-insecure-http")
        assert result.exit_code == 1 and "tail truncated: the store ends" in result.output
    finally:
        served.close()


@pytest.mark.parametrize(("status", "body", "says"), [
    (404, b"not found", "HTTP 404"),
    (302, b"", "HTTP 302"),
    (200, b"", "no checkpoint"),
    (200, b"\xff\xfe", "not UTF-8"),
    (200, b'{"kind": "decision"}\n', "no checkpoint"),
])
def test_a_url_that_serves_no_valid_anchors_fails(state: Path, status: int, body: bytes, says: str) -> None:
    """Errors, redirects (not followed), empty and non-UTF-8 answers fail the run, naming why."""
    served = _Serve(status, body)
    try:
        result = verify(state, "--anchors", served.url, "--allow-insecure-http")
    finally:
        served.close()
    assert result.exit_code == 1 and says in result.output, result.output
    assert "sekrit" not in result.output
