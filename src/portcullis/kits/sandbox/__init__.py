"""Confined child processes: bubblewrap namespaces, a seccomp filter, rlimits (docs/sandbox.md).

Build a frozen :class:`SandboxSpec`, get this host's :class:`SandboxHost` from :func:`detect_host`,
then ``await run(spec, host)`` for a child that runs to completion, or :func:`bwrap_options`,
:func:`options_fd` and :func:`build_argv` for a long-lived child that another spawner starts (stdio
services): bwrap reads its options, the environment among them, from a descriptor, never from its
command line. Failures to confine raise :class:`SandboxUnavailable`: nothing ever runs unconfined.
"""

from portcullis.kits.sandbox.argv import build_argv, bwrap_options, launch_argv, limit_args, options_fd
from portcullis.kits.sandbox.errors import SandboxError, SandboxSpecError, SandboxUnavailable
from portcullis.kits.sandbox.probe import Capabilities, capabilities, detect_host
from portcullis.kits.sandbox.run import LimitHit, SandboxResult, classify, run, spawn_identity
from portcullis.kits.sandbox.seccomp import DENIED, compile_filter, filter_fd, filter_file
from portcullis.kits.sandbox.spec import SCRATCH_DEST, Bind, Limits, Network, SandboxHost, SandboxSpec

__all__ = [
    "DENIED", "SCRATCH_DEST", "Bind", "Capabilities", "LimitHit", "Limits", "Network", "SandboxError",
    "SandboxHost", "SandboxResult", "SandboxSpec", "SandboxSpecError", "SandboxUnavailable", "build_argv",
    "bwrap_options", "capabilities", "classify", "compile_filter", "detect_host", "filter_fd", "filter_file",
    "launch_argv", "limit_args", "options_fd", "run", "spawn_identity",
]
