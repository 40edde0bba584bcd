"""The audit trail's keys in the state directory: checkpoint signing and keyed hashing.

Files (created on first use, never overwritten):

* ``audit-signing.pem``      Ed25519 private key (PKCS#8 PEM), mode 0600 — signs checkpoints
* ``audit-signing.pub.pem``  its public key (SubjectPublicKeyInfo PEM), mode 0644 — verifies them;
                             copy it somewhere the gateway host cannot write, and verify with that copy
* ``audit-hmac.key``         32 random bytes, mode 0600 — keys :func:`~portcullis.audit.record.keyed_hash`

Rules, in the order :meth:`AuditKeys.load_or_create` follows them:

1. A missing file is created atomically and without clobbering: written to a fresh temporary
   name (``O_EXCL``), synced, then hard-linked into place; if another process linked first,
   its file wins and is loaded, so concurrent starts agree on one key.
2. An existing private file (signing key, HMAC key) must be a regular file that neither its
   group nor others can access (``mode & 0o077 == 0``, as ssh demands); otherwise fail closed.
3. The signing key must be Ed25519 and the HMAC key exactly 32 bytes.
4. The public file must hold the signing key's public key; a mismatch fails closed (someone
   replaced one of the two).

Every failure is a :class:`~portcullis.errors.ConfigError` naming the file, never its content.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from portcullis.audit.checkpoint import key_id
from portcullis.errors import ConfigError, Problem

SIGNING_KEY_FILE = "audit-signing.pem"
PUBLIC_KEY_FILE = "audit-signing.pub.pem"
HMAC_KEY_FILE = "audit-hmac.key"
HMAC_KEY_BYTES = 32
_MAX_KEY_FILE_BYTES = 16_384


@dataclass(frozen=True, slots=True)
class AuditKeys:
    """The gateway's audit keys. Build with :meth:`load_or_create`; never printed (``repr`` hides them)."""

    signing_key: Ed25519PrivateKey = field(repr=False)
    hmac_key: bytes = field(repr=False)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.signing_key.public_key()

    @property
    def key_id(self) -> str:
        """The id that checkpoints signed with this key carry (see ``checkpoint.key_id``)."""
        return key_id(self.public_key)

    @classmethod
    def load_or_create(cls, state_dir: str | Path) -> AuditKeys:
        """Load the three key files from ``state_dir``, creating what is missing (see the module rules)."""
        root = Path(state_dir)
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        signing_path = root / SIGNING_KEY_FILE
        create_once(signing_path, lambda: Ed25519PrivateKey.generate().private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()), 0o600)
        signing_key = _parse_private_key(signing_path, read_private(signing_path))

        hmac_path = root / HMAC_KEY_FILE
        create_once(hmac_path, lambda: secrets.token_bytes(HMAC_KEY_BYTES), 0o600)
        hmac_key = read_private(hmac_path)
        if len(hmac_key) != HMAC_KEY_BYTES:
            raise _problem(hmac_path, f"must hold exactly {HMAC_KEY_BYTES} bytes")

        public_path = root / PUBLIC_KEY_FILE
        create_once(public_path, lambda: _public_pem(signing_key.public_key()), 0o644)
        if _raw(load_public_key(public_path)) != _raw(signing_key.public_key()):
            raise _problem(public_path, f"does not match {SIGNING_KEY_FILE}; one of them was replaced")
        return cls(signing_key, hmac_key)


def public_key_path(state_dir: str | Path) -> Path:
    """Where :meth:`AuditKeys.load_or_create` keeps the public key in ``state_dir``."""
    return Path(state_dir) / PUBLIC_KEY_FILE


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file; :class:`ConfigError` if missing or not one."""
    target = Path(path)
    try:
        data = target.read_bytes()
        key = load_pem_public_key(data)
    except OSError as exc:
        raise _problem(target, f"cannot read the audit public key: {exc.strerror or type(exc).__name__}") from None
    except (ValueError, TypeError):
        raise _problem(target, "not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise _problem(target, "the audit public key must be Ed25519")
    return key


def _problem(path: Path, message: str) -> ConfigError:
    return ConfigError([Problem(path, None, message)])


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def _parse_private_key(path: Path, data: bytes) -> Ed25519PrivateKey:
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise _problem(path, "not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise _problem(path, "the audit signing key must be Ed25519")
    return key


def create_once(path: Path, make: Callable[[], bytes], mode: int) -> None:
    """Create ``path`` with ``make()``'s bytes unless it exists; never replaces an existing file."""
    if os.path.lexists(path):
        return
    data = make()
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # unlike rename, link refuses to replace: a concurrent creator's file wins
        except FileExistsError:
            return
        _fsync_dir(path.parent)
    except OSError as exc:
        raise _problem(path, f"cannot create: {exc.strerror or type(exc).__name__}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_private(path: Path) -> bytes:
    """Read a secret file after checking, on the open descriptor, that only its owner can access it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise _problem(path, f"cannot read: {exc.strerror or type(exc).__name__}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _problem(path, "is not a regular file")
        if info.st_mode & 0o077:
            raise _problem(path, f"is accessible by group or others (mode {stat.S_IMODE(info.st_mode):04o}); "
                           "refusing to use it: chmod 600 it, or replace the key if others may have read it")
        chunks: list[bytes] = []
        size = 0
        while size <= _MAX_KEY_FILE_BYTES and (chunk := os.read(fd, _MAX_KEY_FILE_BYTES + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise _problem(path, "is too large to be a key")
    return data
