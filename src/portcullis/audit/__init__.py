"""The tamper-evident audit trail: hash-chained records, group commit, signed checkpoints.

Layers (each module's docstring states its contract):

* ``record``     value types and pure hashing rules (canonical JSON, chain hash, keyed hashes)
* ``store``      the ``AuditStore`` seam; ``SqliteAuditStore`` for the embedded default
* ``writer``     ``AuditWriter``: write-ahead group commit, fail closed, bounded queue
* ``checkpoint`` Ed25519-signed checkpoints of the head, at most ``every_s`` after any record
* ``note``       checkpoints as C2SP ``tlog-checkpoint`` signed notes (what leaves the machine)
* ``anchors``    reading checkpoints kept elsewhere (SIEM JSON lines, exports, notes, a URL)
* ``verify``     ``verify_chain`` (pure), ``verify_store``, ``verify_export``; anchors too
* ``export``     JSON-lines export

Seam for the pipeline: ``record = await writer.record("decision", request_id, fields)`` before
forwarding (``AuditUnavailable`` → deny), ``await writer.record("outcome", ...)`` after.
"""

from portcullis.audit.checkpoint import Checkpointer, CheckpointPolicy, key_id, sign_checkpoint
from portcullis.audit.errors import AuditUnavailable, ChainConflict
from portcullis.audit.export import MalformedExport, export_jsonl
from portcullis.audit.record import (
    GENESIS_HASH,
    AuditRecord,
    Checkpoint,
    canonical_bytes,
    hash_sensitive,
    keyed_hash,
    make_record,
)
from portcullis.audit.store import AuditStore, SqliteAuditStore
from portcullis.audit.verify import VerifyReport, verify_chain, verify_export, verify_store
from portcullis.audit.writer import AuditWriter

__all__ = [
    "GENESIS_HASH",
    "AuditRecord",
    "AuditStore",
    "AuditUnavailable",
    "AuditWriter",
    "ChainConflict",
    "Checkpoint",
    "CheckpointPolicy",
    "Checkpointer",
    "MalformedExport",
    "SqliteAuditStore",
    "VerifyReport",
    "canonical_bytes",
    "export_jsonl",
    "hash_sensitive",
    "key_id",
    "keyed_hash",
    "make_record",
    "sign_checkpoint",
    "verify_chain",
    "verify_export",
    "verify_store",
]
