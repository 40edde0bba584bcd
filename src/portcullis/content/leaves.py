"""Every string in a JSON value, with its path: what the output filter scans in a JSON-RPC result
(text content, ``structuredContent``, ``_meta``, error messages, embedded resources) and message.

Object keys are yielded too (a key can carry a secret as well as a value can); their path ends
with the key itself and ``is_key`` is true. The walk is iterative (no recursion limit to hit) and
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
    # each stack entry: (path, node, the key to yield first or None); scalars are never pushed
    stack: list[tuple[tuple[PathPart, ...], object, str | None]] = [((), value, None)]
    while stack:
        path, node, key = stack.pop()
        if key is not None:
            yield Leaf(path, key, True)
        if isinstance(node, str):
            yield Leaf(path, node)
        elif isinstance(node, dict):
            for name, child in reversed(node.items()):
                if isinstance(child, (str, dict, list, tuple)) or isinstance(name, str):
                    stack.append(((*path, name), child, name if isinstance(name, str) else None))
        elif isinstance(node, (list, tuple)):
            for index in range(len(node) - 1, -1, -1):
                child = node[index]
                if isinstance(child, (str, dict, list, tuple)):
                    stack.append(((*path, index), child, None))
