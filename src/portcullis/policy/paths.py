"""Canonicalise a relative path argument, or refuse it: the one decision behind ``within_root``.

A tool argument such as ``{"path": "notes/a.txt"}`` names a file under a directory the manifest
fixes (``within_root: /srv/files``). The gateway's policy, the service kit's re-check and the
demo file service all call :func:`canonical_segments`, so they accept and refuse the same strings.

**Decoding model.** The path is judged as the exact text the tool receives: the gateway decodes
nothing (no percent-decoding, no ``~`` or variable expansion, no Unicode normalisation). Text that
some later layer *could* decode into something else is ambiguous, and ambiguous text is refused
rather than guessed at. The steps, in order; the first that fails refuses the path:

1. A non-empty ``str`` of at most :data:`MAX_PATH_CHARS` characters, each segment at most
   :data:`MAX_SEGMENT_CHARS`.
2. No control, format (bidi, zero-width), surrogate, private-use, unassigned, line/paragraph
   separator or non-ASCII space characters (:func:`~portcullis.policy.model.unsafe_text`).
3. No backslash (a Windows separator), no ``:`` (drive letters, URI schemes such as ``file:``,
   NTFS alternate data streams), no percent escape ``%XX`` or ``%uXXXX`` (single, double or
   overlong-UTF-8 encoded traversal: decoding is refused, not performed; a bare ``%`` as in
   ``100%.txt`` is fine).
4. No character that looks like, or normalises (NFKC) to, a dot, slash, backslash, colon,
   percent or tilde: U+FF0E and U+FF0F (fullwidth), U+2024 ONE DOT LEADER, U+2215 DIVISION
   SLASH and kin, and U+00A5/U+20A9 (a backslash in Windows' best-fit code pages). Other
   non-ASCII text (``résumé.txt``, ``日本語/メモ.txt``) is accepted as it is, in whatever
   normalisation form it arrives.
5. Not absolute (no leading ``/``, so no ``//host/share`` either) and no segment that begins
   with ``~`` (``~``, ``~root``, also after ``./``: the canonical form must itself be accepted).
6. Split on ``/``. Empty and ``.`` segments are dropped; ``..`` removes the segment before it,
   and a ``..`` with nothing left to remove (an escape above the root) refuses the path. A
   segment made only of dots and spaces other than ``.`` and ``..`` (``...``, ``....``, ``.. ``)
   is refused: Windows and some libraries read it as ``..``; so is ``..;x`` (a URL path
   parameter that servlet containers strip). So is a Windows device name
   (``CON``, ``nul.txt``, ``COM1``) as a segment.

The result is the tuple of remaining segments (empty for the root itself): none is ``.``, ``..``
or empty and none contains ``/``, so ``root/seg/...`` always lies inside the root. This is a
textual decision: it cannot see symbolic links, so a tool must open the *canonical* segments
without following links (``O_NOFOLLOW`` relative to the parent's descriptor, as the demo file
service does); opening the raw text would let ``link/../x`` resolve through the link.
"""

from __future__ import annotations

import functools
import re
import unicodedata

from portcullis.policy.model import unsafe_text

MAX_PATH_CHARS = 4096  # PATH_MAX
MAX_SEGMENT_CHARS = 255  # NAME_MAX

# ASCII that is refused anywhere: controls, backslash, colon and percent escapes (any case).
_ASCII_REFUSED = re.compile(r"[\x00-\x1f\x7f\\:]|%(?:[0-9A-Fa-f]{2}|[uU][0-9A-Fa-f]{4})")
# What a lookalike must not normalise to, and lookalikes NFKC leaves alone: slashes, solidi and
# colons from Unicode's confusables that no name needs, plus the two that Windows' best-fit code
# pages turn into a backslash (YEN SIGN in cp932, WON SIGN in cp949: the "WorstFit" bypass).
_STRUCTURAL = frozenset("./\\:%~")
_LOOKALIKES = frozenset(
    "\u2044\u2215\u2216\u2236\u2571\u2572\u29f5\u29f8\u29f9\u1735\u0338\u20eb\u02d0\ua789"
    "\u00a5\u20a9"
)
# Windows device names, refused as a segment's stem in any case ("con", "NUL.txt", "com1.log").
_DEVICE_STEMS = frozenset({"con", "prn", "aux", "nul", "com", "lpt"})
_DEVICE = re.compile(r"(?i)(?:con|prn|aux|nul|com[0-9\u00b9\u00b2\u00b3]|lpt[0-9\u00b9\u00b2\u00b3]) *(?:\..*)?")


class PathRefused(ValueError):
    """The path cannot be canonicalised unambiguously inside the root; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def canonical_segments(path: object) -> tuple[str, ...]:
    """The canonical segments of the relative ``path`` (``()`` is the root); raises :class:`PathRefused`."""
    if not isinstance(path, str) or not path:
        raise PathRefused("empty")
    if len(path) > MAX_PATH_CHARS:
        raise PathRefused("too long")
    if path.isascii():
        if _ASCII_REFUSED.search(path):
            raise PathRefused("ambiguous character")
    else:
        if unsafe_text(path):
            raise PathRefused("invisible or control character")
        if _ASCII_REFUSED.search(path) or any(_lookalike(char) for char in set(path) if not char.isascii()):
            raise PathRefused("ambiguous character")
    if path[0] == "/":
        raise PathRefused("absolute")
    if path[0] == "~":
        raise PathRefused("home-relative")
    segments: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if not segments:
                raise PathRefused("outside the root")
            segments.pop()
            continue
        if len(segment) > MAX_SEGMENT_CHARS:
            raise PathRefused("segment too long")
        if segment[0] == "~":  # ".//~" would canonicalise to "~", which a shell or expanduser reads as home
            raise PathRefused("home-relative")
        if segment[0] in ". " and not segment.partition(";")[0].strip(". "):  # "...", ".. ", "..;x"
            raise PathRefused("dot segment")
        if segment[:3].lower() in _DEVICE_STEMS and _DEVICE.fullmatch(segment.rstrip(". ")):
            raise PathRefused("device name")
        segments.append(segment)
    return tuple(segments)


def canonical_path(path: object) -> str:
    """``path`` in canonical form (``"."`` for the root); raises :class:`PathRefused`."""
    return "/".join(canonical_segments(path)) or "."


def is_within_root(path: object) -> bool:
    """True if ``path`` canonicalises to the root or something under it (never raises)."""
    try:
        canonical_segments(path)
    except PathRefused:
        return False
    return True


@functools.lru_cache(maxsize=8192)
def _lookalike(char: str) -> bool:
    return char in _LOOKALIKES or not _STRUCTURAL.isdisjoint(unicodedata.normalize("NFKC", char))
