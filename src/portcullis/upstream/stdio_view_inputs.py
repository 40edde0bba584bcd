"""The I/O edge of :mod:`.stdio_view`: where the interpreter, the module's package and the command live.

Everything here reads the gateway's own process (``sys``, the import system) or the file system
(``realpath``, ``exists``); :func:`view_inputs` gathers it for one service into a
:class:`~portcullis.upstream.stdio_view.ViewInputs`. Paths that do not exist are left out, except
declared ones: a declared path that is missing is an error at spawn (:class:`MissingViewPath`).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from portcullis.config.model import StdioService
from portcullis.service.env import POLICY_ROOT_ENV
from portcullis.upstream.stdio_view import PythonLayout, ViewInputs


class MissingViewPath(Exception):
    """A declared ``read_only_paths`` / ``writable_paths`` entry (or the cwd) does not exist."""


def python_layout() -> PythonLayout:
    """The gateway's interpreter: its prefixes (the installation and the virtual environment) and
    the directories of its executable, as they really are on disk."""
    prefixes = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, sys.exec_prefix)}
    prefixes |= {os.path.abspath(p) for p in (sys.prefix, sys.exec_prefix)}  # a venv reached through a link
    executable = sys.executable or ""
    dirs = {os.path.dirname(os.path.abspath(executable)), os.path.dirname(os.path.realpath(executable))}
    return PythonLayout(tuple(sorted(p for p in prefixes if os.path.isdir(p))),
                        tuple(sorted(d for d in dirs if os.path.isdir(d))))


def package_dirs(module: str) -> tuple[str, ...]:
    """Where the top-level package of ``module`` is imported from (its directories, or its file)."""
    top = module.split(".", 1)[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return ()
    if spec is None:
        return ()
    if spec.submodule_search_locations:
        return tuple(sorted(os.path.realpath(p) for p in spec.submodule_search_locations if os.path.isdir(p)))
    if spec.origin and os.path.isfile(spec.origin):
        return (os.path.realpath(spec.origin),)
    return ()


def command_dirs(resolved: str) -> tuple[str, ...]:
    """Where the resolved command is installed, and the file it links to: the directory above its
    ``bin/`` (an installation prefix: ``<prefix>/bin/node`` needs ``<prefix>/lib``), else its own."""
    dirs = set()
    for path in (resolved, os.path.realpath(resolved)):
        here = os.path.dirname(path)
        prefix = os.path.dirname(here) if os.path.basename(here) == "bin" else here
        dirs.add(here if prefix == "/" else prefix)  # /bin/cat: its directory, never the whole host
    return tuple(sorted(d for d in dirs if os.path.isdir(d)))


def runs_gateway_python(resolved: str) -> bool:
    """Whether ``resolved`` is the gateway's own interpreter (then it is given the interpreter's view)."""
    return bool(sys.executable) and os.path.realpath(resolved) == os.path.realpath(sys.executable)


def view_inputs(cfg: StdioService, argv: Sequence[str], child_env: Mapping[str, str]) -> ViewInputs:
    """The view's inputs for one spawn of ``cfg`` running ``argv`` (``argv[0]`` resolved) with ``child_env``."""
    box = cfg.sandbox
    for path in (*box.read_only_paths, *box.writable_paths):
        if not os.path.exists(path):
            raise MissingViewPath("a declared sandbox path does not exist")
    cwd = None
    if cfg.cwd is not None:
        cwd = os.path.realpath(cfg.cwd)
        if not os.path.isdir(cwd):
            raise MissingViewPath("the service's cwd is not a directory")
    policy_root = child_env.get(POLICY_ROOT_ENV)
    tools = None if not policy_root else os.path.join(os.path.realpath(policy_root), "tools")
    python = cfg.module is not None or runs_gateway_python(argv[0])
    return ViewInputs(
        python=python_layout() if python else None,
        package_dirs=package_dirs(cfg.module) if cfg.module is not None else (),
        command_dirs=() if python else command_dirs(argv[0]),
        cwd=cwd, policy_tools_dir=tools if tools is not None and Path(tools).is_dir() else None,
        read_only=box.read_only_paths, writable=box.writable_paths)
