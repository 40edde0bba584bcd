"""Terminal safety for every CLI view: what a caller wrote is shown, never obeyed.

Tool names, principal ids, arguments, justifications, vote reasons, fixture labels and whatever
an admin endpoint answers can be written by a requester (or an upstream). A terminal would act
on some of it: Rich markup (``[bold]``, ``[link=…]``), ANSI / OSC escape sequences (colour,
cursor moves, OSC 8 hyperlinks, window titles), and bidirectional overrides, zero-width and
other invisible characters that make one string look like another. So every CLI view:

* renders such values with :func:`terminal_safe` — control, format (bidi, zero-width), private,
  unassigned and line/paragraph separator characters, other whitespace than the space, and a
  short list of blank "letters" become ``\\xNN`` / ``\\uNNNN`` / ``\\UNNNNNNNN``, and backslashes
  are doubled so an escape written by a caller cannot pass for one of ours;
* prints through :func:`console` (no markup, no ``:emoji:`` codes, no highlighting) and hands
  values to Rich tables only as :class:`rich.text.Text` (:func:`cell`), never as markup strings;
* writes ``--json`` output as ASCII-only JSON (:func:`json_text`): every non-ASCII character is a
  ``\\uXXXX`` escape, so nothing in it can reach the terminal raw.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from rich.console import Console
from rich.text import Text

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Blank or invisible code points in other categories (fillers, combining grapheme joiner,
# variation selectors): they let one name pose as another.
_INVISIBLE = frozenset({0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180B, 0x180C, 0x180D, 0x180F, 0x2800, 0x3164,
                        0xFFA0, *range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)})
MAX_CELL_CHARS = 200


def console(*, stderr: bool = False) -> Console:
    """A Rich console for CLI output that interprets nothing in the strings it prints: no markup,
    no ``:emoji:`` codes, no highlighting (styles are given as :class:`Text` styles instead)."""
    return Console(stderr=stderr, soft_wrap=True, markup=False, emoji=False, highlight=False)


def terminal_safe(value: object, max_chars: int | None = MAX_CELL_CHARS, *, double_backslashes: bool = True) -> str:
    """``value`` as text a terminal shows faithfully: controls, bidi, invisibles become ``\\uXXXX``.

    Backslashes are doubled so an escape written by an attacker cannot pass for one of ours
    (``double_backslashes=False`` for text the gateway already made visible, whose backslashes
    are doubled already: the escapes stay readable, and anything raw is still escaped here);
    text past ``max_chars`` (None: no limit) is cut with a visible count of what was dropped.
    """
    text = value if isinstance(value, str) else str(value)
    shown = text if max_chars is None else text[:max_chars]
    out: list[str] = []
    for ch in shown:
        cp = ord(ch)
        if ch == "\\" and double_backslashes:
            out.append("\\\\")
        elif (cp in _INVISIBLE or unicodedata.category(ch) in _UNSAFE_CATEGORIES
              or (ch.isspace() and ch != " ")):
            out.append(f"\\x{cp:02x}" if cp < 0x100 else f"\\u{cp:04x}" if cp < 0x10000 else f"\\U{cp:08x}")
        else:
            out.append(ch)
    if len(shown) < len(text):
        out.append(f"…(+{len(text) - len(shown)} chars)")
    return "".join(out)


def cell(value: object, max_chars: int | None = MAX_CELL_CHARS, *, double_backslashes: bool = True) -> Text:
    """A table cell (or a line) that Rich never parses as markup; ``-`` for nothing."""
    if value is None or value == "":
        return Text("-")
    return Text(terminal_safe(value, max_chars, double_backslashes=double_backslashes))


def json_text(value: Any, *, indent: int | None = None) -> str:
    """``value`` as ASCII-only JSON (sorted keys): safe to write to a terminal as it is."""
    return json.dumps(value, ensure_ascii=True, sort_keys=True, indent=indent,
                      default=lambda o: f"<{type(o).__name__}> {o!r}")


def lines_safe(text: str) -> str:
    """:func:`terminal_safe` line by line (no limit): a multi-line message keeps its line breaks."""
    return "\n".join(terminal_safe(line, None) for line in text.split("\n"))
