"""Configuration of the confinement of a stdio service: ``services.<name>.sandbox`` (docs/sandbox.md).

On by default: a stdio child sees only the files it needs to run (computed by the gateway, plus
``read_only_paths`` and ``writable_paths``), has no network, and runs under memory, process,
open-file and CPU limits. The settings that weaken it are named ``unsafe_…``: the gateway warns
about each at every start, and ``portcullis lint`` reports each as a warning.
"""

from __future__ import annotations

import posixpath
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, model_validator

# Directories a service may not be given write access to (nor anything inside them): the view's own
# system parts and the host's configuration and run-time state.
_NO_WRITE = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/boot", "/run", "/var/run")
# Places the sandbox builds itself (its /proc, /dev and private /tmp, the kernel's /sys): nothing of the
# host's may be shown there.
_RESERVED = ("/proc", "/sys", "/dev", "/scratch")


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == root or path.startswith(root + "/") for root in roots)


def _absolute_path(value: str) -> str:
    """An absolute, normalised path with no ``..``, NUL or control characters (refused otherwise)."""
    if not value.startswith("/") or any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise ValueError("must be an absolute path without control characters")
    parts = value.split("/")
    if ".." in parts or "." in parts:
        raise ValueError("must not contain '.' or '..' components")
    normal = posixpath.normpath(value)
    return "/" + normal.lstrip("/") if normal != "/" else normal


# What each unsafe setting gives away: the lint warning and the gateway's warning at every start.
UNSAFE_SANDBOX_TEXT = {
    "unsafe_no_sandbox": "the service runs UNCONFINED (every file, the network and every resource of the "
                         "gateway's user)",
    "unsafe_host_network": "the confined service has the host's network (including services on its loopback)",
}

UNSEEN_PATH_TEXT = ("an absolute path outside the sandbox's declared paths: unless the gateway shows it (the "
                    "interpreter, the command's prefix), the child will not see it; add it to sandbox.read_only_paths")

HostPath = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_absolute_path)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


class StdioSandbox(_Model):
    """How a stdio service's child process is confined (bubblewrap: namespaces, seccomp, limits)."""

    unsafe_no_sandbox: StrictBool = Field(
        False, description="Run the child UNCONFINED: it sees every file, the network and every resource the "
        "gateway's user has. The gateway warns at every start; lint warns. Only the environment stays clean.")
    unsafe_host_network: StrictBool = Field(
        False, description="Give the confined child the host's network (default: none at all, not even the "
        "host's loopback). The gateway warns at every start; lint warns.")
    read_only_paths: tuple[HostPath, ...] = Field(
        (), max_length=64, description="Host paths (absolute) the child may read, at the same place, beyond what "
        "the gateway computes it needs: /usr and the system libraries; for 'module:' (or a command that is the "
        "gateway's own Python) the interpreter, its virtual environment and the module's package; for another "
        "command its installation prefix (the directory above its bin/, else its own directory); the service's cwd; "
        "the deployment's tools/ when the service enforces policies. A missing path fails the spawn.")
    writable_paths: tuple[HostPath, ...] = Field(
        (), max_length=64, description="Host paths (absolute) the child may read and write, at the same place. "
        "System directories (/, /usr, /etc, /proc, ...) are refused; whatever lies inside a writable path is writable "
        "too. Everything else it writes goes to a private /tmp that is discarded when the child exits.")
    memory_mb: int = Field(4096, ge=16, le=1_048_576, description="Address space each of the child's processes "
                           "may map. Runtimes reserve far more than they use: Node's V8 does not start in 1024.")
    max_processes: int = Field(64, ge=1, le=65_536, description="Most processes and threads in the child's "
                               "sandbox at once (a fork bomb stops there).")
    max_open_files: int = Field(256, ge=16, le=1_048_576, description="Most open file descriptors per process.")
    cpu_s: int | None = Field(None, ge=1, le=10_000_000, description="CPU seconds the child may use over its "
                              "whole life before it is killed (then restarted); unset: no limit (a service is "
                              "long-lived).")
    max_file_mb: int = Field(1024, ge=1, le=1_048_576, description="Largest file the child may write.")
    tmp_mb: int = Field(64, ge=1, le=65_536, description="Size of the child's private /tmp.")

    @model_validator(mode="after")
    def _consistent(self) -> StdioSandbox:
        for path in (*self.read_only_paths, *self.writable_paths):
            if path in ("/", "/tmp") or _under(path, _RESERVED):  # noqa: S108 - a path refused, not used
                raise ValueError("sandbox paths: '/', '/tmp', /proc, /sys and /dev cannot be shown from the host")
        for path in self.writable_paths:
            if _under(path, _NO_WRITE):
                raise ValueError("writable_paths: a system directory cannot be made writable")
        for path in self.read_only_paths:
            if _under(path, self.writable_paths):
                raise ValueError("read_only_paths: a path inside a writable path would be writable")
        return self

    def unsafe_flags(self) -> tuple[str, ...]:
        """The names of the ``unsafe_…`` settings turned on (for warnings and the audit record)."""
        return tuple(name for name in UNSAFE_SANDBOX_TEXT if getattr(self, name))


# Always visible inside the sandbox (the system view and the sandbox's own /proc and /dev).
_VISIBLE = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/dev")


def unseen_path_arguments(args: tuple[str, ...], cwd: str | None, box: StdioSandbox) -> list[int]:
    """The indexes of ``args`` that are absolute paths the confined child will not see: outside the
    system view, the declared paths and the cwd (a script given to an interpreter, say). The computed
    view (the interpreter, the command's prefix) is not known here, so this is a warning, not a refusal."""
    if box.unsafe_no_sandbox:
        return []
    shown = (*_VISIBLE, *box.read_only_paths, *box.writable_paths, *((cwd,) if cwd and cwd.startswith("/") else ()))
    return [i for i, arg in enumerate(args) if arg.startswith("/") and not _under(posixpath.normpath(arg), shown)]

