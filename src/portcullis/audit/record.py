"""Audit records and the pure rules that chain them.

Contract:

* A record's *body* is every field except ``hash``. Its canonical form is JSON with sorted keys,
  no whitespace, UTF-8, and no NaN or infinities (:func:`canonical_bytes` raises ``ValueError``).
* ``hash = sha256(prev_hash_ascii || canonical_bytes(body))`` as lowercase hex; the first record
  has index 0 and ``prev_hash`` = :data:`GENESIS_HASH` (64 zeros).
* Indexes are consecutive; each record's ``prev_hash`` is the previous record's ``hash``.
* Sensitive values are written as :func:`keyed_hash` digests: equal values give equal digests
  (so calls can be correlated) but the value cannot be read back without the audit key.

Everything here is a function over values; no I/O, no clock.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

GENESIS_HASH = "0" * 64
KINDS = frozenset({"decision", "outcome", "rejected", "approval", "retention", "attempt", "spawn",
                   "kill_switch", "alert", "policy_version", "service_identity"})
KEYED_HASH_PREFIX = "hmac-sha256:"
MIN_AUDIT_KEY_BYTES = 16


def canonical_bytes(value: Any) -> bytes:
    """Canonical JSON of ``value``; ``ValueError`` for NaN, infinities, lone surrogates or non-JSON types.

    orjson with sorted keys: compact, UTF-8, shortest round-trip floats, integers within 64 bits.
    orjson writes NaN and infinities as ``null``, so any ``null`` in the output is double-checked
    against the value (rare: the fields the gateway writes hold no ``None`` on the hot path).
    """
    try:
        out = orjson.dumps(value, option=_CANONICAL)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise ValueError(f"not canonical JSON: {type(exc).__name__}") from None
    if b"null" in out and _has_non_finite(value):
        raise ValueError("not canonical JSON: NaN or infinity")
    return out


_CANONICAL = orjson.OPT_SORT_KEYS


def _has_non_finite(value: Any) -> bool:
    # an explicit stack and exact-type checks first: ~10x faster than recursion over ABCs, and
    # this runs for every audit record that holds a null (most do)
    stack = [value]
    pop, push_all = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is str or kind is int or item is None or kind is bool:
            continue
        if kind is dict:
            push_all(item.values())
        elif kind is list or kind is tuple:
            push_all(item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, Mapping):
            push_all(item.values())
        elif isinstance(item, list | tuple):
            push_all(item)
    return False


def chain_hash(prev_hash: str, canonical: bytes) -> str:
    """``sha256(prev_hash || canonical)`` as lowercase hex."""
    return hashlib.sha256(prev_hash.encode("ascii") + canonical).hexdigest()


def keyed_hash(audit_key: bytes, value: Any) -> str:
    """``"hmac-sha256:<hex>"`` over the canonical JSON of ``value`` (so ``1`` and ``"1"`` differ)."""
    if len(audit_key) < MIN_AUDIT_KEY_BYTES:
        raise ValueError(f"audit key must be at least {MIN_AUDIT_KEY_BYTES} bytes")
    return KEYED_HASH_PREFIX + hmac.new(audit_key, canonical_bytes(value), hashlib.sha256).hexdigest()


def hash_sensitive(arguments: Mapping[str, Any], sensitive: Iterable[str], audit_key: bytes) -> dict[str, Any]:
    """A copy of ``arguments`` with the named top-level fields replaced by keyed hashes."""
    names = frozenset(sensitive)
    return {k: keyed_hash(audit_key, v) if k in names else v for k, v in arguments.items()}


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One link of the chain. Build with :func:`make_record`; check with :func:`record_hash_ok`."""

    index: int
    ts: float
    request_id: str
    kind: str
    fields: Mapping[str, Any]
    prev_hash: str
    hash: str
    # canonical JSON of ``fields`` when the writer already has it (saves re-serialising on append)
    fields_json: bytes | None = field(default=None, compare=False, repr=False)

    def body(self) -> dict[str, Any]:
        """Every field except ``hash``: what the hash covers."""
        return {"index": self.index, "ts": self.ts, "request_id": self.request_id, "kind": self.kind,
                "fields": self.fields, "prev_hash": self.prev_hash}

    def to_json(self) -> dict[str, Any]:
        return {**self.body(), "hash": self.hash}


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement that the chain's record ``index`` has hash ``hash`` (see ``checkpoint.py``)."""

    index: int
    hash: str
    ts: float
    key_id: str
    signature: str  # hex Ed25519 signature over checkpoint.checkpoint_payload(index, hash, ts)

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "hash": self.hash, "ts": self.ts, "key_id": self.key_id,
                "signature": self.signature}


def normalize_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A deep, JSON-normalised copy of ``fields`` (refuses what :func:`canonical_bytes` refuses)."""
    return normalize_fields_json(fields)[0]


def normalize_fields_json(fields: Mapping[str, Any]) -> tuple[dict[str, Any], bytes]:
    """:func:`normalize_fields`, and the canonical JSON it was made from (for :func:`make_record`)."""
    if not isinstance(fields, Mapping):
        raise ValueError("fields must be a mapping")
    text = canonical_bytes(dict(fields))
    normalized = orjson.loads(text)
    if not isinstance(normalized, dict):  # pragma: no cover - a Mapping always dumps to an object
        raise ValueError("fields must be a mapping")
    return normalized, text


def make_record(index: int, ts: float, request_id: str, kind: str, fields: Mapping[str, Any],
                prev_hash: str, *, fields_json: bytes | None = None) -> AuditRecord:
    """Build and hash one record; ``fields`` must already be normalised.

    ``fields_json``, when given, must be ``canonical_bytes(fields)`` (as
    :func:`normalize_fields_json` returns it): it is embedded as is instead of serialised again.
    """
    if kind not in KINDS:
        raise ValueError("unknown audit record kind")
    if not math.isfinite(ts):
        raise ValueError("timestamp must be finite")
    if fields_json is None:
        fields_json = canonical_bytes(fields)
    ts = float(ts)
    # the same bytes as canonical_bytes(record.body()): keys sorted, fields embedded pre-serialised
    body = orjson.dumps({"index": index, "ts": ts, "request_id": request_id, "kind": kind,
                         "fields": orjson.Fragment(fields_json), "prev_hash": prev_hash}, option=_CANONICAL)
    return AuditRecord(index, ts, request_id, kind, fields, prev_hash, chain_hash(prev_hash, body),
                       fields_json)


def record_hash_ok(record: AuditRecord) -> bool:
    """Whether ``record.hash`` is the hash of its own body (constant-time compare)."""
    try:
        expected = chain_hash(record.prev_hash, canonical_bytes(record.body()))
    except (ValueError, UnicodeEncodeError):
        return False
    return digest_equal(expected, record.hash)


def digest_equal(a: object, b: object) -> bool:
    """Constant-time equality of two hex digests as read from a store or an export.

    A tampered store can hold anything in a hash column (a BLOB, non-ASCII text, a number), which
    :func:`hmac.compare_digest` would raise on; anything that is not text is simply unequal.
    """
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))


def next_position(head: tuple[int, str] | None) -> tuple[int, str]:
    """The index and ``prev_hash`` that the record after ``head`` must carry."""
    return (0, GENESIS_HASH) if head is None else (head[0] + 1, head[1])


def continues(head: tuple[int, str] | None, batch: Sequence[AuditRecord]) -> bool:
    """Whether ``batch`` is non-empty, starts right after ``head`` and links record to record."""
    if not batch:
        return False
    index, prev = next_position(head)
    for record in batch:
        if record.index != index or record.prev_hash != prev:
            return False
        index, prev = index + 1, record.hash
    return True


_RECORD_KEYS = frozenset({"index", "ts", "request_id", "kind", "fields", "prev_hash", "hash"})


def record_from_json(obj: Any) -> AuditRecord:
    """Parse a record as written by :meth:`AuditRecord.to_json`; ``ValueError`` on any deviation."""
    if not isinstance(obj, dict) or set(obj) != _RECORD_KEYS:
        raise ValueError("record has the wrong keys")
    index, ts = obj["index"], obj["ts"]
    if type(index) is not int or type(ts) is not float:
        raise ValueError("record index or ts has the wrong type")
    strings = (obj["request_id"], obj["kind"], obj["prev_hash"], obj["hash"])
    if not all(isinstance(s, str) for s in strings) or not isinstance(obj["fields"], dict):
        raise ValueError("record field has the wrong type")
    return AuditRecord(index, ts, obj["request_id"], obj["kind"], obj["fields"], obj["prev_hash"], obj["hash"])


_CHECKPOINT_KEYS = frozenset({"index", "hash", "ts", "key_id", "signature"})


def checkpoint_from_json(obj: Any) -> Checkpoint:
    """Parse a checkpoint as written by :meth:`Checkpoint.to_json`; ``ValueError`` on any deviation."""
    if not isinstance(obj, dict) or set(obj) != _CHECKPOINT_KEYS:
        raise ValueError("checkpoint has the wrong keys")
    if type(obj["index"]) is not int or type(obj["ts"]) is not float:
        raise ValueError("checkpoint index or ts has the wrong type")
    if not all(isinstance(obj[k], str) for k in ("hash", "key_id", "signature")):
        raise ValueError("checkpoint field has the wrong type")
    return Checkpoint(obj["index"], obj["hash"], obj["ts"], obj["key_id"], obj["signature"])


MAX_REDACTED_KEY_CHARS = 128  # the keys kept when every value is hashed (pointer "")


def redact(arguments: Mapping[str, Any], pointers: Iterable[str], audit_key: bytes) -> dict[str, Any]:
    """A copy of ``arguments`` with the value at each RFC 6901 pointer replaced by its keyed hash.

    The pointer ``""`` (the whole arguments object) hashes every top-level value, keys kept."""
    out: Any = None
    for pointer in pointers:
        if pointer == "":
            return {str(k)[:MAX_REDACTED_KEY_CHARS]: keyed_hash(audit_key, v) for k, v in arguments.items()}
        parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
        if out is None:
            out = copy.deepcopy(dict(arguments))
        node = out
        for part in parts[:-1]:
            node = _child(node, part)
            if node is None:
                break
        else:
            last = parts[-1]
            if isinstance(node, dict) and last in node:
                node[last] = keyed_hash(audit_key, node[last])
            elif isinstance(node, list) and last.isdigit() and int(last) < len(node):
                node[int(last)] = keyed_hash(audit_key, node[int(last)])
    return dict(arguments) if out is None else out


def _child(node: Any, part: str) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return node[int(part)]
    return None
