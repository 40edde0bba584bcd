"""Where the gateway writes its own state, worked out from ``gateway.yaml`` without validating it.

The loader reads a deployment directory as configuration and scans every file for literal
secrets. The gateway's state (development issuer and audit keys, the audit, approval and
revocation stores) holds private keys by design, so when an operator puts it inside the
deployment directory the loader must never read it, or the deployment stops loading after the
first start. Emergency revocation (``portcullis token revoke``) needs the revocation file even
when the rest of the deployment does not load, so this works from the raw YAML value and never
raises on a broken one.

Every path is resolved exactly as the gateway resolves it (relative to the working directory):

- the state directory: ``state_dir``, else ``$PORTCULLIS_STATE_DIR``, else ``./.portcullis``;
- the revocation list: ``identity.revocation_file``, else ``<state dir>/revocations.db``;
- the audit store: ``$PORTCULLIS_AUDIT_PATH``, else ``audit.path``, else in the state directory;
- the approval store: ``$PORTCULLIS_APPROVALS_PATH``, else ``approvals.path``, else in the state directory;
- the limit counters: ``$PORTCULLIS_COUNTERS_PATH``, else ``counters.sqlite3`` in the state directory;
- the kill switches: ``kill_switches.sqlite3`` in the state directory (``portcullis kill``).
- the alert monitor's baselines and first-seen sets: ``monitor_state.sqlite3`` in the state directory
  (``alerts.persist``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REVOCATIONS_FILE = "revocations.db"
# SQLite's companions of a database file, and the temporary name of an atomic write
_SIDECARS = ("-wal", "-shm", "-journal", ".tmp")


def state_dir_path(configured: str | None, environ: Mapping[str, str] | None = None) -> Path:
    """The gateway's state directory, absolute; nothing is created."""
    env = os.environ if environ is None else environ
    return Path(configured or env.get("PORTCULLIS_STATE_DIR") or ".portcullis").expanduser().resolve()


def _text(raw: Any, *keys: str) -> str | None:
    """``raw[k1][k2]…`` when every step is a mapping and the value a non-empty string, else None."""
    value = raw
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True)
class StatePaths:
    """The state directory and the state files the gateway writes (all absolute)."""

    state_dir: Path
    revocations: Path
    files: tuple[Path, ...]  # stores that may sit outside the state directory
    skip_state_dir: bool = True  # False: only ``files`` count (the state directory is the deployment itself)

    @classmethod
    def from_raw(cls, raw: Any, environ: Mapping[str, str] | None = None) -> StatePaths:
        """From the parsed (not validated) ``gateway.yaml`` mapping; anything malformed counts as unset."""
        env = os.environ if environ is None else environ
        state_dir = state_dir_path(_text(raw, "state_dir"), env)
        revocation_file = _text(raw, "identity", "revocation_file")
        revocations = Path(revocation_file).expanduser().resolve() if revocation_file else state_dir / REVOCATIONS_FILE
        audit = env.get("PORTCULLIS_AUDIT_PATH") or _text(raw, "audit", "path")
        approvals = env.get("PORTCULLIS_APPROVALS_PATH") or _text(raw, "approvals", "path")
        counters = env.get("PORTCULLIS_COUNTERS_PATH")
        files = tuple(Path(p).expanduser().resolve() for p in (audit, approvals, counters) if p)
        return cls(state_dir, revocations, (revocations, *files))

    def holds_file(self, real: Path) -> bool:
        """Whether the file ``real`` (absolute, resolved) is gateway state: inside the state
        directory, or one of the state files or its SQLite companions."""
        if self.skip_state_dir and self.state_dir in real.parents:
            return True
        return any(real.parent == f.parent and (real.name == f.name or any(
            real.name == f.name + suffix for suffix in _SIDECARS)) for f in self.files)

    def holds_dir(self, real: Path) -> bool:
        """Whether the directory ``real`` (absolute, resolved) is the state directory or inside it."""
        return self.skip_state_dir and (real == self.state_dir or self.state_dir in real.parents)
