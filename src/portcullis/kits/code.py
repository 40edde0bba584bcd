"""Code execution kit: run untrusted Python in the sandbox, one fresh scratch directory per call.

Each call runs ``python3 -I -S`` (isolated: no site, no user site, no ``PYTHON*`` variables) from the
read-only system runtime inside :mod:`portcullis.kits.sandbox`: no network, no host files beyond
``/usr``, an environment of two fixed variables, CPU-time, wall-time, memory, process-count and
output limits. The source travels on stdin, never through a file or argv.

Scratch: ``<scratch_root>/<sha256(tenant)[:32]>/<random>``, shown writable at ``/scratch`` (the
working directory) and removed when the call ends. A call sees only its own directory, so a write
in one call is invisible to the next call and to every other tenant even if a removal failed.

The ``limit`` of a result is ``cpu`` and ``wall`` and ``output`` from the sandbox itself; ``memory``
and ``processes`` come from the runner stub (:mod:`portcullis.kits.code_stub`, which also applies
Landlock where the kernel has it), which exits with a reserved status when the
code dies of ``MemoryError`` or a refused fork/thread. Code can fake those two statuses, which only
mislabels its own failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import shutil
from dataclasses import dataclass, field
from importlib import resources

from portcullis.kits.code_stub import MEMORY_EXIT, PROCESSES_EXIT
from portcullis.kits.sandbox import (
    SCRATCH_DEST,
    Bind,
    LimitHit,
    Limits,
    SandboxHost,
    SandboxSpec,
    SandboxSpecError,
    SandboxUnavailable,
    detect_host,
    run,
)

log = logging.getLogger(__name__)

# the runner executed inside the sandbox: Landlock (best effort), then the source from stdin
_RUNNER = resources.files("portcullis.kits").joinpath("code_stub.py").read_text(encoding="utf-8") + "\nmain()\n"
_STATUS_LIMITS: dict[int, LimitHit] = {MEMORY_EXIT: "memory", PROCESSES_EXIT: "processes"}
_CODE_ENV = (("PYTHONDONTWRITEBYTECODE", "1"), ("HOME", SCRATCH_DEST))


def _default_limits() -> Limits:
    return Limits(cpu_s=5, wall_s=10.0, memory_bytes=256 * 1024 * 1024, max_processes=16,
                  max_output_bytes=64 * 1024, max_open_files=64, max_file_bytes=8 * 1024 * 1024,
                  tmp_bytes=8 * 1024 * 1024)


@dataclass(frozen=True, slots=True)
class CodeKitConfig:
    """How the kit runs code; units are in the names."""

    scratch_root: str  # host directory for per-tenant scratch bases (created 0711 when missing)
    interpreter: str = "/usr/bin/python3"  # must be visible read-only in the sandbox (under /usr)
    interpreter_prefix: str | None = None  # bound read-only when the interpreter lives outside /usr
    limits: Limits = field(default_factory=_default_limits)
    max_source_bytes: int = 256 * 1024
    max_concurrent: int = 4

    def __post_init__(self) -> None:
        if not os.path.isabs(self.scratch_root) or not os.path.isabs(self.interpreter):
            raise SandboxSpecError(detail="scratch_root and interpreter must be absolute")
        if self.max_source_bytes < 1 or self.max_concurrent < 1:
            raise SandboxSpecError(detail="max_source_bytes and max_concurrent must be positive")


@dataclass(frozen=True, slots=True)
class CodeResult:
    """One run: capped output (marked truncated), exit status, the limit hit, duration."""

    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    exit_code: int | None  # None when the sandbox killed the run (wall clock, output)
    limit: LimitHit | None  # cpu | wall | memory | processes | output
    duration_s: float


def tenant_key(tenant: str) -> str:
    """The tenant's directory name: a hash, so no tenant id ever becomes a path."""
    if not tenant:
        raise SandboxSpecError(detail="empty tenant id")
    return hashlib.sha256(tenant.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class CodeRunner:
    """Runs untrusted Python, at most ``max_concurrent`` at a time."""

    def __init__(self, config: CodeKitConfig, host: SandboxHost | None = None) -> None:
        self.config = config
        self.host = host or detect_host()
        self._slots = asyncio.Semaphore(config.max_concurrent)

    def spec(self, scratch: str) -> SandboxSpec:
        """The sandbox spec for one call whose scratch directory is ``scratch``."""
        prefix = self.config.interpreter_prefix
        return SandboxSpec(
            argv=(self.config.interpreter, "-I", "-S", "-c", _RUNNER),
            env=_CODE_ENV,
            ro_binds=(Bind(prefix, prefix),) if prefix else (),
            scratch=scratch,
            network="none",
            limits=self.config.limits,
        )

    async def run(self, source: str, *, tenant: str) -> CodeResult:
        """Run ``source`` for ``tenant`` in a fresh scratch directory, removed afterwards."""
        data = source.encode("utf-8", "surrogatepass")
        if len(data) > self.config.max_source_bytes:
            raise SandboxSpecError("code too large")
        if not os.path.isfile(self.config.interpreter):
            raise SandboxUnavailable(detail="interpreter not found")
        if os.geteuid() == 0 and not _searchable(self.config.scratch_root):
            raise SandboxUnavailable(detail="scratch_root is not reachable by the sandbox's host id (needs o+x)")
        async with self._slots:
            scratch = self._make_scratch(tenant_key(tenant))
            try:
                result = await run(self.spec(scratch), self.host, stdin=data)
            finally:
                _wipe(scratch)
        limit = result.limit or (_STATUS_LIMITS.get(result.exit_code) if result.exit_code is not None else None)
        return CodeResult(
            stdout=result.stdout.decode("utf-8", "replace"), stderr=result.stderr.decode("utf-8", "replace"),
            stdout_truncated=result.stdout_truncated, stderr_truncated=result.stderr_truncated,
            exit_code=result.exit_code, limit=limit, duration_s=result.duration_s,
        )

    def _make_scratch(self, key: str) -> str:
        base = os.path.join(self.config.scratch_root, key)
        for path in (self.config.scratch_root, base):
            os.makedirs(path, mode=0o711, exist_ok=True)
        call = os.path.join(base, secrets.token_hex(16))
        os.mkdir(call, 0o700)
        if os.geteuid() == 0 and self.host.host_uid is not None:
            gid = self.host.host_gid if self.host.host_gid is not None else self.host.host_uid
            os.chown(call, self.host.host_uid, gid)
        return call


def _searchable(path: str) -> bool:
    """Every existing directory on the way to ``path`` lets others pass (bwrap binds as the host id)."""
    current = "/"
    for part in [p for p in os.path.normpath(path).split("/") if p]:
        current = os.path.join(current, part)
        try:
            mode = os.stat(current).st_mode
        except FileNotFoundError:
            return True  # created below with 0711
        if not mode & 0o001:
            return False
    return True


def _wipe(path: str) -> None:
    try:
        shutil.rmtree(path)  # fd-based: symlinks the code left are removed, never followed
    except OSError:
        log.warning("code kit: a scratch directory could not be removed")
