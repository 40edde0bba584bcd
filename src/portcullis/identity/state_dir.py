"""Where local state lives: the development issuer's key and the revocation list.

``gateway.yaml``'s ``state_dir``, else ``$PORTCULLIS_STATE_DIR``, else ``./.portcullis``. The
directory is created with mode 0700; files holding keys are written with mode 0600. The
deployment loader never reads it, wherever it is (:mod:`portcullis.config.state_paths`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from portcullis.config.state_paths import state_dir_path


def resolve_state_dir(configured: str | None, environ: Mapping[str, str] | None = None) -> Path:
    path = state_dir_path(configured, environ)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` readable by its owner only, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)
