"""Safe YAML loading that remembers where every value came from.

Contract:

* Input is at most :data:`MAX_BYTES` of UTF-8; the document is composed with PyYAML's
  ``SafeLoader`` and then built into plain ``dict`` / ``list`` / ``str`` / ``int`` / ``float`` /
  ``bool`` / ``None`` values by this module, never by PyYAML's constructors.
* Scalars resolve as in the YAML 1.2 core schema: only ``true``/``false`` are booleans (``yes``,
  ``on`` and ``no`` stay strings), no sexagesimal or leading-zero octal integers, and dates stay
  strings. Mapping keys are always the key's text.
* Refused, each with a :class:`YamlError` carrying the 1-based line: anchors and aliases (so no
  alias bombs), nesting deeper than :data:`MAX_DEPTH`, duplicate mapping keys (PyYAML would keep
  the last one silently), non-scalar keys, any tag outside the standard str / int / float / bool /
  null / map / seq, and more than one document.
* :meth:`YamlDocument.line_of` maps a location path (pydantic's ``error["loc"]``, jsonschema's
  ``error.absolute_path``) to the line of the deepest node that exists on that path; a mapping
  entry's line is its key's line and the document root is line 1.
* :func:`set_top_level_scalar` edits one top-level ``key: value`` line as text, so comments and
  every other byte survive, and re-parses the result to prove nothing else changed.

Error messages never quote the offending text, so a broken line holding a secret is not echoed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.events import AliasEvent, NodeEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_BYTES = 1_048_576
MAX_DEPTH = 100

Loc = tuple[str | int, ...]

_CORE = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(_CORE + t for t in ("str", "int", "float", "bool", "null"))
_INT = re.compile(r"^[-+]?[0-9]+$|^0o[0-7]+$|^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$|^[-+]?\.(inf|Inf|INF)$|^\.(nan|NaN|NAN)$")
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_COMMENT = re.compile(r"[ \t]+#.*$")
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")


class YamlError(Exception):
    """A document that is not acceptable YAML; ``line`` is 1-based, or None if unknown."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass(frozen=True, slots=True)
class YamlDocument:
    """A loaded document: its plain Python value and the line of every node in it."""

    value: Any
    lines: Mapping[Loc, int]

    def line_of(self, loc: Iterable[str | int]) -> int:
        """Line of the deepest node that exists along ``loc`` (1, the document, if none does)."""
        found: Loc = ()
        for part in loc:
            candidate = (*found, part)
            if candidate not in self.lines:
                break
            found = candidate
        return self.lines.get(found, 1)


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core resolution that refuses anchors, aliases and deep nesting."""

    yaml_implicit_resolvers: dict[Any, list[Any]] = {}  # noqa: RUF012  # PyYAML's own class-level table

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]  # PyYAML stubs leave it untyped
        if isinstance(event, AliasEvent) or (isinstance(event, NodeEvent) and event.anchor is not None):
            raise YamlError("anchors and aliases are not allowed", _line(event.start_mark))
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YamlError(f"nesting deeper than {MAX_DEPTH} levels", _line(event.start_mark))
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


for _tag, _regexp, _first in (
    ("bool", _BOOL, "tTfF"),
    ("int", _INT, "-+0123456789"),
    ("float", _FLOAT, "-+.0123456789"),
):
    _Loader.add_implicit_resolver(_CORE + _tag, _regexp, list(_first))
_Loader.add_implicit_resolver(_CORE + "null", _NULL, ["~", "n", "N", ""])


def load_yaml(data: bytes | str) -> YamlDocument:
    """Parse one YAML document into plain values plus a location → line map (see module doc)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if len(raw) > MAX_BYTES:
        raise YamlError(f"larger than {MAX_BYTES // 1_048_576} MiB", None)
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise YamlError("not UTF-8 text", raw[: exc.start].count(b"\n") + 1) from None
    try:
        loader = _Loader(data)
    except yaml.reader.ReaderError as exc:
        raise YamlError("character not allowed in YAML", data[: exc.position].count("\n") + 1) from None
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        problem = exc.problem or "invalid YAML"
        message = f"{exc.context}: {problem}" if exc.context else problem
        raise YamlError(message, _line(exc.problem_mark or exc.context_mark)) from None
    finally:
        loader.dispose()
    lines: dict[Loc, int] = {(): 1}
    value = None if node is None else _build(node, (), lines)
    return YamlDocument(value, lines)


def set_top_level_scalar(data: bytes, key: str, value: str) -> str:
    """``data`` with the block-style top-level ``key`` set to the plain scalar ``value``.

    The key's line is replaced (a trailing ``# comment`` is kept) or, if absent, appended. Raises
    YamlError if the document is not a mapping or the edit would change anything but ``key``.
    """
    document = load_yaml(data)
    before = document.value
    if not isinstance(before, dict):
        raise YamlError("expected a mapping at the top level", 1)
    text = data.decode("utf-8")
    lines = text.splitlines(keepends=True)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    if key in before:
        index = document.line_of((key,)) - 1
        body = lines[index].rstrip("\r\n")
        comment = match.group(0) if (match := _COMMENT.search(body)) else ""
        lines[index] = f"{key}: {value}{comment}{lines[index][len(body) :]}"
    else:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += newline
        lines.append(f"{key}: {value}{newline}")
    edited = "".join(lines)
    try:
        after = load_yaml(edited).value
    except YamlError:
        after = None
    if after != {**before, key: value}:
        raise YamlError(f"cannot set {key!r} by a line edit (flow style or multi-line value?)", None)
    return edited


def _line(mark: Any) -> int | None:
    return None if mark is None else int(mark.line) + 1


def _build(node: Node, loc: Loc, lines: dict[Loc, int]) -> Any:
    if isinstance(node, ScalarNode):
        return _scalar(node)
    if isinstance(node, SequenceNode) and node.tag == _CORE + "seq":
        items = []
        for index, item in enumerate(node.value):
            lines[(*loc, index)] = _line(item.start_mark) or 1
            items.append(_build(item, (*loc, index), lines))
        return items
    if isinstance(node, MappingNode) and node.tag == _CORE + "map":
        mapping: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = _line(key_node.start_mark) or 1
            if not isinstance(key_node, ScalarNode) or key_node.tag not in _SCALAR_TAGS:
                raise YamlError("mapping keys must be plain scalars", line)
            key = key_node.value
            if key in mapping:
                first = lines[(*loc, key)]
                raise YamlError(f"duplicate key {key[:64]!r} (first defined on line {first})", line)
            lines[(*loc, key)] = line
            mapping[key] = _build(value_node, (*loc, key), lines)
        return mapping
    raise YamlError(f"tag {node.tag[:64]!r} is not allowed", _line(node.start_mark))


def _scalar(node: ScalarNode) -> Any:
    tag, text, line = node.tag, node.value, _line(node.start_mark)
    if tag == _CORE + "str":
        return text
    if tag == _CORE + "null" and _NULL.match(text):
        return None
    if tag == _CORE + "bool" and _BOOL.match(text):
        return text.lower() == "true"
    if tag == _CORE + "int" and _INT.match(text):
        try:
            base = {"0o": 8, "0x": 16}.get(text[:2], 10)
            return int(text[2:] if base != 10 else text, base)
        except ValueError:
            raise YamlError("integer too large", line) from None
    if tag == _CORE + "float" and _FLOAT.match(text):
        special = text.lower().lstrip("+")
        if special in (".inf", "-.inf", ".nan"):
            return {".inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}[special]
        return float(text)
    if tag in _SCALAR_TAGS:
        raise YamlError(f"value is not a valid {tag.removeprefix(_CORE)}", line)
    raise YamlError(f"tag {tag[:64]!r} is not allowed", line)
