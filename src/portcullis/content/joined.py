"""Scanning several strings as one: adjacent content blocks, or the chunks of a stream.

A secret can be split between two text blocks or two stream chunks, each half harmless alone.
:func:`scan_parts` scans every part on its own *and* the joined text around each boundary
between parts, and reports each finding with the part spans it covers, so a redaction can cut
the value out of every part it touches.

Around each boundary the joined text is scanned from :data:`~.scan.OVERLAP_CHARS` before to as
far after (windows that touch are merged, so a stream of many small chunks is scanned once as a
whole); from those windows only findings that cross a boundary are kept, the rest being the
per-part scans' business. Parts are joined with nothing between them (stream chunks split
anywhere); the whole call shares one budget.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Sequence
from dataclasses import dataclass

from portcullis.content.budget import BudgetExceeded, Meter, ScanBudget
from portcullis.content.findings import BlockReason, Finding
from portcullis.content.scan import (
    DEFAULT_BUDGET,
    OVERLAP_CHARS,
    Clock,
    DetectorError,
    DetectorSet,
    default_detectors,
    tidy,
)


@dataclass(frozen=True, slots=True)
class PartSpan:
    """Characters ``[start, end)`` of part ``part``."""

    part: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class PartFinding:
    """A finding over the joined parts (its offsets are into ``"".join(parts)``) and the part spans it covers."""

    finding: Finding
    spans: tuple[PartSpan, ...]

    @property
    def straddles(self) -> bool:
        return len(self.spans) > 1


@dataclass(frozen=True, slots=True)
class PartsResult:
    findings: tuple[PartFinding, ...]
    blocked: bool = False
    reason: BlockReason | None = None
    detail: str = ""


def _merged_windows(boundaries: Sequence[int], size: int, reach: int) -> list[tuple[int, int]]:
    windows: list[tuple[int, int]] = []
    for b in boundaries:
        start, stop = max(0, b - reach), min(size, b + reach)
        if windows and start <= windows[-1][1]:
            windows[-1] = (windows[-1][0], stop)
        else:
            windows.append((start, stop))
    return windows


def scan_parts(parts: Sequence[str], budget: ScanBudget = DEFAULT_BUDGET, detectors: DetectorSet | None = None,
               clock: Clock = time.thread_time_ns, meter: Meter | None = None, reach: int = OVERLAP_CHARS,
               across_only: bool = False) -> PartsResult:
    """Scan ``parts`` one by one and across their boundaries, within one ``budget`` (or charging the
    given ``meter``, when the caller scans more under the same budget: the output filter does).
    ``reach``: how far either side of a boundary the joined text is scanned; ``across_only``: skip
    the part-by-part scans (the caller scanned each part already) and report only boundary findings."""
    detectors = detectors or default_detectors()
    offsets = [0]
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    size = offsets[-1]
    if size > budget.max_chars:
        return PartsResult((), True, "input_too_large", f"max_chars={budget.max_chars}")
    meter = meter or Meter(budget, clock)
    found: list[Finding] = []
    try:
        for part, offset in zip(() if across_only else parts, offsets, strict=False):
            local: list[Finding] = []
            try:
                detectors.scan_into(part, meter, local)
            finally:
                found.extend(f.shifted(offset) for f in local)
        boundaries = sorted({b for b in offsets[1:-1] if 0 < b < size})
        if boundaries:
            joined = "".join(parts)
            for start, stop in _merged_windows(boundaries, size, reach):
                local = []
                try:
                    detectors.scan_into(joined[start:stop], meter, local,
                                        [b - start for b in boundaries if start < b < stop])
                finally:
                    found.extend(f.shifted(start) for f in local if _crosses(f.shifted(start), boundaries))
    except BudgetExceeded as exc:
        return PartsResult(_with_spans(found, offsets), True, exc.reason, exc.detail)
    except DetectorError as exc:
        return PartsResult(_with_spans(found, offsets), True, "detector_error", exc.detector)
    return PartsResult(_with_spans(found, offsets))


@dataclass(frozen=True, slots=True)
class Across:
    """The windows around every boundary of every run of parts, joined into one ``text`` to scan:
    ``cover`` holds the boundaries (offsets into ``text``, sorted), ``layout`` where each window came from."""

    text: str
    cover: tuple[int, ...]
    layout: tuple[tuple[int, int, int, int, list[int]], ...]  # piece start, run, window start and stop, offsets


def across_windows(runs: Sequence[Sequence[str]], reach: int = OVERLAP_CHARS, separator: str = "\n") -> Across | None:
    """The :class:`Across` text of ``runs`` (``reach`` characters either side of each boundary, touching
    windows merged, windows joined by ``separator``), or None when no run has a boundary."""
    pieces: list[str] = []
    layout: list[tuple[int, int, int, int, list[int]]] = []
    cover: list[int] = []
    pos = 0
    for index, parts in enumerate(runs):
        offsets = [0]
        for part in parts:
            offsets.append(offsets[-1] + len(part))
        size = offsets[-1]
        boundaries = [b for b in offsets[1:-1] if 0 < b < size]
        if not boundaries:
            continue
        joined = "".join(parts)
        for start, stop in _merged_windows(sorted(set(boundaries)), size, reach):
            layout.append((pos, index, start, stop, offsets))
            cover += [pos + b - start for b in boundaries if start < b < stop]
            pieces.append(joined[start:stop])
            pos += stop - start + len(separator)
    return Across(separator.join(pieces), tuple(cover), tuple(layout)) if pieces else None


def across_findings(found: Sequence[Finding], across: Across) -> list[tuple[int, PartFinding]]:
    """Of the findings of a scan of ``across.text``, those that cross a boundary, as ``(run index,
    finding)`` with the finding's offsets into that run's ``"".join(parts)``."""
    starts = [entry[0] for entry in across.layout]
    out = []
    for finding in tidy(list(found)):
        if not _crosses(finding, across.cover):
            continue
        piece = bisect.bisect_right(starts, finding.start) - 1
        piece_start, run, window_start, window_stop, offsets = across.layout[piece]
        shift = window_start - piece_start
        if finding.end + shift > window_stop:
            continue  # runs on past its own window (into the separator): not a value of this run
        out.append((run, _with_spans([finding.shifted(shift)], offsets)[0]))
    return out


def scan_across(runs: Sequence[Sequence[str]], detectors: DetectorSet, meter: Meter,
                reach: int = OVERLAP_CHARS, separator: str = "\n",
                decoded: list[str] | None = None) -> list[tuple[int, PartFinding]]:
    """Only the findings that cross a boundary between adjacent parts, for many runs of parts at once:
    ``(run index, finding)`` with the finding's offsets into that run's ``"".join(parts)``.

    The windows around every boundary of every run (:func:`across_windows`) are scanned in one
    detector pass, so a message with many runs (the sibling strings of each row of a table) pays the
    scanner's fixed cost once (the output filter goes further: it appends them to its one pass).
    Raises :class:`~.budget.BudgetExceeded` or :class:`~.scan.DetectorError` as the scan does;
    ``decoded`` as :meth:`~.scan.DetectorSet.scan_into`."""
    across = across_windows(runs, reach, separator)
    if across is None:
        return []
    found: list[Finding] = []
    detectors.scan_into(across.text, meter, found, across.cover, decoded)
    return across_findings(found, across)


def _crosses(finding: Finding, boundaries: Sequence[int]) -> bool:
    i = bisect.bisect_right(boundaries, finding.start)
    return i < len(boundaries) and boundaries[i] < finding.end


def _with_spans(found: list[Finding], offsets: Sequence[int]) -> tuple[PartFinding, ...]:
    result = []
    for finding in tidy(found):
        spans = []
        i = bisect.bisect_right(offsets, finding.start) - 1
        while i < len(offsets) - 1 and offsets[i] < finding.end:
            start, stop = max(finding.start, offsets[i]), min(finding.end, offsets[i + 1])
            if start < stop:
                spans.append(PartSpan(i, start - offsets[i], stop - offsets[i]))
            i += 1
        result.append(PartFinding(finding, tuple(spans)))
    return tuple(result)
