"""The checkpoint witness: what it keeps and what it refuses.

Hostile rows (posted notes): forged signatures, another key, another origin, a smaller size (a
rollback), the same size with another hash (a fork), a huge body, garbage, invalid UTF-8,
control characters, cosigner lines; a duplicate is accepted again without being kept twice.
The decision is a pure function; the same rows then go through the real ASGI app and its note
file, and the gateway's exporter is driven against that app (no stand-in for either side).
"""

from __future__ import annotations

import base64
import hashlib
import logging
from pathlib import Path
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portcullis.audit.anchors import parse_anchors
from portcullis.audit.note import EM_DASH, MAX_NOTE_BYTES, origin_for, sign_note
from portcullis.audit.record import Checkpoint
from portcullis.audit.siem.interface import ExportFailed
from portcullis.audit.siem.queue import ExportQueue
from portcullis.audit.witness.client import EXPORTER_NAME, WitnessConfig, WitnessExporter, build_witness_queue
from portcullis.audit.witness.decision import decide
from portcullis.audit.witness.server import NOTES_FILE, NoteStore, WitnessApp, WitnessStoreError
from portcullis.errors import ConfigError

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
PUBLIC = KEY.public_key()


def head(size: int, tag: str = "a") -> str:
    """The chain hash of a made-up chain of ``size`` records (``tag`` picks the chain)."""
    return hashlib.sha256(f"{tag}:{size}".encode()).hexdigest()


def note(size: int, tag: str = "a", key: Ed25519PrivateKey = KEY) -> str:
    return sign_note(key, Checkpoint(size - 1, head(size, tag), 0.0, "", ""))


def tampered_signature(text: str) -> str:
    body, _, sig = text.rpartition(" ")
    blob = bytearray(base64.b64decode(sig))
    blob[-1] ^= 1
    return f"{body} {base64.b64encode(bytes(blob)).decode()}\n"


def other_origin(text: str) -> str:
    """The same note under another origin line, signed by the right key."""
    origin = origin_for(PUBLIC)
    body = text.split("\n\n")[0].replace(origin, "portcullis.audit/evil", 1) + "\n"
    signature = base64.b64encode(b"0000" + KEY.sign(body.encode())).decode()
    return body + "\n" + f"{EM_DASH} portcullis.audit/evil {signature}\n"


HELD = {10: head(10), 20: head(20)}  # the witness holds sizes 10 and 20 of chain "a"
# (id, posted body, status, reason fragment or "", kept)
ROWS: list[tuple[str, bytes, int, str, bool]] = [
    ("newer", note(21).encode(), 200, "accepted", True),
    ("much-newer", note(10_000).encode(), 200, "accepted", True),
    ("duplicate-newest", note(20).encode(), 200, "already held", False),
    ("duplicate-older", note(10).encode(), 200, "already held", False),
    ("duplicate-with-a-cosigner-line", (note(20) + f"{EM_DASH} witness.example/w AAAA\n").encode(), 200,
     "already held", False),
    ("rollback-smaller-size", note(15).encode(), 409, "rollback: size 15", False),
    ("rollback-to-one", note(1).encode(), 409, "rollback: size 1", False),
    ("fork-same-size-other-hash", note(20, "b").encode(), 409, "fork: a checkpoint of size 20", False),
    ("fork-older-size", note(10, "b").encode(), 409, "fork: a checkpoint of size 10", False),
    ("forged-signature", tampered_signature(note(21)).encode(), 400, "signature invalid", False),
    ("another-key", note(21, key=OTHER).encode(), 400, "is not this key's", False),
    ("another-origin", other_origin(note(21)).encode(), 400, "is not this key's", False),
    ("huge-body", b"x" * (MAX_NOTE_BYTES + 1), 413, "larger than", False),
    ("huge-note", (note(21) + f"{EM_DASH} w/x " + "A" * MAX_NOTE_BYTES + "\n").encode(), 413, "larger than", False),
    ("garbage", b"\x00\xff garbage", 400, "not UTF-8", False),
    ("empty", b"", 400, "", False),
    ("json", b'{"kind": "checkpoint", "size": 21}', 400, "", False),
    ("control-characters", note(21).replace("\n\n", "\n\x1b[2J\n\n").encode(), 400, "control characters", False),
    ("carriage-returns", note(21).replace("\n", "\r\n").encode(), 400, "control characters", False),
    ("bidi-in-origin", note(21).replace("portcullis.audit/", "portcullis.audit/\u202e", 1).encode(), 400,
     "is not this key's", False),
    ("size-zero", sign_note(KEY, Checkpoint(-1, head(0), 0.0, "", "")).encode(), 400, "empty chain", False),
    ("size-leading-zero", note(21).replace("\n21\n", "\n021\n", 1).encode(), 400, "decimal", False),
    ("unsigned-body", note(21).split("\n\n")[0].encode() + b"\n\n", 400, "", False),
]


@pytest.mark.parametrize(("body", "status", "reason", "kept"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_the_decision(body: bytes, status: int, reason: str, kept: bool) -> None:
    """Pure: held checkpoints + a posted note → accept or refuse, and why."""
    verdict = decide(HELD, body, PUBLIC)
    assert (verdict.status, verdict.keep) == (status, kept), verdict
    assert reason in verdict.reason
    if verdict.accepted:  # what is kept verifies, and carries no line the poster added
        assert [a.index + 1 for a in parse_anchors(verdict.note, PUBLIC)] == [verdict.checkpoint.size]  # type: ignore[union-attr]
        assert "witness.example" not in verdict.note


# --------------------------------------------------------------------------- through the app


async def call(app: WitnessApp, method: str, path: str, body: bytes = b"") -> httpx2.Response:
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://witness") as client:
        return await client.request(method, path, content=body)


async def seeded(directory: Path) -> WitnessApp:
    app = WitnessApp(NoteStore(directory, PUBLIC), PUBLIC)
    for size in sorted(HELD):
        assert (await call(app, "POST", "/add-checkpoint", note(size).encode())).status_code == 200
    return app


@pytest.mark.parametrize(("body", "status", "reason", "kept"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
async def test_the_app_answers_and_keeps_as_decided(tmp_path: Path, body: bytes, status: int, reason: str,
                                                    kept: bool, caplog: pytest.LogCaptureFixture) -> None:
    """The same rows over HTTP: the status, the kept note (fsync'ed, read back at the next start), a
    plain-text answer without a stack trace, and escaped log fields."""
    app = await seeded(tmp_path)
    before = (tmp_path / NOTES_FILE).read_bytes()
    with caplog.at_level(logging.INFO, logger="portcullis.audit.witness"):
        answer = await call(app, "POST", "/add-checkpoint", body)
    assert answer.status_code == status
    assert answer.text == decide(HELD, body, PUBLIC).note if status == 200 else reason in answer.text
    assert "Traceback" not in answer.text and "\x1b" not in answer.text
    after = (tmp_path / NOTES_FILE).read_bytes()
    assert (after != before) == kept
    if kept:
        assert after.startswith(before) and answer.text in after.decode()
    served = (await call(app, "GET", "/checkpoints")).text
    assert served.encode() == after
    restarted = NoteStore(tmp_path, PUBLIC)  # the file reads back: every kept note verifies
    assert sorted(restarted.held) == sorted({*HELD, *([decide(HELD, body, PUBLIC).checkpoint.size] if kept else [])})  # type: ignore[union-attr]
    for record in caplog.records:
        assert "\x1b" not in str(getattr(record, "fields", {})) and "\u202e" not in str(getattr(record, "fields", {}))


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/add-checkpoint", 405), ("PUT", "/checkpoints", 405), ("POST", "/checkpoints", 405),
    ("GET", "/", 404), ("GET", "/checkpoints/../etc/passwd", 404), ("DELETE", "/add-checkpoint", 405)])
async def test_other_requests_are_refused(tmp_path: Path, method: str, path: str, status: int) -> None:
    app = await seeded(tmp_path)
    assert (await call(app, method, path)).status_code == status


async def test_an_announced_oversized_body_is_refused_unread(tmp_path: Path) -> None:
    app = await seeded(tmp_path)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://witness") as client:
        answer = await client.post("/add-checkpoint", content=b"x" * 10,
                                   headers={"content-length": str(MAX_NOTE_BYTES + 1)})
    assert answer.status_code == 413


@pytest.mark.parametrize("damage", [b"garbage\n", note(30, key=OTHER).encode(), b"\xff\xfe",
                                    tampered_signature(note(30)).encode()],
                         ids=["garbage", "another-key", "not-utf8", "forged"])
def test_a_damaged_note_file_stops_the_witness_from_starting(tmp_path: Path, damage: bytes) -> None:
    """The note file is evidence: one that no longer verifies is reported, not silently rewritten."""
    (tmp_path / NOTES_FILE).write_bytes(note(10).encode() + b"\n" + damage)
    with pytest.raises(WitnessStoreError):
        NoteStore(tmp_path, PUBLIC)


# --------------------------------------------------------------------------- the gateway's side


async def test_the_exporter_posts_notes_and_treats_a_refusal_as_permanent(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Against the real app: kept notes count as sent; a 409 is permanent and logged with the witness's
    reason; a record that is not a checkpoint is refused (counted), never posted."""
    app = await seeded(tmp_path)
    exporter = WitnessExporter("http://witness/add-checkpoint", allow_insecure_http=True,
                               transport=httpx2.ASGITransport(app=app))
    assert await exporter.send([{"kind": "checkpoint", "size": 21, "note": note(21)}]) == 0
    assert await exporter.send([{"kind": "decision", "hash": "x"}]) == 1
    with caplog.at_level(logging.ERROR, logger="portcullis.audit.witness"), pytest.raises(ExportFailed) as refused:
        await exporter.send([{"kind": "checkpoint", "size": 15, "note": note(15)}])
    assert refused.value.permanent
    assert any("rollback" in str(getattr(r, "fields", {})) for r in caplog.records)
    await exporter.aclose()


async def test_a_witness_that_is_down_never_blocks_and_is_counted(tmp_path: Path) -> None:
    """Nothing listens: offers return at once, attempts fail and are counted, nothing raises."""
    from tests.e2e.harness import free_port

    queue = ExportQueue([WitnessExporter(f"http://127.0.0.1:{free_port()}/add-checkpoint", allow_insecure_http=True,
                                         timeout_s=2)], max_batch=1, max_attempts=2, retry_initial_s=0,
                        retry_max_s=0, flush_timeout_s=5)
    async with queue:
        for size in (1, 2, 3):
            queue.offer({"kind": "checkpoint", "size": size, "note": note(size)})
    stats = queue.stats()[EXPORTER_NAME]
    assert stats.sent == 0 and stats.dropped == 3 and stats.failed_attempts >= 2


def test_the_token_is_a_secret_reference_and_never_in_an_error(tmp_path: Path) -> None:
    """token_ref must be secret://; a token that is not a header value is refused without quoting it."""
    with pytest.raises(ValueError, match="token_ref"):
        WitnessConfig.model_validate({"url": "https://w.example/add-checkpoint", "token_ref": "hunter2hunter2"})
    config = WitnessConfig.model_validate({"url": "https://w.example/add-checkpoint",
                                           "token_ref": "secret://env/WITNESS_TOKEN"})
    for bad in (b"two words", b"line\nbreak"):
        with pytest.raises(ConfigError) as refused:
            build_witness_queue(config, resolve_secret=lambda _ref, b=bad: b, base_dir=tmp_path)
        assert bad.decode() not in str(refused.value)
    queue = build_witness_queue(config, resolve_secret=lambda _ref: b"s3cr3t-token", base_dir=tmp_path)
    assert "s3cr3t" not in repr(queue.stats()) and list(queue.stats()) == [EXPORTER_NAME]


@pytest.mark.parametrize("settings", [{"url": "ftp://w.example/x"}, {"url": "http://w.example/x"},
                                      {"url": "https://user:pw@w.example/x"}, {"url": "https://w.example/x",
                                                                               "retry_initial_s": 5,
                                                                               "retry_max_s": 1},
                                      {"url": "https://w.example/x", "max_pending": 0},
                                      {"url": "https://w.example/x", "unknown": 1}])
def test_bad_witness_settings_are_configuration_errors(tmp_path: Path, settings: dict[str, Any]) -> None:
    with pytest.raises((ValueError, ConfigError)):
        build_witness_queue(WitnessConfig.model_validate(settings), resolve_secret=lambda _r: b"",
                            base_dir=tmp_path)
