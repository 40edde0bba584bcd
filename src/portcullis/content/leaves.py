"""Every string in a JSON value, with its path: what the output filter scans in a JSON-RPC result
(text content, ``structuredContent``, ``_meta``, error messages, embedded resources) and message.

Object keys are yielded too (a key can carry a secret as well as a value can); their path ends
with the key itself and ``is_key`` is true. An integer of seven digits or more is yielded as its
decimal text (a card or SSN sent as a JSON number is still a card or an SSN); shorter numbers,
floats and booleans are not. The walk is iterative (no recursion limit to hit) and
visits values in document order, so adjacent text blocks come out adjacent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

PathPart = str | int


class Leaf(NamedTuple):
    """A tuple, not a frozen dataclass: a result has one per string, and a tuple is built in C (a
    frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``)."""

    path: tuple[PathPart, ...]
    text: str
    is_key: bool = False


def string_leaves(value: object) -> Iterator[Leaf]:
    """The strings of ``value`` (dicts, lists, tuples, strings, scalars) in document order."""
    return iter(leaf_list(value))


def leaf_list(value: object) -> list[Leaf]:
    """:func:`string_leaves` as a list (what the output filter wants: it reads every leaf)."""
    out: list[Leaf] = []
    append = out.append
    # each stack entry: (path, node, the key to yield first or None); scalars are never pushed
    stack: list[tuple[tuple[PathPart, ...], object, str | None]] = [((), value, None)]
    push, pop = stack.append, stack.pop
    while stack:
        path, node, key = pop()
        if key is not None:
            append(Leaf(path, key, True))
        kind = type(node)
        if kind is str or (kind not in _CONTAINERS and isinstance(node, str)):
            append(Leaf(path, node))  # type: ignore[arg-type]
        elif _long_int(node):  # a card, an SSN, a phone number sent as a JSON number
            append(Leaf(path, _digits(node)))  # type: ignore[arg-type]
        elif kind is dict or (kind not in _CONTAINERS and isinstance(node, dict)):
            for name, child in reversed(node.items()):  # type: ignore[attr-defined]
                named = name if type(name) is str or isinstance(name, str) else None
                if type(child) in _CONTAINERS or named is not None or _long_int(child) or isinstance(
                        child, _CONTAINER_TYPES):
                    push(((*path, name), child, named))
        elif kind is list or kind is tuple or isinstance(node, list | tuple):
            for index in range(len(node) - 1, -1, -1):  # type: ignore[arg-type]
                child = node[index]  # type: ignore[index]
                if type(child) in _CONTAINERS or _long_int(child) or isinstance(child, _CONTAINER_TYPES):
                    push(((*path, index), child, None))
    return out


def _digits(node: int) -> str:
    try:
        return str(node)
    except ValueError:  # past the interpreter's digit limit (thousands of digits): no value kind is that long
        return ""


def _long_int(node: object) -> bool:
    """An integer of 7 digits or more (never a bool): JSON numbers a value can hide in."""
    return type(node) is int and not -1_000_000 < node < 1_000_000


_CONTAINER_TYPES = (str, dict, list, tuple)
_CONTAINERS = frozenset(_CONTAINER_TYPES)  # exact types: a set lookup; subclasses fall back to isinstance
