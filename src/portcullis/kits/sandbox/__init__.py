"""Confined child processes: bubblewrap namespaces, a seccomp filter, rlimits (docs/sandbox.md).

Build a frozen :class:`SandboxSpec`, get this host's :class:`SandboxHost` from :func:`detect_host`,
then ``await run(spec, host)`` for a child that runs to completion, or :func:`launch_argv` for a
long-lived child that another spawner starts (stdio services). Failures to confine raise
:class:`SandboxUnavailable`: nothing ever runs unconfined.
"""

from portcullis.kits.sandbox.argv import build_argv, launch_argv, limit_args
from portcullis.kits.sandbox.errors import SandboxError, SandboxSpecError, SandboxUnavailable
from portcullis.kits.sandbox.probe import Capabilities, capabilities, detect_host
from portcullis.kits.sandbox.run import LimitHit, SandboxResult, classify, run, spawn_identity
from portcullis.kits.sandbox.seccomp import DENIED, compile_filter, filter_fd, filter_file
from portcullis.kits.sandbox.spec import SCRATCH_DEST, Bind, Limits, Network, SandboxHost, SandboxSpec

__all__ = [
    "DENIED", "SCRATCH_DEST", "Bind", "Capabilities", "LimitHit", "Limits", "Network", "SandboxError",
    "SandboxHost", "SandboxResult", "SandboxSpec", "SandboxSpecError", "SandboxUnavailable", "build_argv",
    "capabilities", "classify", "compile_filter", "detect_host", "filter_fd", "filter_file", "launch_argv",
    "limit_args", "run", "spawn_identity",
]
