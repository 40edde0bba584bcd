"""Every string in a JSON value, with its path: what the output filter scans in a JSON-RPC result
(text content, ``structuredContent``, ``_meta``, error messages, embedded resources) and message.

Object keys are yielded too (a key can carry a secret as well as a value can); their path ends
with the key itself and ``is_key`` is true. The walk is iterative (no recursion limit to hit) and
visits values in document order, so adjacent text blocks come out adjacent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

PathPart = str | int


@dataclass(frozen=True, slots=True)
class Leaf:
    path: tuple[PathPart, ...]
    text: str
    is_key: bool = False


def string_leaves(value: object) -> Iterator[Leaf]:
    """The strings of ``value`` (dicts, lists, tuples, strings, scalars) in document order."""
    stack: list[tuple[tuple[PathPart, ...], object, bool]] = [((), value, False)]
    while stack:
        path, node, is_key = stack.pop()
        if isinstance(node, str):
            yield Leaf(path, node, is_key)
        elif isinstance(node, dict):
            children: list[tuple[tuple[PathPart, ...], object, bool]] = []
            for key, child in node.items():
                if isinstance(key, str):
                    children.append(((*path, key), key, True))
                children.append(((*path, key), child, False))
            stack.extend(reversed(children))
        elif isinstance(node, list | tuple):
            stack.extend(((*path, i), child, False) for i, child in reversed(list(enumerate(node))))
