"""``portcullis audit witness``: an HTTP endpoint that keeps the gateway's checkpoints.

=======  ==================  ==========================================================
POST     ``/add-checkpoint`` body: one C2SP signed note (``text/plain``, at most 64 KiB).
                             200 with the kept note; 400 malformed or not signed by the
                             key; 409 a rollback or a fork (:mod:`.decision`); 413 too
                             large.
GET      ``/checkpoints``    every kept note, concatenated (``text/plain``): what
                             ``portcullis audit verify --anchors URL`` reads.
=======  ==================  ==========================================================

Kept notes are appended to ``<store>/checkpoints.notes`` (mode 0600) and fsync'ed before the
answer; at start the file is read back and every note in it must verify with the key, or the
witness does not start. Decisions are serialised (one lock), so two posts cannot both pass as
the newest. Answers are fixed texts or the decision's reason; nothing a poster sends is logged
unescaped, and no error carries a stack trace. The posted note is its own authentication (only
the holder of the gateway's signing key can make one), so the endpoint takes no token.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import anyio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from portcullis.audit.anchors import BadAnchor, parse_anchors
from portcullis.audit.keys import _fsync_dir
from portcullis.audit.note import MAX_NOTE_BYTES, origin_for
from portcullis.audit.witness.decision import MALFORMED, TOO_LARGE, decide
from portcullis.text import escape_invisible

log = logging.getLogger("portcullis.audit.witness")

NOTES_FILE = "checkpoints.notes"
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class WitnessStoreError(Exception):
    """The note file cannot be read back as notes of this key: the witness does not start."""


class NoteStore:
    """The append-only note file and, in memory, tree size → root hash of every note in it."""

    def __init__(self, directory: Path, public_key: Ed25519PublicKey) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = directory / NOTES_FILE
        self.held: dict[int, str] = {}
        if self.path.exists():
            try:
                text = self.path.read_bytes().decode("utf-8")
                self.held = {a.index + 1: a.hash for a in parse_anchors(text, public_key)}
            except UnicodeDecodeError:
                raise WitnessStoreError(f"{self.path}: not UTF-8") from None
            except BadAnchor as exc:
                raise WitnessStoreError(f"{self.path}: {exc}") from None
        else:
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            _fsync_dir(directory)

    def append(self, note: str, size: int, root_hash: str) -> None:
        """Append ``note`` (and a blank line) and fsync it, then hold it."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, (note + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        self.held[size] = root_hash

    def read(self) -> bytes:
        return self.path.read_bytes()


class WitnessApp:
    """The ASGI application (see the module docstring)."""

    def __init__(self, store: NoteStore, public_key: Ed25519PublicKey) -> None:
        self._store, self._key = store, public_key
        self.origin = origin_for(public_key)
        self._lock = anyio.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        try:
            status, body = await self._route(scope, receive)
        except Exception as exc:  # never a stack trace to the poster; the type only to the log
            log.error("witness request failed", extra={"fields": {"error": type(exc).__name__}})
            status, body = 500, b"internal error\n"
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]})
        await send({"type": "http.response.body", "body": body})

    async def _route(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        path, method = scope.get("path", ""), scope.get("method", "")
        if path == "/checkpoints":
            if method not in ("GET", "HEAD"):
                return 405, b"method not allowed\n"
            return 200, await anyio.to_thread.run_sync(self._store.read)
        if path != "/add-checkpoint":
            return 404, b"not found\n"
        if method != "POST":
            return 405, b"method not allowed\n"
        body = await _read_body(scope, receive, MAX_NOTE_BYTES)
        if body is None:
            verdict_status, reason = TOO_LARGE, f"note larger than {MAX_NOTE_BYTES} bytes"
            self._log(verdict_status, reason, None)
            return verdict_status, (reason + "\n").encode()
        async with self._lock:  # one decision at a time: two posts cannot both be "the newest"
            verdict = decide(self._store.held, body, self._key)
            if verdict.keep and verdict.checkpoint is not None:
                checkpoint = verdict.checkpoint
                await anyio.to_thread.run_sync(self._store.append, verdict.note, checkpoint.size,
                                               checkpoint.root_hash)
        self._log(verdict.status, verdict.reason, verdict.checkpoint.size if verdict.checkpoint else None)
        if verdict.accepted:
            return 200, verdict.note.encode("utf-8")
        return verdict.status, (escape_invisible(verdict.reason) + "\n").encode("utf-8")

    def _log(self, status: int, reason: str, size: int | None) -> None:
        fields = {"status": status, "reason": escape_invisible(reason[:300]), "size": size}
        if status == 200:
            log.info("witness kept checkpoint" if reason == "accepted" else "witness already holds checkpoint",
                     extra={"fields": fields})
        elif status in (MALFORMED, TOO_LARGE):
            log.warning("witness refused a malformed note", extra={"fields": fields})
        else:  # a rollback or a fork: the finding a witness exists for
            log.error("witness refused a checkpoint that contradicts what it holds", extra={"fields": fields})


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The request body, or None past ``limit`` bytes (announced or sent)."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            if not value.isdigit() or int(value) > limit:
                return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def serve(host: str, port: int, directory: Path, public_key: Ed25519PublicKey, *,
          ssl_certfile: str | None = None, ssl_keyfile: str | None = None) -> None:
    """Run the witness until interrupted (uvicorn; its access log off: paths are the poster's text)."""
    import uvicorn

    app = WitnessApp(NoteStore(directory, public_key), public_key)
    log.info("witness listening", extra={"fields": {"host": host, "port": port, "origin": app.origin,
                                                    "store": str(directory / NOTES_FILE),
                                                    "held": len(app._store.held)}})
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, server_header=False,
                h11_max_incomplete_event_size=16 * 1024, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
                timeout_keep_alive=5)
