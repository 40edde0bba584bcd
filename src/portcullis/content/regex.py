"""RE2 patterns over a :class:`~.view.TextView` (Latin-1 mode: one byte is one character).

RE2 matches in time linear in the input, so no rule can be driven into catastrophic
backtracking, whatever its author wrote. The pybind11 core is used directly (no per-call wrapper
cost), as :mod:`portcullis.policy.ecma_regex` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import re2  # type: ignore[import-untyped]  # google-re2 ships no type information; loaded before regopy
from re2 import _re2 as _engine

_UNANCHORED = _engine.RE2.Anchor.UNANCHORED
_ANCHOR_START = _engine.RE2.Anchor.ANCHOR_START


def _options(case_insensitive: bool) -> Any:
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1
    options.log_errors = False
    options.case_sensitive = not case_insensitive
    options.max_mem = 64 << 20  # room for the DFA of the longer rules; RE2 falls back to the NFA past it
    return options


class Pattern:
    """One compiled pattern; :meth:`finditer` yields ``(match_start, match_end, value_start, value_end)``
    where the value is capture group ``group`` (0: the whole match)."""

    __slots__ = ("_compiled", "group", "source")

    def __init__(self, source: str, *, group: int = 0, case_insensitive: bool = False) -> None:
        compiled = _engine.RE2(source.encode("latin-1"), _options(case_insensitive))
        if not compiled.ok():
            raise ValueError(f"rule pattern does not compile: {compiled.error()!r}")
        if group > compiled.NumberOfCapturingGroups():
            raise ValueError("rule pattern has no such group")
        self._compiled = compiled
        self.group = group
        self.source = source

    def finditer(self, data: bytes, start: int, accept_end: int, stop: int) -> Iterator[tuple[int, int, int, int]]:
        """Matches that start in ``[start, accept_end)``, searched in ``data[start:stop]`` (RE2 sees the
        bytes before ``start`` as context for ``\\b`` and ``^``)."""
        pos = start
        group = self.group
        match = self._compiled.Match
        while pos < accept_end:
            spans = match(_UNANCHORED, data, pos, stop)
            s0, e0 = spans[0]
            if s0 < 0 or s0 >= accept_end:
                return
            vs, ve = spans[group]
            if vs < 0:  # the value group did not take part: use the whole match
                vs, ve = s0, e0
            yield s0, e0, vs, ve
            pos = max(ve, s0 + 1)  # resume after the value, so a trailing delimiter can start the next match

    def match_at(self, data: bytes, pos: int, stop: int) -> int:
        """End of the value group of a match that starts exactly at ``pos``, or -1."""
        spans = self._compiled.Match(_ANCHOR_START, data, pos, stop)
        return int(spans[self.group][1]) if spans[0][0] >= 0 else -1

    def search(self, data: bytes, start: int, stop: int) -> bool:
        return bool(self._compiled.Match(_UNANCHORED, data, start, stop)[0][0] >= 0)


def merge_spans(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``spans`` (non-empty) sorted, with overlapping or touching ones merged."""
    spans.sort()
    merged = [spans[0]]
    for start, stop in spans[1:]:
        if start <= merged[-1][1]:
            if stop > merged[-1][1]:
                merged[-1] = (merged[-1][0], stop)
        else:
            merged.append((start, stop))
    return merged


class GateSet:
    """Several patterns matched in one pass (an RE2 set): which of them occur anywhere in a stretch of bytes.
    A detector's gate is a pattern that must occur for the detector to find anything, so a detector whose
    gate did not match is skipped."""

    __slots__ = ("_set", "size")

    def __init__(self, patterns: list[str]) -> None:
        options = _options(False)
        options.never_capture = True
        self._set = _engine.Set(_UNANCHORED, options)
        for pattern in patterns:
            if self._set.Add(pattern.encode("latin-1")) < 0:
                raise ValueError("gate pattern does not compile")
        if patterns and not self._set.Compile():
            raise ValueError("gate set does not compile")
        self.size = len(patterns)

    def matching(self, data: bytes, start: int, stop: int) -> set[int]:
        """Indexes of the patterns that match in ``data[start:stop]``."""
        if not self.size:
            return set()
        return set(self._set.Match(memoryview(data)[start:stop]))
