"""Anchors: checkpoints kept off the machine, read back to check a store's tail against.

``portcullis audit verify --anchors FILE`` accepts either

* JSON lines, as a SIEM JSON-lines exporter writes them (or a webhook receiver stores them):
  every object with ``"kind": "checkpoint"`` is an anchor through its C2SP ``note``, and every
  ``"type": "checkpoint"`` line of an ``audit export`` through its own signature fields; other
  objects (the audit records themselves) are skipped; or
* plain text: C2SP signed notes one after another (``note.py``), blank lines between them
  allowed, as a witness or an operator's ``cron`` job keeps them.

Every anchor must verify with the given public key. One that does not is reported, not
skipped: an anchor is evidence, and a forged or damaged one is a finding in itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from portcullis.audit.checkpoint import checkpoint_signature_ok
from portcullis.audit.note import EM_DASH, MalformedNote, verify_note
from portcullis.audit.record import Checkpoint

MAX_ANCHOR_FILE_BYTES = 256 * 1024 * 1024


class BadAnchor(ValueError):
    """An anchor that does not verify: ``where`` says which (line number)."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = where, reason


@dataclass(frozen=True, slots=True)
class Anchor:
    index: int
    hash: str
    where: str  # "line 12" of the anchor file


def read_anchors(path: str | Path, public_key: Ed25519PublicKey) -> list[Anchor]:
    """Every anchor in the file at ``path``; :class:`BadAnchor` at the first that does not verify."""
    data = Path(path).read_bytes()
    if len(data) > MAX_ANCHOR_FILE_BYTES:
        raise BadAnchor("file", "anchor file too large")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadAnchor("file", "anchor file is not UTF-8") from None
    anchors = list(parse_anchors(text, public_key))
    if not anchors:
        raise BadAnchor("file", "no checkpoint in the anchor file")
    return anchors


MAX_ANCHOR_URL_BYTES = 64 * 1024 * 1024


def fetch_anchors(url: str, public_key: Ed25519PublicKey, *, allow_insecure_http: bool = False,
                  timeout_s: float = 30.0) -> list[Anchor]:
    """The anchors served at ``url`` (a witness, a SIEM export endpoint): https only unless
    ``allow_insecure_http``; no redirects, no credentials in the URL, at most 64 MiB. Anchors are
    signed, so TLS guards availability and privacy here, not their authenticity."""
    import httpx2

    try:
        parsed = httpx2.URL(url)
    except httpx2.InvalidURL:
        raise BadAnchor("url", "not a valid URL") from None
    if parsed.scheme not in ("https", "http") or not parsed.host or parsed.userinfo:
        raise BadAnchor("url", "anchors URL must be https://host/... without credentials")
    if parsed.scheme == "http" and not allow_insecure_http:
        raise BadAnchor("url", "anchors URL must be https:// (--allow-insecure-http permits http://)")
    chunks: list[bytes] = []
    size = 0
    try:
        with httpx2.Client(timeout=timeout_s, follow_redirects=False) as client, \
                client.stream("GET", url) as response:
            if response.status_code != 200:
                raise BadAnchor("url", f"HTTP {response.status_code}")
            for chunk in response.iter_raw():
                size += len(chunk)
                if size > MAX_ANCHOR_URL_BYTES:
                    raise BadAnchor("url", "anchor document too large")
                chunks.append(chunk)
    except httpx2.TimeoutException:
        raise BadAnchor("url", "timed out") from None
    except (httpx2.HTTPError, httpx2.StreamError, OSError) as exc:
        raise BadAnchor("url", f"fetch failed: {type(exc).__name__}") from None
    try:
        text = b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        raise BadAnchor("url", "anchor document is not UTF-8") from None
    anchors = list(parse_anchors(text, public_key))
    if not anchors:
        raise BadAnchor("url", "no checkpoint in the anchor document")
    return anchors


def parse_anchors(text: str, public_key: Ed25519PublicKey) -> Iterator[Anchor]:
    stripped = text.lstrip()
    if stripped.startswith("{"):
        yield from _json_lines(text, public_key)
    else:
        yield from _notes(text, public_key)


def _json_lines(text: str, public_key: Ed25519PublicKey) -> Iterator[Anchor]:
    for line_no, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        where = f"line {line_no}"
        try:
            obj = json.loads(line)
        except ValueError:
            raise BadAnchor(where, "not JSON") from None
        if not isinstance(obj, dict):
            continue
        if obj.get("kind") == "checkpoint":  # as the SIEM exporters send it (note.checkpoint_export)
            note = obj.get("note")
            if not isinstance(note, str):
                raise BadAnchor(where, "checkpoint without a note")
            yield _from_note(note, public_key, where)
            continue
        if obj.get("type") != "checkpoint":
            continue  # an audit record, or another exporter's line
        try:
            checkpoint = Checkpoint(int(obj["index"]), str(obj["hash"]), float(obj["ts"]), str(obj["key_id"]),
                                    str(obj["signature"]))
        except (KeyError, TypeError, ValueError, OverflowError):
            raise BadAnchor(where, "checkpoint without a note or signature fields") from None
        if type(obj["index"]) is not int or not checkpoint_signature_ok(checkpoint, public_key):
            raise BadAnchor(where, "checkpoint signature invalid")
        yield Anchor(checkpoint.index, checkpoint.hash, where)


def _notes(text: str, public_key: Ed25519PublicKey) -> Iterator[Anchor]:
    """Split concatenated notes: body lines, one blank line, signature lines (starting with an em dash)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    i = 0
    while i < len(lines):
        if lines[i] == "":
            i += 1
            continue
        start = i
        while i < len(lines) and lines[i] != "":
            i += 1
        if i >= len(lines):
            raise BadAnchor(f"line {start + 1}", "note has no blank line before its signatures")
        i += 1  # the blank line
        signatures = i
        while i < len(lines) and lines[i].startswith(EM_DASH):
            i += 1
        if i == signatures:
            raise BadAnchor(f"line {start + 1}", "note has no signature line")
        yield _from_note("\n".join(lines[start:i]) + "\n", public_key, f"line {start + 1}")


def _from_note(note: str, public_key: Ed25519PublicKey, where: str) -> Anchor:
    try:
        verified = verify_note(note, public_key)
    except MalformedNote as exc:
        raise BadAnchor(where, str(exc)) from None
    return Anchor(verified.index, verified.root_hash, where)
