"""Signed checkpoints: an Ed25519 signature over ``{index, hash, ts}`` of the chain head.

A checkpoint pins the chain up to ``index``: rewriting any earlier record (even with every later
hash recomputed) or dropping the tail past it is caught by ``verify.py``. Between checkpoints
only the hash links protect the newest records, so checkpoint often (:class:`CheckpointPolicy`).

The signed bytes are ``DOMAIN || canonical_bytes({"hash", "index", "ts"})`` so a checkpoint
signature can never be replayed as any other signed object of the project.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from portcullis.audit.errors import AuditUnavailable
from portcullis.audit.record import Checkpoint, canonical_bytes
from portcullis.audit.store import AuditStore

DOMAIN = b"portcullis-audit-checkpoint-v1\n"
log = logging.getLogger(__name__)


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short, stable name for a verification key: the first 16 hex of sha256(raw key)."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def checkpoint_payload(index: int, hash_: str, ts: float) -> bytes:
    return DOMAIN + canonical_bytes({"index": index, "hash": hash_, "ts": ts})


def sign_checkpoint(private_key: Ed25519PrivateKey, index: int, hash_: str, ts: float) -> Checkpoint:
    signature = private_key.sign(checkpoint_payload(index, hash_, float(ts))).hex()
    return Checkpoint(index, hash_, float(ts), key_id(private_key.public_key()), signature)


def checkpoint_signature_ok(checkpoint: Checkpoint, public_key: Ed25519PublicKey) -> bool:
    """Whether ``checkpoint`` is signed by ``public_key`` (a wrong key id or malformed hex is a no)."""
    if checkpoint.key_id != key_id(public_key):
        return False
    try:
        public_key.verify(bytes.fromhex(checkpoint.signature),
                          checkpoint_payload(checkpoint.index, checkpoint.hash, checkpoint.ts))
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class CheckpointPolicy:
    """Checkpoint once ``every_records`` new records exist, and at most ``every_s`` after any record.

    ``every_s`` is the tail window: a durable record waits at most that long (plus the time to
    sign) before a checkpoint covers it, busy or idle (:meth:`Checkpointer.run` keeps the promise
    when no further record arrives). A record arriving after a quiet spell is signed at once.
    """

    every_records: int = 1000
    every_s: float = 1.0

    def __post_init__(self) -> None:
        if self.every_records < 1 or not self.every_s > 0:
            raise ValueError("checkpoint policy needs every_records >= 1 and every_s > 0")


def checkpoint_due(policy: CheckpointPolicy, last: tuple[int, float] | None, head_index: int, now: float,
                   *, force: bool = False) -> bool:
    """Pure rule: is a checkpoint of ``head_index`` due, given the last checkpoint's ``(index, ts)``?"""
    if last is None:
        return True
    if head_index <= last[0]:
        return False  # nothing new to sign
    return force or head_index - last[0] >= policy.every_records or now - last[1] >= policy.every_s


class Checkpointer:
    """Signs and stores checkpoints of a store's head when :func:`checkpoint_due` says so.

    The writer calls :meth:`after_append` after each durable batch; run :meth:`run` as a task so
    a record is signed at most ``policy.every_s`` later even if no other follows, and call
    ``tick(force=True)`` at shutdown. ``on_checkpoint`` receives each stored checkpoint (the
    gateway hands it to the SIEM exporters); its exceptions are logged, never raised.
    """

    def __init__(self, store: AuditStore, private_key: Ed25519PrivateKey, *, clock: Callable[[], float],
                 policy: CheckpointPolicy | None = None,
                 on_checkpoint: Callable[[Checkpoint], None] | None = None,
                 sleep: Callable[[float], Awaitable[Any]] = anyio.sleep) -> None:
        self._store, self._key, self._clock = store, private_key, clock
        self._policy = policy or CheckpointPolicy()
        self._on_checkpoint, self._sleep = on_checkpoint, sleep
        self._last: tuple[int, float] | None = None
        self._loaded = False
        self._unsigned = False  # a durable record waits for a checkpoint
        self._wake: anyio.Event | None = None  # run() waits on it while nothing is unsigned
        self._lock: anyio.Lock | None = None  # made on first use, inside the event loop

    @property
    def policy(self) -> CheckpointPolicy:
        return self._policy

    async def run(self) -> None:
        """Sign the unsigned tail at most ``every_s`` after the last checkpoint, forever (a task).

        Waits (no polling) until :meth:`after_append` leaves a record unsigned, then sleeps until
        that record's checkpoint is due and signs it. Cancel it to stop; then ``tick(force=True)``.
        A tail left unsigned by a crash is signed when it starts (or within the window).
        """
        await self.tick()
        while True:
            while not self._unsigned:
                self._wake = anyio.Event()
                await self._wake.wait()
            last_ts = self._last[1] if self._last is not None else self._clock()
            await self._sleep(max(0.0, last_ts + self._policy.every_s - self._clock()))
            if await self.tick() is None and self._unsigned:
                await self._sleep(min(1.0, self._policy.every_s))  # store failing: retry, don't spin

    async def after_append(self, head: tuple[int, str], *, force: bool = False) -> Checkpoint | None:
        """Checkpoint ``head`` if due; a failure is logged and retried next time (records stay durable).

        Serialised: the writer and :meth:`run` may both call it, and a threaded store suspends. The
        common case (nothing due) is decided without awaiting: it runs once per committed batch."""
        if self._loaded and not force and not checkpoint_due(self._policy, self._last, head[0], self._clock()):
            if self._last is not None and head[0] > self._last[0]:
                self._mark_unsigned()
            return None
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            return await self._after_append(head, force=force)

    async def _after_append(self, head: tuple[int, str], *, force: bool) -> Checkpoint | None:
        try:
            if not self._loaded:
                existing = await self._store.checkpoints()
                self._last = (existing[-1].index, existing[-1].ts) if existing else None
                self._loaded = True
            now = self._clock()
            if not checkpoint_due(self._policy, self._last, head[0], now, force=force):
                if self._last is not None and head[0] > self._last[0]:
                    self._mark_unsigned()
                return None
            checkpoint = sign_checkpoint(self._key, head[0], head[1], now)
            await self._store.add_checkpoint(checkpoint)
        except AuditUnavailable as exc:
            log.warning("audit checkpoint failed; will retry: %s", exc.detail)
            self._loaded = False
            self._mark_unsigned()
            return None
        self._last = (checkpoint.index, checkpoint.ts)
        self._unsigned = False
        if self._on_checkpoint is not None:
            try:
                self._on_checkpoint(checkpoint)
            except Exception as exc:  # an exporter's trouble never stops the chain
                log.warning("audit checkpoint export failed: %r", exc)
        return checkpoint

    def _mark_unsigned(self) -> None:
        self._unsigned = True
        if self._wake is not None:
            self._wake.set()

    async def tick(self, *, force: bool = False) -> Checkpoint | None:
        """Checkpoint the store's head if due, or if unsigned when ``force`` (quiet periods, shutdown)."""
        try:
            head = await self._store.head()
        except AuditUnavailable as exc:
            log.warning("audit checkpoint failed; will retry: %s", exc.detail)
            return None
        return None if head is None else await self.after_append(head, force=force)
