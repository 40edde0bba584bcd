"""Showing untrusted text faithfully: the one escaper behind approver views and relayed stderr."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping

_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def escape_invisible(text: str, named: Mapping[str, str] | None = None) -> str:
    """``text`` with backslashes doubled and every control, format (zero-width, bidirectional),
    surrogate, private-use, unassigned, separator or non-space whitespace character shown as
    ``\\u{XXXX}`` — or as ``named[char]`` when given. Nothing is cut."""
    out: list[str] = []
    for char in text:
        if named is not None and char in named:
            out.append(named[char])
        elif char == "\\":
            out.append("\\\\")
        elif unicodedata.category(char) in _INVISIBLE_CATEGORIES or (char.isspace() and char != " "):
            out.append(f"\\u{{{ord(char):04X}}}")
        else:
            out.append(char)
    return "".join(out)
