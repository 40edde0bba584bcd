"""What a confined stdio child may see: the file view computed for one service. Pure; no I/O.

The view is the smallest set of host paths, each bound at the same place, that lets the
configured command run, labelled with why it is there (the label, not the path's content, is
what the audit record and the log name):

1. ``interpreter`` — for a ``module:`` service (and a ``command:`` that is the gateway's own
   Python), that Python: its installation prefix and the virtual environment (stdlib,
   site-packages), read-only;
2. ``package`` — the directories of the module's top-level package as the gateway imports it
   (an editable install's source directory), read-only;
3. ``command`` — for another ``command:`` service, the installation prefix of the resolved
   command and of the file it links to (the directory above its ``bin/``, else its own), read-only;
4. ``cwd`` — the service's working directory, read-only (unless declared writable; ``/`` and
   ``/tmp`` are the sandbox's own, never the host's);
5. ``policy`` — the deployment's ``tools/`` directory, read-only, when the service is told to
   enforce its tool policies (the service kit reads the manifests there; nothing else of the
   deployment, and never the gateway's state directory);
6. ``declared`` — ``sandbox.read_only_paths`` and ``sandbox.writable_paths``.

A path inside another read-only path of the view is dropped (it is already visible). The system
part of the view (``/usr``, the libraries, a private ``/tmp``, ``/dev``, ``/proc``) is the sandbox
backend's own and is not listed here.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

# Directories every sandbox has of its own: a cwd there is the sandbox's, nothing of the host is shown
_SANDBOX_OWN = ("/", "/tmp")  # noqa: S108 - names compared, nothing is opened
Origin = Literal["interpreter", "package", "command", "cwd", "policy", "declared"]


@dataclass(frozen=True, slots=True)
class ViewPath:
    """One host path the child sees at the same place."""

    path: str  # absolute, normalised
    writable: bool
    origin: Origin


@dataclass(frozen=True, slots=True)
class PythonLayout:
    """Where the gateway's interpreter lives, as :func:`python_layout` finds it (absolute paths)."""

    prefixes: tuple[str, ...]  # sys.base_prefix, sys.prefix, sys.exec_prefix (the venv)
    executable_dirs: tuple[str, ...]  # the directory of sys.executable and of its real file


@dataclass(frozen=True, slots=True)
class ViewInputs:
    """Everything the view depends on, resolved by the caller (the I/O edge)."""

    python: PythonLayout | None  # module: services
    package_dirs: tuple[str, ...]  # module: the top-level package's directories (or its file)
    command_dirs: tuple[str, ...]  # command: the resolved command's directory and its real file's
    cwd: str | None
    policy_tools_dir: str | None  # <deployment>/tools when the child enforces policies
    read_only: tuple[str, ...]
    writable: tuple[str, ...]


def file_view(inputs: ViewInputs) -> tuple[ViewPath, ...]:
    """The view for ``inputs`` (steps in the module doc), in a stable order, without duplicates."""
    wanted: list[ViewPath] = []
    if inputs.python is not None:
        wanted += _paths(inputs.python.prefixes + inputs.python.executable_dirs, "interpreter")  # 1
    wanted += _paths(inputs.package_dirs, "package")  # 2
    wanted += _paths(inputs.command_dirs, "command")  # 3
    writable = set(inputs.writable)
    if inputs.cwd is not None and inputs.cwd not in writable and inputs.cwd not in _SANDBOX_OWN:
        wanted += _paths((inputs.cwd,), "cwd")  # 4
    if inputs.policy_tools_dir is not None:
        wanted += _paths((inputs.policy_tools_dir,), "policy")  # 5
    wanted += _paths(inputs.read_only, "declared")  # 6
    wanted += [ViewPath(path, True, "declared") for path in inputs.writable]
    return _minimal(wanted)


def _paths(paths: Iterable[str], origin: Origin) -> list[ViewPath]:
    return [ViewPath(posixpath.normpath(p), False, origin) for p in paths if p.startswith("/")]


def _minimal(wanted: Sequence[ViewPath]) -> tuple[ViewPath, ...]:
    """Drop repeats and read-only paths already inside another read-only path. Parents come before
    the paths inside them (the backend binds in this order, the later on top): a writable path
    inside a read-only one is writable, a read-only one inside a writable one read-only."""
    read_only = {v.path for v in wanted if not v.writable}
    kept: dict[str, ViewPath] = {}
    for view in wanted:
        if view.path in kept:
            continue
        if not view.writable and any(_inside(view.path, other) for other in read_only if other != view.path):
            continue
        kept[view.path] = view
    return tuple(sorted(kept.values(), key=lambda v: (v.path.count("/"), v.path)))


def _inside(path: str, parent: str) -> bool:
    return parent == "/" or path.startswith(parent.rstrip("/") + "/")
