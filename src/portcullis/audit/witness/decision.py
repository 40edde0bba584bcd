"""The witness's decision on one posted checkpoint note: pure, no I/O.

A note is accepted when it is a checkpoint signed by the configured key (``note.verify_note``:
its origin, signature, size and root hash) and agrees with every checkpoint already held:

* same size and root hash as a held one: accepted again, nothing new to keep (idempotent, so a
  gateway retrying a send never sees a refusal);
* same size, another root hash: **fork** (409) — the chain was re-written under that size;
* smaller than the newest held size and not held: **rollback** (409) — the chain was truncated
  and is growing again from an earlier point;
* larger than the newest: accepted and kept.

The chain is a hash chain, not a Merkle tree, so there is no consistency proof to check between
two sizes: whether the records between two accepted checkpoints extend each other is for
``portcullis audit verify --anchors`` to check against the store, not for the witness.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from portcullis.audit.note import MAX_NOTE_BYTES, MalformedNote, NoteCheckpoint, verify_note

ACCEPTED, MALFORMED, CONFLICT, TOO_LARGE = 200, 400, 409, 413


@dataclass(frozen=True, slots=True)
class Verdict:
    """``status`` is the HTTP status the witness answers; ``keep`` says whether ``note`` is new."""

    status: int
    reason: str
    checkpoint: NoteCheckpoint | None = None
    note: str = ""  # the canonical note (body and the origin's signature line) when accepted
    keep: bool = False

    @property
    def accepted(self) -> bool:
        return self.status == ACCEPTED


def decide(held: Mapping[int, str], body: bytes, public_key: Ed25519PublicKey) -> Verdict:
    """The verdict on ``body`` (a posted note) given ``held`` (tree size → root hash, lowercase hex)."""
    if len(body) > MAX_NOTE_BYTES:
        return Verdict(TOO_LARGE, f"note larger than {MAX_NOTE_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return Verdict(MALFORMED, "note is not UTF-8")
    try:
        checkpoint = verify_note(text, public_key)
    except MalformedNote as exc:
        return Verdict(MALFORMED, str(exc))
    note = canonical(text, checkpoint.origin)
    known = held.get(checkpoint.size)
    if known is not None:
        if known == checkpoint.root_hash:
            return Verdict(ACCEPTED, "already held", checkpoint, note)
        return Verdict(CONFLICT, f"fork: a checkpoint of size {checkpoint.size} with another root hash is held",
                       checkpoint)
    newest = max(held, default=0)
    if checkpoint.size < newest:
        return Verdict(CONFLICT, f"rollback: size {checkpoint.size} is smaller than the newest held ({newest})",
                       checkpoint)
    return Verdict(ACCEPTED, "accepted", checkpoint, note, keep=True)


def canonical(text: str, origin: str) -> str:
    """A verified note reduced to its body and its origin's signature lines: cosigners' lines
    (arbitrary text from whoever posted) are not kept or served."""
    cut = text.rfind("\n\n")
    body, signatures = text[:cut + 1], text[cut + 2:]
    own = [line for line in signatures[:-1].split("\n") if line.split(" ")[1:2] == [origin]]
    return body + "\n" + "".join(f"{line}\n" for line in own)


__all__ = ["ACCEPTED", "CONFLICT", "MALFORMED", "TOO_LARGE", "Verdict", "canonical", "decide"]
