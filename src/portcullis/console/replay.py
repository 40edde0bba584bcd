"""The policy replay-diff the console runs: ``portcullis policy diff … --format json`` in a CHILD process.

The gateway never evaluates a stored version's Rego in its own process (docs/decisions.md), so the
replay runs as ``sys.executable -m portcullis policy diff`` (an argv list, no shell) against the
deployment directory, state directory and audit store the gateway itself uses. Bounded everywhere: the
version ids must look like the policy store's ids, the window is one of :data:`WINDOWS`, ``--limit`` is
:data:`LIMIT`, the child is killed after ``timeout_s``, its stdout is read up to :data:`MAX_OUTPUT` bytes,
its stderr is discarded (it may name paths), and one replay runs at a time per gateway (:class:`ReplayBusy`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from portcullis.errors import PortcullisError

log = logging.getLogger("portcullis.console")

VERSION_ID = re.compile(r"(ps|pv)-[0-9a-f]{1,64}")  # the CLI's (cli/policy_replay_cmd.py), full match
WINDOWS = ("1h", "24h", "7d")
LIMIT = 10_000
MAX_OUTPUT = 8 * 1024 * 1024
TIMEOUT_S = 60.0


class ReplayBusy(PortcullisError):
    """Another replay is running in this gateway."""

    status, message = 409, "A replay is running; try again when it has finished."


class ReplayFailed(PortcullisError):
    """The child failed, timed out or answered something unreadable; ``message`` is safe to show."""

    status, message = 502, "The replay failed."

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out
        if timed_out:
            self.status = 504


class Replayer(Protocol):
    async def run(self, old: str, new: str, window: str) -> dict[str, Any]: ...


def valid(old: str, new: str, window: str) -> bool:
    return bool(VERSION_ID.fullmatch(old) and VERSION_ID.fullmatch(new)) and window in WINDOWS


class ChildReplayer:
    """Runs the replay in a child process, one at a time."""

    def __init__(self, deployment_dir: Path, state_dir: Path, audit_file: Path | None,
                 environ: Mapping[str, str] | None = None, *, timeout_s: float = TIMEOUT_S,
                 max_output: int = MAX_OUTPUT) -> None:
        self.deployment_dir, self.state_dir = deployment_dir.resolve(), state_dir.resolve()
        self.audit_file = None if audit_file is None else audit_file.resolve()  # None: the PostgreSQL trail
        self.environ = None if environ is None else dict(environ)
        self.timeout_s, self.max_output = timeout_s, max_output
        self._lock = asyncio.Lock()
        self.started = 0  # children started (tests)
        self.last_exit: int | None = None  # the last child's exit code (tests)

    def argv(self, old: str, new: str, window: str) -> list[str]:
        if not valid(old, new, window):
            raise ValueError("replay arguments")
        store = [] if self.audit_file is None else ["--store", str(self.audit_file)]
        return [sys.executable, "-m", "portcullis", "policy", "diff", "--from", old, "--to", new, "--window", window,
                "--config", str(self.deployment_dir), "--state-dir", str(self.state_dir), *store,
                "--limit", str(LIMIT), "--format", "json"]

    async def run(self, old: str, new: str, window: str) -> dict[str, Any]:
        argv = self.argv(old, new, window)
        if self._lock.locked():
            raise ReplayBusy()
        async with self._lock:
            return await self._child(argv)

    async def _child(self, argv: list[str]) -> dict[str, Any]:
        try:
            child = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL, env=self.environ, start_new_session=True)
        except OSError:
            log.error("console: the policy replay could not start")
            raise ReplayFailed("The replay could not be started.") from None
        self.started += 1
        try:
            out = await asyncio.wait_for(self._read(child), self.timeout_s)
            code = await asyncio.wait_for(child.wait(), self.timeout_s)
        except TimeoutError:
            log.warning("console: the policy replay timed out", extra={"fields": {"timeout_s": self.timeout_s}})
            raise ReplayFailed(f"The replay did not finish within {self.timeout_s:g} s and was stopped.",
                               timed_out=True) from None
        finally:
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
                await child.wait()
            self.last_exit = child.returncode
        if out is None:
            raise ReplayFailed("The replay's answer was too large to show; try a shorter window.")
        if code != 0:
            log.warning("console: the policy replay failed", extra={"fields": {"exit_code": code}})
            raise ReplayFailed("The replay failed: one of the versions or the audit trail could not be read "
                               f"(exit code {code}; run `portcullis policy diff` for details).")
        try:
            answer = json.loads(out)
        except (UnicodeDecodeError, ValueError):
            raise ReplayFailed("The replay's answer could not be read.") from None
        if not isinstance(answer, dict):
            raise ReplayFailed("The replay's answer could not be read.")
        return answer

    async def _read(self, child: asyncio.subprocess.Process) -> bytes | None:
        """The child's stdout, or None past :attr:`max_output` bytes (the child is then killed)."""
        assert child.stdout is not None
        out = bytearray()
        while chunk := await child.stdout.read(65_536):
            out += chunk
            if len(out) > self.max_output:
                child.kill()
                return None
        return bytes(out)
