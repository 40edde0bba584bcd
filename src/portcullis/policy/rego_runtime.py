"""The rego-cpp runtime through its C API: hand an input document over, run the compiled query,
read and check the output. Leaf module (the standard library, regopy and the decision types
only), so a Rego worker process (:mod:`.rego_worker`) starts without the rest of the gateway.

Why the rego-cpp C API and not ``regopy.Input``/``Output`` on the hot path: ``Input`` hands
strings to rego-cpp *unescaped* (a ``"`` in an argument breaks equality and can inject JSON into
the output) and floats with six decimals (``100.0000004`` becomes ``100``), and ``Output``
raises on some error outputs. :class:`Runtime` builds the input through the same C functions
with JSON escaping, sends numbers that would lose precision as JSON text instead, and reads
errors from the output tree. It is the only code in Portcullis that touches regopy.

A :class:`Runtime` is not thread-safe: one interpreter holds the input between "set input" and
"query", and ctypes releases the GIL in between.
"""

from __future__ import annotations

import ctypes
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

# google-re2 must be loaded before regopy: the other order corrupts the heap on the first RE2
# compile (manifest patterns) once a Rego module was loaded (both bundle the same C++ libraries)
import re2  # type: ignore[import-untyped]  # noqa: F401  # load order, see above
from regopy import Interpreter, LogLevel, RegoError  # type: ignore[import-untyped]  # ships no py.typed
from regopy import rego_shared as _capi  # regopy's ctypes bindings of the rego-cpp C API

from portcullis.policy.decision import Obligation

MAX_INPUT_VALUES = 10_000  # values in one input document (each costs about 1 µs to hand over)
MAX_INPUT_DEPTH = 64
MAX_ENTRIES = 64  # elements in one deny / require_approval / obligations collection

RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}")
REASON = re.compile(r"[a-z][a-z0-9_]{0,63}")
POINTER = re.compile(r"(/([^~/]|~[01])*)+")  # RFC 6901 and never "" (as policy.model's Pointer)
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')
_INT64 = range(-(2**63), 2**63)
_OK = 0


class RegoCompileError(ValueError):
    """The modules cannot be compiled; the message names the file (and line when known)."""


@dataclass(frozen=True, slots=True)
class RegoFinding:
    """One element of a module's ``deny`` or ``require_approval``."""

    effect: Literal["deny", "require_approval"]
    rule_id: str
    reason: str


class EvalError(Exception):
    """An evaluation failed; the message is the (short, value-free) :attr:`RegoResult.error`."""


_ERROR_AT = re.compile(rb"\(error (\d+):")
_ERROR_MSG = re.compile(rb"\(errormsg (\d+):")
_OFFSET = re.compile(rb"\|(\d+)\|")
_ERROR_TEXT = re.compile(r"\(errormsg \d+:([^)\n]*)")


def compile_message(error: str, modules: Mapping[str, str]) -> str:
    """``file:line:column: message`` from regopy's error text (an S-expression with length-prefixed atoms)."""
    raw = error.encode("utf-8", "replace")
    messages = [raw[m.end():m.end() + int(m.group(1))].decode("utf-8", "replace") for m in _ERROR_MSG.finditer(raw)]
    text = printable(messages[0] if messages else "does not compile")
    more = f" (and {len(messages) - 1} more)" if len(messages) > 1 else ""
    located = _ERROR_AT.search(raw)
    if located is None:
        return f"{', '.join(sorted(modules))}: {text}{more}"
    end = located.end() + int(located.group(1))
    file = raw[located.end():end].decode("utf-8", "replace")
    offset = _OFFSET.match(raw, end)
    if file not in modules or offset is None:
        return f"{printable(file)}: {text}{more}"
    before = modules[file].encode("utf-8")[: int(offset.group(1))]
    line = before.count(b"\n") + 1
    column = len(before[before.rfind(b"\n") + 1:].decode("utf-8", "replace")) + 1
    return f"{file}:{line}:{column}: {text}{more}"


def printable(text: str, limit: int = 160) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)[:limit]


# ----------------------------------------------------------------------------- the runtime (C API)


class Runtime:
    """One compiled bundle and the interpreter that runs it. Not thread-safe (see the module docstring)."""

    __slots__ = ("_builder", "_bundle", "_handle", "_interpreter", "wanted")

    def __init__(self, builder: Interpreter, bundle: Any, interpreter: Interpreter, wanted: Wanted) -> None:
        self._builder = builder  # kept alive with the bundle it built
        self._bundle = bundle
        self._interpreter = interpreter
        self._handle = interpreter._impl
        self.wanted = wanted

    @classmethod
    def build(cls, modules: Mapping[str, str], slots: tuple[tuple[str, str], ...]) -> Runtime:
        # [v | v := ref] is [] when the rule is undefined and [value] when defined, so the output keeps
        # the value's type (a string where a set belongs is an error, not a silent "no findings").
        query = "[" + ", ".join(f"[v | v := data.portcullis.{package}.{key}]" for package, key in slots) + "]"
        builder = _quiet(Interpreter())
        try:
            for name, source in sorted(modules.items()):
                builder.add_module(name, source)
            bundle = builder.build(query)
        except RegoError as exc:
            raise RegoCompileError(compile_message(str(exc), modules)) from None
        if not bundle.ok():
            raise RegoCompileError(f"{', '.join(sorted(modules))}: does not compile")
        interpreter = _quiet(Interpreter())
        interpreter.strict_built_in_errors = True  # a failing built-in is an error, not a silent undefined
        return cls(builder, bundle, interpreter, wanted_input(modules.values()))

    def evaluate(self, document: Mapping[str, Any]) -> str:
        """The query's output JSON text for ``document``; raises EvalError."""
        self._set_input(document)
        output = _capi.rego.regoBundleQuery(self._handle, self._bundle._impl)
        if not output:
            raise EvalError("runtime: " + printable(_capi.rego_get_error(self._handle) or "query failed"))
        try:
            if not _capi.rego.regoOutputOk(output):
                raise EvalError("runtime: " + _error_message(_capi.rego.regoOutputNode(output)))
            size = _capi.rego.regoOutputJSONSize(output)
            buffer = ctypes.create_string_buffer(size)
            if _capi.rego.regoOutputJSON(output, buffer, size) != _OK:
                raise EvalError("runtime: output unreadable")
            text = buffer.value.decode("utf-8")
        except UnicodeDecodeError:
            raise EvalError("output: not UTF-8") from None
        finally:
            _capi.rego.regoFreeOutput(output)
        if text.startswith("(error"):  # e.g. "Function not found": ok, but an error tree as text
            message = _ERROR_TEXT.search(text)
            raise EvalError("runtime: " + (printable(message.group(1)) if message else "error"))
        return text

    def _set_input(self, document: Mapping[str, Any]) -> None:
        if not isinstance(document, Mapping):
            raise EvalError("input: not an object")
        handle = _capi.rego.regoNewInput()
        try:
            writer = InputWriter(handle)
            status = writer.write(document, 0, self.wanted)
            if writer.inexact:  # a float the C API would round, or an int beyond 64 bits: send JSON text
                text = json.dumps(project(document, self.wanted), ensure_ascii=False, allow_nan=False)
                status = _capi.rego.regoSetInputTerm(self._handle, text.encode("utf-8"))
            elif status == _OK:
                status = _capi.rego.regoSetInput(self._handle, handle)
        finally:
            _capi.rego.regoFreeInput(handle)  # regoSetInput copied the value
        if status != _OK:
            raise EvalError("input: rejected by the Rego runtime")


def _quiet(interpreter: Interpreter) -> Interpreter:
    interpreter.log_level = LogLevel.NONE  # rego-cpp otherwise prints compile errors to stdout
    return interpreter


def _error_message(node: int) -> str:
    """The first error message in an output's error tree (kinds from regopy's NodeKind)."""
    stack = [node]
    while stack:
        current = stack.pop()
        if _capi.rego.regoNodeType(current) == _capi.NodeKind.ErrorMessage:
            return printable(_capi.rego_node_value(current))
        stack += [_capi.rego.regoNodeGet(current, i) for i in reversed(range(_capi.rego.regoNodeSize(current)))]
    return "error"


# ----------------------------------------------------------------------------- the input document

# Which parts of ``input`` the modules can read: ALL, or a tree {key: Wanted} of the referenced paths.
Wanted = Literal[True] | dict[str, "Wanted"]
ALL: Literal[True] = True
_INPUT_REF = re.compile(r"(?<![.\w])input\b((?:\.[A-Za-z_][A-Za-z0-9_]*)*)")
# built-ins whose result is not a function of the input: a policy that calls one is never cached
NOT_CODE = re.compile(r'"(?:[^"\\\n]|\\.)*"|`[^`]*`|#[^\n]*')  # strings, raw strings, comments


def wanted_input(sources: Iterable[str]) -> Wanted:
    """The parts of ``input`` that ``sources`` mention, conservatively.

    Rego reaches the input only through the ``input`` keyword, so every ``input.a.b`` in the code
    (strings and comments removed: they cannot reference anything) wants the subtree at ``a.b``,
    and any other use (``input[k]``, ``walk(input)``, ``import input as i``) wants everything. The
    hand-over costs about 1 µs per value, so sending only what can be read saves most of it.
    """
    tree: dict[str, Wanted] = {}
    for source in sources:
        for match in _INPUT_REF.finditer(NOT_CODE.sub(" ", source)):
            path = match.group(1).split(".")[1:]
            if not path:
                return ALL
            node: dict[str, Wanted] = tree
            for key in path[:-1]:
                child = node.setdefault(key, {})
                if not isinstance(child, dict):  # ALL already
                    break
                node = child
            else:
                node[path[-1]] = ALL
    return tree


def project(value: Any, wanted: Wanted) -> Any:
    """``value`` cut down to ``wanted``, as plain JSON types (for the JSON-text path)."""
    if isinstance(value, Mapping):
        if wanted is ALL:
            return {key: project(item, ALL) for key, item in value.items()}
        return {key: project(value[key], sub) for key, sub in wanted.items() if key in value}
    if isinstance(value, list | tuple):
        return [project(item, ALL) for item in value]
    return value


class InputWriter:
    """Pushes the wanted parts of a document onto a rego-cpp input stack; checks ALL of it is JSON."""

    __slots__ = ("_handle", "_left", "inexact")

    def __init__(self, handle: int) -> None:
        self._handle = handle
        self._left = MAX_INPUT_VALUES
        self.inexact = False

    def write(self, value: Any, depth: int, wanted: Wanted | None) -> int:
        """Push ``value`` (``wanted`` None: only check it); the status of the last push (sticky in rego-cpp)."""
        # One branch per JSON type, the commonest first; subclasses (enums, read-only mappings) last.
        self._left -= 1
        if self._left < 0:
            raise EvalError(f"input: more than {MAX_INPUT_VALUES} values")
        kind = type(value)
        if kind is str:
            encoded = _text(value)
            return _OK if wanted is None else _capi.rego.regoInputString(self._handle, encoded)
        if kind is dict or (kind is not list and isinstance(value, Mapping)):
            return self._object(value, depth, wanted)
        if kind is list or kind is tuple:
            if depth >= MAX_INPUT_DEPTH:
                raise EvalError("input: nested too deeply")
            inner = None if wanted is None else ALL
            for item in value:
                self.write(item, depth + 1, inner)
            return _OK if wanted is None else _capi.rego.regoInputArray(self._handle, len(value))
        if kind is bool:
            return _OK if wanted is None else int(_capi.rego.regoInputBoolean(self._handle, value))
        if kind is int:
            if wanted is None:
                return _OK
            if value not in _INT64:
                self.inexact = True
                return int(_capi.rego.regoInputNull(self._handle))
            return int(_capi.rego.regoInputInt(self._handle, value))
        if kind is float:
            if not math.isfinite(value):
                raise EvalError("input: number is not finite")
            if wanted is None:
                return _OK
            if float(f"{value:f}") != value:  # the C API formats floats with %f
                self.inexact = True
            return int(_capi.rego.regoInputFloat(self._handle, value))
        if value is None:
            return _OK if wanted is None else _capi.rego.regoInputNull(self._handle)
        for plain in (str, int, float):  # bool is matched above, and never subclassed
            if isinstance(value, plain):
                self._left += 1
                return self.write(plain(value) if plain is not str else str.__str__(value), depth, wanted)
        raise EvalError(f"input: {kind.__name__} is not a JSON value")

    def _object(self, value: Mapping[Any, Any], depth: int, wanted: Wanted | None) -> int:
        if depth >= MAX_INPUT_DEPTH:
            raise EvalError("input: nested too deeply")
        pushed = 0
        for key, item in value.items():
            if not isinstance(key, str):
                raise EvalError("input: object key is not a string")
            sub = wanted if wanted is None or wanted is ALL else wanted.get(key)
            if sub is None:
                _text(key)
                self.write(item, depth + 1, None)
                continue
            _capi.rego.regoInputString(self._handle, _text(key))
            self.write(item, depth + 1, sub)
            _capi.rego.regoInputObjectItem(self._handle)
            pushed += 1
        return _OK if wanted is None else _capi.rego.regoInputObject(self._handle, pushed)


def _text(value: str) -> bytes:
    # rego-cpp keeps strings in their JSON-escaped form (without quotes), as its parser would.
    if _NEEDS_ESCAPE.search(value) is not None:
        value = json.dumps(value, ensure_ascii=False)[1:-1]
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise EvalError("input: string is not valid Unicode") from None


# ----------------------------------------------------------------------------- reading the output


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):  # a duplicate key can only come from a forged string: reject
        raise EvalError("output: duplicate key")
    return obj


def decode(text: str, slots: tuple[tuple[str, str], ...]) -> tuple[tuple[RegoFinding, ...], tuple[Obligation, ...]]:
    """Findings and obligations from the query output, validated strictly; raises EvalError."""
    try:
        document = json.loads(text, object_pairs_hook=_unique)
    except ValueError:
        raise EvalError("output: not valid JSON") from None
    expressions = document.get("expressions") if isinstance(document, dict) else None
    if (not isinstance(expressions, list) or len(expressions) != 1 or not isinstance(expressions[0], list)
            or len(expressions[0]) != len(slots)):
        raise EvalError("output: unexpected shape")
    findings: dict[RegoFinding, None] = {}
    obligations: dict[Obligation, None] = {}
    for (package, key), cell in zip(slots, expressions[0], strict=True):
        if not cell:
            continue  # the rule is not defined
        where = f"data.portcullis.{package}.{key}"
        entries = cell[0] if isinstance(cell, list) and len(cell) == 1 else None
        if not isinstance(entries, list):
            raise EvalError(f"output: {where} must be a set or an array")
        if len(entries) > MAX_ENTRIES:
            raise EvalError(f"output: {where} has more than {MAX_ENTRIES} elements")
        for entry in entries:
            if key == "obligations":
                obligations[_obligation(entry, where)] = None
            else:
                findings[_finding(entry, key, where)] = None
    ordered = sorted(findings, key=lambda f: f.effect != "deny")  # denials first, else in package order
    return tuple(ordered), tuple(obligations)


def _finding(entry: object, effect: str, where: str) -> RegoFinding:
    if not isinstance(entry, dict) or set(entry) != {"id", "reason"}:
        raise EvalError(f'output: {where} elements must be {{"id": ..., "reason": ...}}')
    rule_id, reason = entry["id"], entry["reason"]
    if not isinstance(rule_id, str) or not RULE_ID.fullmatch(rule_id):
        raise EvalError(f"output: {where} has an id that is not a short rule id")
    if not isinstance(reason, str) or not REASON.fullmatch(reason):
        raise EvalError(f"output: {where} has a reason that is not a short snake_case string")
    return RegoFinding("deny" if effect == "deny" else "require_approval", rule_id, reason)


def _obligation(entry: object, where: str) -> Obligation:
    if isinstance(entry, dict) and entry.get("kind") == "audit" and set(entry) == {"kind"}:
        return Obligation("audit")
    if not isinstance(entry, dict) or entry.get("kind") != "redact" or set(entry) != {"kind", "pointer"}:
        raise EvalError(f'output: {where} elements must be {{"kind": "redact", "pointer": ...}} '
                         '(or {"kind": "audit"})')
    pointer = entry["pointer"]
    if not isinstance(pointer, str) or len(pointer) > 512 or not POINTER.fullmatch(pointer):
        raise EvalError(f"output: {where} has a pointer that is not an RFC 6901 pointer")
    return Obligation("redact", pointer)

