"""Deployment-wide Rego modules, evaluated with regopy (rego-cpp), compiled once per version.

Rego can only make a call *more* restricted: a module adds denials, approvals and obligations,
never an allow (the native policy is the only source of an allow). The contract, in the order
the code follows it (``docs/rego.md`` has the module shape, the input document and examples):

1. :meth:`RegoPolicy.compile` checks each module statically (a name, no NUL, the first statement
   ``package portcullis.<name>``, no ``allow``/``warn``/``violation`` rule, at most
   :data:`MAX_MODULES` modules of :data:`MAX_SOURCE_BYTES` together), optionally has a limited
   process compile and try them first (``probe``: :mod:`.rego_probe`, what the gateway does with a
   pushed set), then compiles all of
   them ONCE into a regopy ``Bundle`` whose query reads, for every package, ``deny``,
   ``require_approval`` and ``obligations``. A module that does not compile is a
   :class:`RegoCompileError` naming the file and line; no modules at all is an error too.
2. Evaluating only hands over the input (the parts of it the modules name, see
   :func:`wanted_input`) and runs the compiled query. It never raises: input that is not JSON, a
   Rego runtime error (conflicting values of a complete rule, a failing built-in such as division
   by zero: built-in errors are strict), any malformed output and an evaluation over its CPU
   budget all come back as :attr:`RegoResult.error`, which the caller must turn into a deny with
   reason ``policy_error`` (fail closed).
3. In the gateway, :meth:`RegoPolicy.evaluate_async` runs on the event loop only to serialise the
   input and answer decision-cache hits; a miss is evaluated in a worker process
   (:mod:`.rego_pool`, :mod:`.rego_worker`) that the kernel terminates once it has used
   ``budget_s`` of CPU time, so a slow module never delays another caller and is stopped at its
   budget.
4. :meth:`RegoPolicy.evaluate` (the CLI: ``policy test``, ``lint``; tests) evaluates in this
   process and checks the budget afterwards against the evaluating thread's CPU time (an
   evaluation terminates: Rego has no unbounded recursion or loops); over budget, the findings
   are returned with ``error="timeout"``. It is serialised by a lock (one interpreter holds the
   input between "set input" and "query", and ctypes releases the GIL in between).

The C API details (escaping, exact numbers, reading errors) are in :mod:`.rego_runtime`.
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portcullis.audit.record import canonical_bytes
from portcullis.policy.decision import Obligation
from portcullis.policy.rego_runtime import (
    ALL,
    NOT_CODE,
    RULE_ID,
    EvalError,
    InputWriter,
    RegoCompileError,
    RegoFinding,
    Runtime,
    Wanted,
    decode,
    project,
    wanted_input,
)

if TYPE_CHECKING:
    from portcullis.policy.rego_pool import PoolSettings, RegoWorkers
    from portcullis.policy.rego_probe import ProbeLimits

__all__ = ["ALL", "DEFAULT_BUDGET_S", "RegoCompileError", "RegoFinding", "RegoPolicy", "RegoResult", "RegoTooLarge",
           "wanted_input"]

DECISION_KEYS = ("deny", "require_approval", "obligations")
RESERVED_RULES = ("allow", "warn", "violation")  # would look like decisions but be ignored
DEFAULT_BUDGET_S = 0.02  # CPU seconds per evaluation; typical evaluations take 0.2-0.4 ms
CACHE_ENTRIES = 4096  # cached decisions per policy version
MAX_MODULES = 256  # Rego modules in one policy version
MAX_SOURCE_BYTES = 1024 * 1024  # their sources together, UTF-8

_MODULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_PACKAGE = re.compile(r"package[ \t]+portcullis\.([A-Za-z_][A-Za-z0-9_]*)[ \t]*(?:#.*)?")
_RESERVED = re.compile(rf"^(?:default[ \t]+)?({'|'.join(RESERVED_RULES)})\b", re.MULTILINE)
_DECLARED_ID = re.compile(r'"id"\s*:\s*"([^"\\]*)"')


class RegoTooLarge(RegoCompileError):
    """More than :data:`MAX_MODULES` modules, or more than :data:`MAX_SOURCE_BYTES` of source."""


@dataclass(frozen=True, slots=True)
class RegoResult:
    """What the modules said about one call. ``error`` set means: deny with ``policy_error``."""

    findings: tuple[RegoFinding, ...] = ()
    obligations: tuple[Obligation, ...] = ()
    error: str | None = None


class RegoPolicy:
    """The compiled Rego modules of one policy version. Build with :meth:`compile` or :meth:`load_dir`."""

    __slots__ = ("_budget_ns", "_cache", "_cache_lock", "_declared", "_lock", "_modules", "_runtime", "_slots",
                 "_workers", "cache_hits", "may_oblige", "module_names", "version")

    def __init__(self, *, version: str, module_names: tuple[str, ...], declared: tuple[str, ...],
                 runtime: Runtime, slots: tuple[tuple[str, str], ...], budget_ns: int,
                 cacheable: bool = False, modules: Mapping[str, str] | None = None) -> None:
        self._cache: collections.OrderedDict[bytes, RegoResult] | None = (
            collections.OrderedDict() if cacheable else None)
        self.cache_hits = 0
        self.version = version
        self.module_names = module_names
        self._declared = declared
        self._runtime = runtime
        self._slots = slots
        self._budget_ns = budget_ns
        self._lock = threading.Lock()  # the in-process interpreter
        self._cache_lock = threading.Lock()  # the cache only: held for microseconds, never around an evaluation
        self._modules = dict(modules or {})
        # whether an evaluation can yield obligations at all: a rule producing them is named
        # "obligations" in its module's text (unknown sources: assume it can)
        self.may_oblige = not self._modules or any("obligations" in source for source in self._modules.values())
        self._workers: RegoWorkers | None = None

    @classmethod
    def compile(cls, modules: Mapping[str, str], *, budget_s: float = DEFAULT_BUDGET_S,
                probe: ProbeLimits | None = None) -> RegoPolicy:
        """Compile ``modules`` (file name → Rego source) once. Raises :class:`RegoCompileError`.

        ``probe``: first compile and evaluate them once in a limited process
        (:func:`~portcullis.policy.rego_probe.probe`, blocking); raises
        :class:`~portcullis.policy.rego_probe.RegoLimitExceeded` when they blow a limit there.
        """
        if not math.isfinite(budget_s) or budget_s < 0:
            raise ValueError("budget_s must be a finite number of seconds, 0 or more")
        if not modules:
            raise RegoCompileError("no modules: a Rego policy needs at least one module")
        if len(modules) > MAX_MODULES:
            raise RegoTooLarge(f"too many modules: at most {MAX_MODULES}")
        packages = sorted({_check_module(name, source) for name, source in modules.items()})
        if sum(len(source.encode("utf-8")) for source in modules.values()) > MAX_SOURCE_BYTES:
            raise RegoTooLarge(f"the modules are too large: at most {MAX_SOURCE_BYTES} bytes together")
        slots = tuple((package, key) for package in packages for key in DECISION_KEYS)
        if probe is not None:
            from portcullis.policy.rego_probe import probe as try_in_a_limited_process

            try_in_a_limited_process(modules, slots, probe)
        runtime = Runtime.build(modules, slots)
        declared = sorted({match for source in modules.values() for match in _DECLARED_ID.findall(source)
                           if RULE_ID.fullmatch(match)})
        deterministic = not any(_NONDETERMINISTIC.search(NOT_CODE.sub(" ", s)) for s in modules.values())
        return cls(version=_version(modules), module_names=tuple(sorted(modules)), declared=tuple(declared),
                   runtime=runtime, slots=slots, budget_ns=round(budget_s * 1e9), cacheable=deterministic,
                   modules=modules)

    @classmethod
    def load_dir(cls, directory: Path, *, budget_s: float = DEFAULT_BUDGET_S,
                 reuse: RegoPolicy | None = None, probe: ProbeLimits | None = None) -> RegoPolicy | None:
        """The ``*.rego`` files of ``directory`` (sorted, hidden files skipped), compiled; None if there are none.

        ``reuse``: a policy compiled before; returned as it is when the files have not changed
        (same version and budget), so a reload compiles only a new version. ``probe``: as in :meth:`compile`.
        """
        if not directory.is_dir():
            return None
        paths = sorted(p for p in directory.glob("*.rego") if p.is_file() and not p.name.startswith("."))
        if not paths:
            return None
        modules: dict[str, str] = {}
        for path in paths:
            try:
                modules[path.name] = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise RegoCompileError(f"{path.name}: not UTF-8 text") from None
        if (reuse is not None and reuse.version == _version(modules)
                and reuse._budget_ns == round(budget_s * 1e9)):
            return reuse
        return cls.compile(modules, budget_s=budget_s, probe=probe)

    @property
    def wanted(self) -> Wanted:
        """The parts of ``input`` the modules read (:func:`wanted_input`): a tree, or ``True`` for all."""
        return self._runtime.wanted

    @property
    def budget_s(self) -> float:
        """CPU seconds one evaluation may use."""
        return self._budget_ns / 1e9

    def rule_ids(self) -> tuple[str, ...]:
        """The rule ids written literally (``"id": "..."``) in the modules, sorted. Best effort, for coverage."""
        return self._declared

    # ----------------------------------------------------------------------- worker processes

    def workers(self, settings: PoolSettings | None = None) -> RegoWorkers:
        """The worker pool that :meth:`evaluate_async` uses from now on (created once; start it with
        ``await pool.start()`` or run ``pool.run`` as a background task). The budget is this
        policy's whatever ``settings`` says, and the wall-clock backstop at least ten times it."""
        from dataclasses import replace

        from portcullis.policy.rego_pool import PoolSettings, RegoWorkers

        if self._workers is None:
            chosen = settings or PoolSettings()
            chosen = replace(chosen, budget_s=self.budget_s, wall_s=max(chosen.wall_s, 10 * self.budget_s + 1.0))
            self._workers = RegoWorkers(self._modules, self._slots, chosen)
        return self._workers

    # ----------------------------------------------------------------------- evaluating

    async def evaluate_async(self, input_doc: Mapping[str, Any]) -> RegoResult:
        """Evaluate the modules over ``input_doc`` without blocking the event loop. Never raises
        (except on cancellation).

        A cache hit is answered here (~10 µs); a miss goes to a worker process
        (:meth:`workers`), or, when this policy has none (the CLI, tests), is evaluated in this
        process as :meth:`evaluate` does.
        """
        if self._workers is None:
            return self.evaluate(input_doc)
        try:
            payload, cacheable = _payload(input_doc, self._runtime.wanted)
        except EvalError as exc:
            return RegoResult(error=str(exc))
        key = payload if cacheable and self._cache is not None else None
        if key is not None and (cached := self._cached(key)) is not None:
            return cached
        result = await self._workers.evaluate(payload)
        if key is not None and result.error is None:
            self._remember(key, result)
        return result

    def evaluate(self, input_doc: Mapping[str, Any]) -> RegoResult:
        """Evaluate the modules over ``input_doc`` (any JSON-able mapping) in this process. Never raises.

        Decision cache: Rego without non-deterministic built-ins (``time.now_ns``, ``rand.*``,
        ``http.send``, …) is a pure function of the input it reads, so a successful result is kept
        per policy version, keyed by the canonical JSON of exactly the input paths the modules
        reference (:func:`wanted_input`); an input that is not canonical JSON is never cached. At
        most :data:`CACHE_ENTRIES` results, least recently used out first.
        """
        key = self._cache_key(input_doc) if self._cache is not None else None
        try:
            if key is not None and (cached := self._cached(key)) is not None:
                return cached
            with self._lock:
                start = time.thread_time_ns()
                output = self._runtime.evaluate(input_doc)
                findings, obligations = decode(output, self._slots)
                elapsed = time.thread_time_ns() - start
            result = RegoResult(findings=findings, obligations=obligations,
                                error="timeout" if elapsed > self._budget_ns else None)
            if key is not None and result.error is None:
                self._remember(key, result)
            return result
        except EvalError as exc:
            return RegoResult(error=str(exc))
        except Exception as exc:  # fail closed: a bug here must not become an allow
            return RegoResult(error=f"internal: {type(exc).__name__}")

    def _cached(self, key: bytes) -> RegoResult | None:
        with self._cache_lock:
            cached = self._cache.get(key) if self._cache is not None else None
            if cached is not None:
                self._cache.move_to_end(key)  # type: ignore[union-attr]
                self.cache_hits += 1
            return cached

    def _remember(self, key: bytes, result: RegoResult) -> None:
        with self._cache_lock:
            if self._cache is None:
                return
            self._cache[key] = result
            if len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)

    def _cache_key(self, input_doc: Mapping[str, Any]) -> bytes | None:
        try:
            return canonical_bytes(project(input_doc, self._runtime.wanted))
        except (ValueError, TypeError, RecursionError):
            return None  # not canonical JSON (NaN, a set, a huge int, …): evaluated, never cached

    def __repr__(self) -> str:
        return f"RegoPolicy(version={self.version!r}, modules={list(self.module_names)!r})"


def _payload(input_doc: Mapping[str, Any], wanted: Wanted) -> tuple[bytes, bool]:
    """The JSON a worker gets: the input paths the modules read, and whether it is canonical (cacheable).

    Canonical JSON (sorted keys, no NaN) when it can be; an integer beyond 64 bits falls back to
    the standard library (exact, never cached). Anything that is not JSON raises EvalError.
    """
    if not isinstance(input_doc, Mapping):
        raise EvalError("input: not an object")
    try:
        projected = project(input_doc, wanted)
    except RecursionError:
        raise EvalError("input: nested too deeply") from None
    try:
        return canonical_bytes(projected), True
    except (ValueError, TypeError, RecursionError):
        pass
    try:  # rare: check every value as the in-process path does (no C calls), then the exact stdlib JSON
        InputWriter(0).write(projected, 0, None)
        return json.dumps(projected, ensure_ascii=False, allow_nan=False).encode("utf-8"), False
    except (ValueError, TypeError, RecursionError, UnicodeEncodeError):
        raise EvalError("input: not a JSON document") from None


# ----------------------------------------------------------------------------- compiling


def _check_module(name: object, source: object) -> str:
    """The module's package name under ``portcullis``; raises RegoCompileError for a bad module."""
    if not isinstance(name, str) or not _MODULE_NAME.fullmatch(name):
        raise RegoCompileError(f"module name {name!r} must be a plain file name ([A-Za-z0-9_.-])")
    if not isinstance(source, str):
        raise RegoCompileError(f"{name}: source must be text")
    try:
        source.encode("utf-8")
    except UnicodeEncodeError:
        raise RegoCompileError(f"{name}: source is not valid Unicode") from None
    if "\x00" in source:
        raise RegoCompileError(f"{name}: source contains a NUL character")
    package = None
    for number, line in enumerate(source.splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        match = _PACKAGE.fullmatch(text)
        if match is None:
            raise RegoCompileError(f"{name}:{number}: the first statement must be 'package portcullis.<name>'")
        package = match.group(1)
        break
    if package is None:
        raise RegoCompileError(f"{name}: no package declaration (expected 'package portcullis.<name>')")
    reserved = _RESERVED.search(source)
    if reserved is not None:
        at = source.count("\n", 0, reserved.start()) + 1
        raise RegoCompileError(f"{name}:{at}: rule '{reserved.group(1)}' is not supported: Rego modules "
                               "only add findings through deny, require_approval and obligations")
    return package


def _version(modules: Mapping[str, str]) -> str:
    digest = hashlib.sha256()
    for name, source in sorted(modules.items()):
        for part in (name.encode("utf-8"), source.encode("utf-8")):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return "rego-" + digest.hexdigest()[:16]


# built-ins whose result is not a function of the input: a policy that calls one is never cached
_NONDETERMINISTIC = re.compile(r"\b(?:time\.now_ns|rand\.\w+|uuid\.\w+|http\.send|opa\.runtime|net\.\w+|"
                               r"crypto\.x509\.parse_and_verify_certificates\w*|io\.jwt\.decode_verify)\s*\(")
