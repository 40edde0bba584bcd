"""How one spawn of a stdio service is confined, and what the audit trail and the log say about it.

:class:`Confinement` is the decision for one spawn — the backend, the network mode, the file view
(:mod:`.stdio_view`), the limits, the ``unsafe_…`` settings in force and the *names* of the
environment variables the child is given. :func:`spawn_fields` turns it into the fields of the
``spawn`` audit record, and :func:`log_fields` into the log line's: names, labels, paths and
numbers, never an environment value. Pure; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from portcullis.config.model import StdioService
from portcullis.upstream.stdio_view import ViewPath

SPAWN_KIND = "spawn"
Backend = Literal["bubblewrap", "none"]
Network = Literal["none", "host"]


@dataclass(frozen=True, slots=True)
class Limits:
    memory_mb: int
    max_processes: int
    max_open_files: int
    cpu_s: int | None
    max_file_mb: int
    tmp_mb: int


@dataclass(frozen=True, slots=True)
class Confinement:
    """The confinement of one spawn of service ``service``."""

    service: str
    launcher: Literal["module", "command"]
    program: str  # the module name, or the command as configured (not its resolved path)
    backend: Backend
    network: Network
    view: tuple[ViewPath, ...]
    limits: Limits | None  # None: unconfined
    unsafe: tuple[str, ...]
    env_names: tuple[str, ...]

    @property
    def confined(self) -> bool:
        return self.backend != "none"


def confinement_for(service: str, cfg: StdioService, view: tuple[ViewPath, ...],
                    child_env: Mapping[str, str]) -> Confinement:
    """The confinement ``cfg`` asks for, with the computed ``view`` and the child's environment."""
    box = cfg.sandbox
    unconfined = box.unsafe_no_sandbox
    launcher: Literal["module", "command"] = "module" if cfg.module is not None else "command"
    return Confinement(
        service=service, launcher=launcher, program=cfg.module or cfg.command or "",
        backend="none" if unconfined else "bubblewrap",
        network="host" if unconfined or box.unsafe_host_network else "none",
        view=() if unconfined else view,
        limits=None if unconfined else Limits(box.memory_mb, box.max_processes, box.max_open_files, box.cpu_s,
                                              box.max_file_mb, box.tmp_mb),
        unsafe=box.unsafe_flags(), env_names=tuple(sorted(child_env)))


def spawn_fields(c: Confinement, *, outcome: str = "spawning", reason: str | None = None) -> dict[str, Any]:
    """The ``spawn`` audit record's fields (docs/audit.md)."""
    fields: dict[str, Any] = {
        "event": "spawn", "service": c.service, "launcher": c.launcher, "program": c.program,
        "outcome": outcome,
        "confinement": {
            "backend": c.backend, "network": c.network,
            "view": [{"path": v.path, "mode": "rw" if v.writable else "ro", "origin": v.origin} for v in c.view],
            "limits": None if c.limits is None else {
                "memory_mb": c.limits.memory_mb, "max_processes": c.limits.max_processes,
                "max_open_files": c.limits.max_open_files, "cpu_s": c.limits.cpu_s,
                "max_file_mb": c.limits.max_file_mb, "tmp_mb": c.limits.tmp_mb},
            "unsafe": list(c.unsafe)},
        "env_names": list(c.env_names),
    }
    if reason is not None:
        fields["reason"] = reason
    return fields


def log_fields(c: Confinement) -> dict[str, Any]:
    """The spawn log line's fields: short, escaped by the log formatter; no paths, no values."""
    return {"service": c.service, "backend": c.backend, "network": c.network, "view_paths": len(c.view),
            "writable_paths": sum(v.writable for v in c.view), "unsafe": ",".join(c.unsafe) or "none",
            **({} if c.limits is None else {"memory_mb": c.limits.memory_mb, "max_processes": c.limits.max_processes,
                                             "max_open_files": c.limits.max_open_files})}
