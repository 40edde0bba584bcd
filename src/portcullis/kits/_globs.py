"""Path-segment-aware glob patterns for the file kit's allow- and deny-lists (pure functions).

A pattern is matched against the *canonical* segments of a path (``notes/2026/a.txt`` is
``("notes", "2026", "a.txt")``), one segment at a time:

- ``**`` as a whole segment matches zero or more whole segments (``docs/**`` matches ``docs``,
  ``docs/a`` and ``docs/a/b``; ``**/*.md`` matches ``a.md`` and ``x/y/a.md``);
- ``*`` matches any run of characters inside one segment and never crosses ``/``;
- ``?`` matches exactly one character of a segment;
- every other character matches itself (no ``[...]`` classes, no escapes: one meaning per pattern).

Allow-lists match exactly as written. Deny-lists also match case-folded, NFC-normalised names,
and a path is denied when it *or any directory above it* matches, so ``secrets`` hides the whole
subtree and a file system that folds case or normalises names (macOS, ext4 ``casefold``) cannot
be used to slip past a deny rule: a deny errs towards refusing.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence

MAX_DOUBLE_STARS = 3  # each '**' multiplies the matching work by the path's depth


class PatternError(ValueError):
    """A pattern that is empty, absolute, climbing, or has too many ``**``."""


def check_pattern(pattern: str) -> tuple[str, ...]:
    """The segments of a well-formed pattern; raises :class:`PatternError` otherwise."""
    if not isinstance(pattern, str) or not pattern or pattern.startswith("/") or "\\" in pattern or "\x00" in pattern:
        raise PatternError("a pattern is a non-empty relative '/'-separated path")
    segments = tuple(pattern.split("/"))
    if any(s in ("", ".", "..") for s in segments):
        raise PatternError("a pattern has no empty, '.' or '..' segment")
    if any("**" in s and s != "**" for s in segments):
        raise PatternError("'**' must be a whole segment")
    if segments.count("**") > MAX_DOUBLE_STARS:
        raise PatternError("too many '**' segments")
    return segments


@functools.lru_cache(maxsize=1024)
def _segment_regex(segment: str, fold: bool) -> re.Pattern[str]:
    body = "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in segment)
    return re.compile(body, re.DOTALL | (re.IGNORECASE if fold else 0))


def _match(pattern: Sequence[str], segments: Sequence[str], fold: bool) -> bool:
    if not pattern:
        return not segments
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match(rest, segments[i:], fold) for i in range(len(segments) + 1))
    return bool(segments) and _segment_regex(head, fold).fullmatch(segments[0]) is not None and _match(
        rest, segments[1:], fold)


def _could_match_below(pattern: Sequence[str], segments: Sequence[str]) -> bool:
    """True if some path under ``segments`` (or ``segments`` itself) could match ``pattern``."""
    if not segments:
        return True
    if not pattern:
        return False
    head = pattern[0]
    if head == "**":
        return True
    return _segment_regex(head, False).fullmatch(segments[0]) is not None and _could_match_below(
        pattern[1:], segments[1:])


def _folded(segments: Sequence[str]) -> tuple[str, ...]:
    return tuple(unicodedata.normalize("NFC", s).casefold() for s in segments)


def matches_any(patterns: Sequence[tuple[str, ...]], segments: Sequence[str]) -> bool:
    """True if ``segments`` matches one of the (checked) allow ``patterns`` exactly."""
    return any(_match(p, segments, False) for p in patterns)


def leads_to_any(patterns: Sequence[tuple[str, ...]], segments: Sequence[str]) -> bool:
    """True if ``segments`` is a directory on the way to something one of ``patterns`` allows."""
    return any(_could_match_below(p, segments) for p in patterns)


def denied(patterns: Sequence[tuple[str, ...]], segments: Sequence[str]) -> bool:
    """True if ``segments`` or a directory above it matches a deny pattern, case-folded and normalised."""
    if not patterns:
        return False
    folded = _folded(segments)
    folded_patterns = [_folded(p) for p in patterns]
    return any(_match(p, folded[:depth], True) for depth in range(len(folded) + 1) for p in folded_patterns)
