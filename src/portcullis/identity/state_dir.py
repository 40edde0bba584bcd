"""Where local state lives: the development issuer's key and the revocation list.

``gateway.yaml``'s ``state_dir``, else ``$PORTCULLIS_STATE_DIR``, else ``./.portcullis``. The
directory is created with mode 0700; files holding keys are written with mode 0600. The
deployment loader never reads it, wherever it is (:mod:`portcullis.config.state_paths`).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from portcullis.config.state_paths import state_dir_path


def resolve_state_dir(configured: str | None, environ: Mapping[str, str] | None = None) -> Path:
    path = state_dir_path(configured, environ)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _write_temp(path: Path, data: bytes) -> Path:
    """Write ``data`` to a new owner-only file beside ``path``, named for this writer alone."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def write_private(path: Path, data: bytes) -> None:
    """Create or replace ``path`` readable by its owner only, atomically (concurrent writers never mix)."""
    tmp = _write_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def create_private_once(path: Path, data: bytes) -> bool:
    """Create ``path`` with ``data`` unless it exists; False when another writer created it first.

    The file appears whole or not at all (link of a finished temporary file, never replacing), so
    processes sharing a state directory all end up with the first writer's content.
    """
    tmp = _write_temp(path, data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True
