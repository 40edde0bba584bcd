"""A pushed set's Rego, tried in a limited process before the gateway compiles it.

rego-cpp compiles and evaluates to completion once called: a hostile module can burn CPU for
minutes, allocate gigabytes, or crash the process (a deeply nested term overflows the parser's
stack). The serving gateway therefore never compiles a pushed module, nor evaluates one, before
a throwaway process has done the same under limits. The contract, in order:

1. :func:`probe` (gateway side, blocking: call it in a worker thread) starts ``python -m
   portcullis.policy.rego_probe`` with the worker's environment (none of the gateway's secrets),
   hands it the modules and limits on stdin and waits at most :attr:`ProbeLimits.wall_s`.
2. The child (:func:`main`) loads rego-cpp, caps its address space at what it has plus
   :attr:`ProbeLimits.memory_bytes` (``RLIMIT_AS``), then compiles the modules with an
   ``ITIMER_PROF`` timer of :attr:`ProbeLimits.compile_cpu_s` CPU seconds, says ``compiled``,
   and evaluates them once over :data:`WARM_INPUT` (the empty call a warm-up used to run in the
   gateway) with a timer of :attr:`ProbeLimits.eval_cpu_s`. ``SIGPROF`` keeps its default action:
   over a limit, the kernel terminates the child wherever rego-cpp is.
3. Any limit blown is :class:`RegoLimitExceeded` with one of the fixed reasons below (which step,
   which limit); a module that does not compile is :class:`RegoCompileError` as in the gateway.
   An evaluation that merely *fails* (a conflict, a strict built-in) is no refusal: calls deny
   with ``policy_error`` exactly as they would at run time.

Compiling is deterministic, so once the probe compiled the modules within its limits the
gateway's own compile (and the workers' zygote's) does the same bounded work.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass

WARM_INPUT = {"principal": {}, "tool": {}, "arguments": {}, "environment": "", "now": "1970-01-01T00:00:00Z",
              "session": {}, "method": "tools/call"}
COMPILED = b"compiled"
EVALUATED = b"evaluated"
MAX_OUTPUT = 4096
EVAL_FLOOR_S = 0.05  # the gateway's probe gives the empty call at least this (a fresh interpreter's first
                     # evaluation pays one-time set-up), else the per-call budget

# the fixed reasons (what /readyz, the audit record and the CLI show)
COMPILE_CPU = "Rego compilation exceeded its CPU limit"
COMPILE_CRASH = "Rego compilation exceeded its memory or stack limit"
COMPILE_WALL = "Rego compilation did not finish in time"
EVAL_CPU = "Rego evaluation of an empty call exceeded its CPU budget"
EVAL_CRASH = "Rego evaluation of an empty call exceeded its memory limit"
EVAL_WALL = "Rego evaluation of an empty call did not finish in time"
NOT_CHECKED = "Rego could not be checked in a limited process"


class RegoLimitExceeded(Exception):
    """The modules blew a limit in the probe; ``reason`` is one of the fixed reasons above."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ProbeLimits:
    """What the probe process may use.

    Fields:
        compile_cpu_s: CPU seconds to compile every module.
        eval_cpu_s: CPU seconds for the one evaluation over :data:`WARM_INPUT`.
        memory_bytes: address space the process may add once rego-cpp is loaded.
        wall_s: wall-clock backstop for the whole process (start-up included).
    """

    compile_cpu_s: float = 10.0
    eval_cpu_s: float = 0.1
    memory_bytes: int = 512 * 1024 * 1024
    wall_s: float = 60.0


def probe(modules: Mapping[str, str], slots: tuple[tuple[str, str], ...], limits: ProbeLimits) -> None:
    """Compile and evaluate ``modules`` once in a limited process. Raises :class:`RegoLimitExceeded`
    or :class:`~portcullis.policy.rego_runtime.RegoCompileError`; returns None when they fit."""
    from portcullis.policy.rego_pool import _worker_env
    from portcullis.policy.rego_runtime import RegoCompileError

    setup = json.dumps({"modules": dict(modules), "slots": [list(s) for s in slots],
                        "compile_cpu_s": limits.compile_cpu_s, "eval_cpu_s": limits.eval_cpu_s,
                        "memory_bytes": limits.memory_bytes}).encode()
    try:
        done = subprocess.run([sys.executable, "-m", "portcullis.policy.rego_probe"], input=setup,
                              capture_output=True, timeout=limits.wall_s, env=_worker_env(), check=False)
    except subprocess.TimeoutExpired as exc:  # run() has killed it
        raise RegoLimitExceeded(EVAL_WALL if COMPILED in (exc.stdout or b"") else COMPILE_WALL) from None
    except OSError:
        raise RegoLimitExceeded(NOT_CHECKED) from None
    lines = done.stdout[:MAX_OUTPUT].splitlines()
    compiled = COMPILED in lines
    if done.returncode == 0 and EVALUATED in lines:
        return
    if done.returncode == 3 and lines[-1:] and lines[-1].startswith(b"error: "):  # does not compile
        raise RegoCompileError(lines[-1][7:].decode("utf-8", "replace")[:300])
    if done.returncode in (-signal.SIGPROF, -signal.SIGXCPU):
        raise RegoLimitExceeded(EVAL_CPU if compiled else COMPILE_CPU)
    if done.returncode == 4:  # MemoryError in the child
        raise RegoLimitExceeded(EVAL_CRASH if compiled else COMPILE_CRASH)
    if done.returncode < 0:  # SIGSEGV (stack), SIGABRT (allocation failed), SIGKILL, …
        raise RegoLimitExceeded(EVAL_CRASH if compiled else COMPILE_CRASH)
    raise RegoLimitExceeded(NOT_CHECKED)


# ----------------------------------------------------------------------------- the child


def main() -> int:
    """Step 2 of the module docstring. Exit 0: fits; 3: does not compile; 4: out of memory."""
    setup = json.loads(sys.stdin.buffer.read())
    from portcullis.policy.rego_runtime import EvalError, RegoCompileError, Runtime
    from portcullis.policy.rego_worker import _cap_memory

    slots = tuple((str(package), str(key)) for package, key in setup["slots"])
    Runtime.build({"probe.rego": "package portcullis.probe\n"}, (("probe", "deny"),))  # the allocator is set up
    signal.signal(signal.SIGPROF, signal.SIG_DFL)  # over a limit: the kernel terminates this process
    _cap_memory(int(setup["memory_bytes"]))
    out = sys.stdout.buffer
    try:
        signal.setitimer(signal.ITIMER_PROF, max(float(setup["compile_cpu_s"]), 1e-3))
        try:
            runtime = Runtime.build(setup["modules"], slots)
        except RegoCompileError as exc:
            out.write(b"error: " + str(exc).encode("utf-8", "replace")[:300] + b"\n")
            return 3
        signal.setitimer(signal.ITIMER_PROF, 0)
        out.write(COMPILED + b"\n")
        out.flush()
        signal.setitimer(signal.ITIMER_PROF, max(float(setup["eval_cpu_s"]), 1e-3))
        try:
            runtime.evaluate(WARM_INPUT)
        except EvalError:
            pass  # a failing evaluation is a deny at run time, not a resource problem
        signal.setitimer(signal.ITIMER_PROF, 0)
    except MemoryError:
        os._exit(4)
    out.write(EVALUATED + b"\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
