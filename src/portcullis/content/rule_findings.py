"""The one shape every content scanner reports in, and the bounded, escaped excerpt it carries.

A :class:`Finding` names the rule that fired, how bad it is, where (an RFC 6901 JSON pointer into
the scanned value, ``""`` for a bare string) and a short excerpt around the match. The excerpt is
made visible (controls, bidi, zero-width and tag characters shown as ``\\u{XXXX}``) and cut, so a
finding can be logged, shown in a terminal or an approval view, or recorded without carrying the
payload's tricks with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from portcullis.text import escape_invisible

Severity = Literal["high", "medium"]
EXCERPT_CHARS = 80  # most characters of the scanned text quoted in one excerpt
# Invisible code points outside the categories escape_invisible shows (variation selectors, fillers).
_ALSO_SHOWN = {chr(cp): f"\\u{{{cp:04X}}}" for cp in (0x034F, 0x115F, 0x1160, 0x3164, 0xFFA0, *range(0xFE00, 0xFE10),
                                                   *range(0xE0100, 0xE01F0))}


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a scanner found.

    Fields:
        rule: a stable id, ``<scanner>.<class>`` (``poisoning.secret_file``, ``unicode.bidi_control``).
        severity: ``"high"`` (an attack pattern) or ``"medium"`` (suspicious; still blocks at pin).
        pointer: RFC 6901 JSON pointer of the scanned field (``/inputSchema/properties/note/description``).
        excerpt: the matched text and a little context, escaped and at most about 80 characters.
        detail: what was hidden, decoded where the scanner can (tag-character text), escaped; else "".
    """

    rule: str
    severity: Severity
    pointer: str
    excerpt: str
    detail: str = ""


def excerpt(text: str, start: int, end: int, context: int = 16) -> str:
    """``text[start:end]`` with up to ``context`` characters either side, escaped and cut to fit."""
    lo, hi = max(0, start - context), min(len(text), end + context)
    piece = text[lo:hi]
    if len(piece) > EXCERPT_CHARS:
        piece = piece[:EXCERPT_CHARS]
        hi = lo + EXCERPT_CHARS
    shown = escape_invisible(piece, _ALSO_SHOWN)
    return ("…" if lo > 0 else "") + shown + ("…" if hi < len(text) else "")


def pointer_token(key: str | int) -> str:
    """One RFC 6901 reference token (``~`` → ``~0``, ``/`` → ``~1``)."""
    return str(key).replace("~", "~0").replace("/", "~1")
