"""C2SP signed-note checkpoints: the format we write, and a strict reader against hostile notes."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from portcullis.audit import sign_checkpoint
from portcullis.audit.anchors import BadAnchor, parse_anchors
from portcullis.audit.note import MalformedNote, origin_for, sign_note, verify_note

KEY = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()
HEAD = hashlib.sha256(b"head").hexdigest()
CHECKPOINT = sign_checkpoint(KEY, 41, HEAD, 1_800_000_000.0)
NOTE = sign_note(KEY, CHECKPOINT)
ORIGIN = origin_for(KEY.public_key())
BODY, SIGNATURES = NOTE.split("\n\n")


def cosign(note: str, key: Ed25519PrivateKey, name: str) -> str:
    """``note`` with one more signature line by ``key`` under ``name`` (a witness's cosignature)."""
    body = note[:note.index("\n\n") + 1]
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key_hash = hashlib.sha256(name.encode() + b"\n\x01" + raw).digest()[:4]
    return note + f"\u2014 {name} {base64.b64encode(key_hash + key.sign(body.encode())).decode()}\n"


def test_a_note_names_the_head_and_verifies() -> None:
    """Origin, size = index + 1, base64 head hash; reading it back gives the checkpoint's index and hash."""
    assert BODY.split("\n") == [ORIGIN, "42", base64.b64encode(bytes.fromhex(HEAD)).decode()]
    verified = verify_note(NOTE, KEY.public_key())
    assert (verified.index, verified.root_hash, verified.origin) == (41, HEAD, ORIGIN)


def test_a_witness_cosignature_beside_ours_is_accepted() -> None:
    """Signature lines by other names are skipped, before or after ours."""
    assert verify_note(cosign(NOTE, OTHER, "witness.example/w1"), KEY.public_key()).index == 41
    body, ours = NOTE.split("\n\n")
    witnessed = cosign(NOTE, OTHER, "witness.example/w1")
    reordered = body + "\n\n" + witnessed.split("\n")[-2] + "\n" + ours
    assert verify_note(reordered, KEY.public_key()).index == 41


def replace_line(note: str, n: int, text: str) -> str:
    lines = note.split("\n")
    lines[n] = text
    return "\n".join(lines)


HOSTILE = [
    ("size-plus-one", replace_line(NOTE, 1, "43"), "note signature invalid"),
    ("size-leading-zero", replace_line(NOTE, 1, "042"), "tree size"),
    ("size-plus-sign", replace_line(NOTE, 1, "+42"), "tree size"),
    ("size-negative", replace_line(NOTE, 1, "-42"), "tree size"),
    ("size-huge", replace_line(NOTE, 1, "9" * 20), "tree size"),
    ("size-unicode-digits", replace_line(NOTE, 1, "\u0664\u0662"), "tree size"),
    ("size-zero", "", "empty chain"),
    ("root-other", replace_line(NOTE, 2, base64.b64encode(b"\x01" * 32).decode()), "note signature invalid"),
    ("root-31-bytes", replace_line(NOTE, 2, base64.b64encode(b"\x01" * 31).decode()), "32 bytes"),
    ("root-hex-not-base64", replace_line(NOTE, 2, HEAD), "32 bytes"),
    ("root-urlsafe-base64", replace_line(NOTE, 2, base64.urlsafe_b64encode(b"\xff" * 32).decode()), "base64"),
    ("root-no-padding", replace_line(NOTE, 2, base64.b64encode(bytes.fromhex(HEAD)).decode().rstrip("=")),
     "base64"),
    ("origin-other", replace_line(NOTE, 0, "example.com/log"), "origin"),
    ("origin-homoglyph", replace_line(NOTE, 0, ORIGIN.replace("a", "\u0430", 1)), "origin"),
    ("origin-trailing-space", replace_line(NOTE, 0, ORIGIN + " "), "origin"),
    ("crlf-line-endings", NOTE.replace("\n", "\r\n"), "control characters"),
    ("nul-byte", NOTE.replace("\n\n", "\n\x00\n"), "control characters"),
    ("no-final-newline", NOTE[:-1], "newline"),
    ("no-blank-line", NOTE.replace("\n\n", "\n"), "blank line"),
    ("no-signature", BODY + "\n\n", "malformed signature line"),
    ("only-a-cosignature", cosign(BODY + "\n\n", OTHER, "witness.example/w1"), "no signature by"),
    ("signed-by-another-key-same-name", cosign(BODY + "\n\n", OTHER, ORIGIN), "no signature by"),
    ("hyphen-not-em-dash", NOTE.replace("\u2014", "-"), "malformed signature line"),
    ("two-spaces", NOTE.replace(f"\u2014 {ORIGIN} ", f"\u2014  {ORIGIN} "), "malformed signature line"),
    ("signature-truncated", NOTE[:-6] + "\n", "base64"),
    ("signature-bit-flipped", NOTE[:-4] + ("A" if NOTE[-4] != "A" else "B") + NOTE[-3:], "signature"),
    ("too-large", BODY + "\n" + "x" * 70_000 + "\n\n" + SIGNATURES, "too large"),
    ("body-only-two-lines", f"{ORIGIN}\n42\n\n{SIGNATURES}", "origin, size and root hash"),
]


@pytest.mark.parametrize(("name", "note", "says"), HOSTILE, ids=[row[0] for row in HOSTILE])
def test_a_hostile_note_is_refused_with_a_reason(name: str, note: str, says: str) -> None:
    """Every altered, forged or malformed note raises MalformedNote naming what is wrong."""
    if name == "size-zero":
        note = sign_note(KEY, sign_checkpoint(KEY, -1, HEAD, 0.0))
    with pytest.raises(MalformedNote, match=says):
        verify_note(note, KEY.public_key())


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=len(NOTE.encode()) - 1), st.integers(min_value=1, max_value=255))
def test_no_single_byte_change_of_a_note_still_verifies(position: int, xor: int) -> None:
    """Flip any byte of a valid note: it either fails to decode or fails verification, never reads as a checkpoint."""
    data = bytearray(NOTE.encode())
    data[position] ^= xor
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    with pytest.raises(MalformedNote):
        verify_note(text, KEY.public_key())


def test_concatenated_notes_and_json_lines_both_read_as_anchors() -> None:
    """A file of notes (blank lines between them allowed) and a SIEM JSON-lines file give the same anchors."""
    second = sign_note(KEY, sign_checkpoint(KEY, 50, HEAD, 1.0))
    anchors = list(parse_anchors(NOTE + "\n\n" + second, KEY.public_key()))
    assert [(a.index, a.where) for a in anchors] == [(41, "line 1"), (50, "line 8")]
    lines = "\n".join(json.dumps(x) for x in [{"kind": "decision", "hash": "x"}, {"kind": "checkpoint", "note": NOTE}])
    assert [a.index for a in parse_anchors(lines, KEY.public_key())] == [41]


@pytest.mark.parametrize(("text", "says"), [
    ('{"kind": "checkpoint"}', "without a note"),
    ('{"kind": "checkpoint", "note": 5}', "without a note"),
    ('{"type": "checkpoint", "index": 1}', "signature fields"),
    ('{"type": "checkpoint", "index": true, "hash": "00", "ts": 1, "key_id": "k", "signature": "00"}',
     "signature invalid"),
    ('{"kind": "decision"}\nnot json', "not JSON"),
    (NOTE.split("\n\n")[0] + "\n", "blank line"),
    (BODY + "\n\nnot a signature\n", "no signature line"),
], ids=["checkpoint-without-note", "checkpoint-note-not-string", "checkpoint-without-signature-fields",
        "checkpoint-bad-signature", "json-then-not-json", "note-without-blank-line", "note-without-signature"])
def test_a_malformed_anchor_file_names_the_line(text: str, says: str) -> None:
    """Malformed anchor entries raise BadAnchor with their line, never pass silently."""
    with pytest.raises(BadAnchor, match=says):
        list(parse_anchors(text, KEY.public_key()))
