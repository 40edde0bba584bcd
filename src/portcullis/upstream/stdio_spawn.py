"""One spawn of a stdio service, decided, recorded and prepared (used by :mod:`.sdk_client`).

:func:`prepare_spawn` follows these steps for each (re)start of a child:

1. The file view (:mod:`.stdio_view`, inputs from :mod:`.stdio_view_inputs`) unless the service
   is ``unsafe_no_sandbox``; a declared path that is missing refuses the spawn.
2. The :class:`~portcullis.upstream.confinement.Confinement` and, when confined, the sandbox's
   launch (:mod:`.confined_spawn`); a sandbox that cannot confine refuses the spawn. The child's
   environment is never on a command line (``/proc/<pid>/cmdline`` is open to every local user): an
   unconfined child is started with it as its process environment, a confined one through bwrap's
   options descriptor.
3. A ``spawn`` audit record, durable before the child starts (``outcome: spawning``), or one that
   says the spawn was refused and why. No durable record, no child.
4. A log line naming the service, backend, network and limits (no paths, no values), a warning
   when an ``unsafe_…`` setting is in force.

A refused spawn raises :class:`SpawnRefused` (a fixed message; the log and the record carry the
reason); the service's supervisor retries with backoff, and the service stays down meanwhile.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcp import StdioServerParameters

from portcullis.config.model import StdioService
from portcullis.config.stdio_sandbox import UNSAFE_SANDBOX_TEXT, UNSEEN_PATH_TEXT, unseen_path_arguments
from portcullis.errors import ConfigError, Problem, UpstreamUnavailable
from portcullis.kits.sandbox import SandboxError
from portcullis.upstream.confined_spawn import StdioSandbox
from portcullis.upstream.confinement import Confinement, confinement_for, log_fields, spawn_fields
from portcullis.upstream.stdio_view import file_view
from portcullis.upstream.stdio_view_inputs import MissingViewPath, view_inputs

log = logging.getLogger("portcullis.upstream")

RecordSpawn = Callable[[Mapping[str, Any]], Awaitable[None]]


class SpawnRefused(UpstreamUnavailable):
    """The child was not started: it could not be confined (or recorded) as configured."""


@dataclass(frozen=True, slots=True)
class PreparedSpawn:
    """What :func:`~.stdio_bounded.bounded_stdio_client` starts, and what to undo once the child is gone."""

    params: StdioServerParameters
    pass_fds: tuple[int, ...] = ()
    cleanup: Callable[[], None] = field(default=lambda: None)
    confinement: Confinement | None = None


async def prepare_spawn(name: str, cfg: StdioService, argv: list[str], child_env: Mapping[str, str],
                        sandbox: StdioSandbox, record: RecordSpawn | None) -> PreparedSpawn:
    """Steps 1-4 of the module doc for one spawn of service ``name``."""
    box = cfg.sandbox
    cwd = None if cfg.cwd is None else os.path.realpath(cfg.cwd)
    try:
        view = () if box.unsafe_no_sandbox else file_view(view_inputs(cfg, argv, child_env))  # 1
    except MissingViewPath:
        await _refused(record, confinement_for(name, cfg, (), child_env), "view_path_missing")
        raise SpawnRefused(detail="a sandbox path does not exist") from None
    c = confinement_for(name, cfg, view, child_env)
    if not c.confined:  # exactly child_env, as the process's environment: never on a command line (ps shows it)
        prepared = PreparedSpawn(StdioServerParameters(command=argv[0], args=argv[1:], env=dict(child_env), cwd=cwd),
                                 confinement=c)
    else:
        try:
            launch = sandbox.launch(c, argv, child_env, cwd)  # 2
        except SandboxError as exc:
            await _refused(record, c, "sandbox_unavailable")
            log.error("stdio service not started: it cannot be confined", extra={"fields": {
                "service": name, "error": type(exc).__name__, "detail": getattr(exc, "detail", None)}})
            raise SpawnRefused(detail="sandbox unavailable") from None
        # bwrap gets none of the gateway's environment; the child's is in bwrap's options descriptor
        prepared = PreparedSpawn(StdioServerParameters(command=launch.argv[0], args=launch.argv[1:], env={}),
                                 launch.pass_fds, launch.cleanup, c)
    try:
        if record is not None:
            await record(spawn_fields(c))  # 3
    except BaseException:
        prepared.cleanup()
        raise
    fields = log_fields(c)
    if c.unsafe:  # 4
        log.warning("stdio service spawning with its confinement weakened (unsafe_ settings)",
                    extra={"fields": fields})
    else:
        log.info("stdio service spawning", extra={"fields": fields})
    return prepared


def check_confinement(name: str, cfg: StdioService, sandbox: StdioSandbox) -> StdioSandbox:
    """At every gateway start: a warning per ``unsafe_…`` setting; a sandbox that cannot confine the
    service is a configuration error (``serve`` exits), never an unconfined child. Returns ``sandbox``."""
    for flag in cfg.sandbox.unsafe_flags():
        log.warning(f"services.{name}.sandbox.{flag}: {UNSAFE_SANDBOX_TEXT[flag]}",
                    extra={"fields": {"service": name, "setting": flag}})
    for index in unseen_path_arguments(cfg.args, cfg.cwd, cfg.sandbox):
        log.warning(f"services.{name}.args[{index}]: {UNSEEN_PATH_TEXT}", extra={"fields": {"service": name}})
    if cfg.sandbox.unsafe_no_sandbox:
        return sandbox
    try:
        sandbox.check()
    except SandboxError as exc:
        raise ConfigError([Problem(path=Path("gateway.yaml"), line=None, message=(
            f"services.{name}: the stdio service cannot be confined ({exc.detail}); install bubblewrap "
            "(scripts/bootstrap.sh) or set its sandbox.unsafe_no_sandbox: true"))]) from None
    return sandbox


async def _refused(record: RecordSpawn | None, c: Confinement, reason: str) -> None:
    if record is not None:
        await record(spawn_fields(c, outcome="refused", reason=reason))
