"""The byte view every detector scans: one byte per character, so byte offsets are ``str`` offsets.

Secrets and the structured PII kinds are ASCII. :func:`ascii_view` encodes the text as ASCII and
puts one ``?`` in place of every other code point (CJK, emoji, combining marks, lone surrogates),
so a pattern compiled for Latin-1 (:mod:`.regex`) runs over bytes whose offsets are the text's
own code-point offsets: no offset translation, and no UTF-8 decoding inside the engine.

What this gives up: values written in non-ASCII characters (fullwidth digits, an internationalised
e-mail local part) are not seen, and an invisible character inside a token splits it. Normalising
invisible and look-alike characters is the job of the normalisation stage that runs before
detection (issue 12, "invisible and control characters"), not of this view.
"""

from __future__ import annotations

from typing import NamedTuple


def ascii_view(text: str) -> bytes:
    """``text`` as bytes, one per code point; every non-ASCII code point becomes ``?``."""
    return text.encode("ascii", "replace")


class TextView(NamedTuple):
    """A text prepared for scanning: the text, its :func:`ascii_view` and that view lower-cased.
    (This and :class:`Window` are named tuples, built in C: a scan makes several per message.)"""

    text: str
    data: bytes
    lower: bytes

    @classmethod
    def of(cls, text: str) -> TextView:
        data = ascii_view(text)
        return cls(text, data, data.lower())

    @classmethod
    def of_bytes(cls, raw: bytes) -> TextView:
        """Decoded content (:mod:`.decode`): bytes taken one per character, non-ASCII bytes as ``?``."""
        data = raw.decode("latin-1").encode("ascii", "replace")
        return cls(raw.decode("latin-1"), data, data.lower())


class Window(NamedTuple):
    """The part of a view one detector pass looks at: matches must *start* in ``[start, accept_end)``
    and may run on to ``stop`` (``accept_end`` plus the chunk overlap, or the end of the text)."""

    start: int
    accept_end: int
    stop: int
