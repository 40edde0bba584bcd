"""Checkpoints as C2SP ``tlog-checkpoint`` signed notes, so standard tooling can read them.

A note (https://c2sp.org/signed-note, https://c2sp.org/tlog-checkpoint) is::

    portcullis.audit/<key id>          origin line: names this chain and its signing key
    1234                               tree size: the number of records (head index + 1)
    q1x...=                            base64 (RFC 4648 section 4) of the 32-byte root hash
                                       blank line
    — portcullis.audit/<key id> BASE64(key hash || Ed25519 signature over the body)

The audit trail is a hash chain, not a Merkle tree: the "root hash" of a tree of size N is the
chain hash of record N-1 (the head), which commits to every earlier record through the
``prev_hash`` links. Consistency between two checkpoints is therefore checked by walking the
records between them (``verify.py``), not with a Merkle consistency proof; tooling that only
verifies signatures and compares sizes and hashes (witnesses that do not ask for proofs,
archivers, SIEM rules) works as is.

The key name is the origin. The 4-byte key hash is the first 4 bytes of
SHA-256(key name || 0x0A || 0x01 || raw Ed25519 public key), 0x01 being the Ed25519 signature
type, as the signed-note spec defines. The body is signed as is (ending in its newline); it
cannot be confused with the project's other signed objects, which start with a domain line
(``portcullis-audit-checkpoint-v1`` and others), never ``portcullis.audit/``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from portcullis.audit.checkpoint import key_id
from portcullis.audit.record import Checkpoint

ORIGIN_PREFIX = "portcullis.audit/"
EM_DASH = "\u2014"
ED25519_TYPE = b"\x01"
MAX_NOTE_BYTES = 64 * 1024
_SIZE = re.compile(r"0|[1-9][0-9]{0,18}")
_B64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


class MalformedNote(ValueError):
    """A note that is not a well-formed, validly signed checkpoint of this key."""


@dataclass(frozen=True, slots=True)
class NoteCheckpoint:
    """A verified note: the chain had ``size`` records and record ``size - 1`` hashed to ``root_hash``."""

    origin: str
    size: int
    root_hash: str  # lowercase hex, as the store keeps it

    @property
    def index(self) -> int:
        return self.size - 1


def origin_for(public_key: Ed25519PublicKey) -> str:
    """The origin line (and key name) of a chain signed by ``public_key``."""
    return ORIGIN_PREFIX + key_id(public_key)


def note_key_hash(name: str, public_key: Ed25519PublicKey) -> bytes:
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(name.encode() + b"\n" + ED25519_TYPE + raw).digest()[:4]


def note_body(origin: str, checkpoint: Checkpoint) -> str:
    root = base64.b64encode(bytes.fromhex(checkpoint.hash)).decode("ascii")
    return f"{origin}\n{checkpoint.index + 1}\n{root}\n"


def sign_note(private_key: Ed25519PrivateKey, checkpoint: Checkpoint) -> str:
    """``checkpoint`` as a signed note (text ending in a newline)."""
    public_key = private_key.public_key()
    origin = origin_for(public_key)
    body = note_body(origin, checkpoint)
    signature = note_key_hash(origin, public_key) + private_key.sign(body.encode())
    return f"{body}\n{EM_DASH} {origin} {base64.b64encode(signature).decode('ascii')}\n"


def _b64(text: str, what: str) -> bytes:
    if not _B64.fullmatch(text):
        raise MalformedNote(f"{what} is not base64")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedNote(f"{what} is not base64") from None


def verify_note(text: str, public_key: Ed25519PublicKey) -> NoteCheckpoint:
    """Parse ``text`` and check its signature by ``public_key``; :class:`MalformedNote` says why not.

    Strict: UTF-8 without control characters other than newline, the body and the signature
    block split at the last blank line, an origin equal to this key's, a decimal size without
    a sign or leading zero, a 32-byte root hash, and a signature line by this key name whose key
    hash and Ed25519 signature both match. Signature lines by other names (witnesses' cosignatures)
    are ignored; extension lines after the root hash are allowed, as the spec says.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_NOTE_BYTES:
        raise MalformedNote("note too large")
    if any((ord(c) < 0x20 and c != "\n") or c == "\x7f" for c in text):
        raise MalformedNote("note contains control characters")
    if not text.endswith("\n"):
        raise MalformedNote("note does not end in a newline")
    cut = text.rfind("\n\n")
    if cut < 0:
        raise MalformedNote("note has no blank line before its signatures")
    body, signatures = text[:cut + 1], text[cut + 2:]
    lines = body[:-1].split("\n")
    if len(lines) < 3:
        raise MalformedNote("checkpoint body needs origin, size and root hash lines")
    origin, size_text, root_text = lines[:3]
    expected = origin_for(public_key)
    if origin != expected:
        raise MalformedNote(f"origin {origin[:80]!r} is not this key's ({expected})")
    if not _SIZE.fullmatch(size_text):
        raise MalformedNote("tree size is not a decimal number")
    root = _b64(root_text, "root hash")
    if len(root) != 32:
        raise MalformedNote("root hash is not 32 bytes")
    key_hash = note_key_hash(origin, public_key)
    for line in signatures[:-1].split("\n"):
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != EM_DASH:
            raise MalformedNote("malformed signature line")
        if parts[1] != origin:
            continue  # a cosigner's line
        blob = _b64(parts[2], "signature")
        if len(blob) != 4 + 64 or blob[:4] != key_hash:
            continue
        try:
            public_key.verify(blob[4:], body.encode())
        except InvalidSignature:
            raise MalformedNote("note signature invalid") from None
        size = int(size_text)
        if size == 0:
            raise MalformedNote("a checkpoint of an empty chain anchors nothing")
        return NoteCheckpoint(origin, size, root.hex())
    raise MalformedNote(f"no signature by {origin}")


def checkpoint_export(private_key: Ed25519PrivateKey, checkpoint: Checkpoint) -> dict[str, object]:
    """The record a SIEM exporter receives for ``checkpoint``: its own kind, the signed note inside.

    The head's hash is under ``head_hash``, not ``hash``: exporters' consumers de-duplicate audit
    records on ``hash``, and a checkpoint is not that record.
    """
    return {"kind": "checkpoint", "index": checkpoint.index, "size": checkpoint.index + 1,
            "head_hash": checkpoint.hash, "ts": checkpoint.ts, "key_id": checkpoint.key_id,
            "signature": checkpoint.signature, "note": sign_note(private_key, checkpoint)}
