"""Scanning a text: the detector interface, the detector set, chunking, decoding and the budget.

:meth:`DetectorSet.scan` works in these steps:

1. An input longer than ``ScanBudget.max_chars`` is blocked unscanned.
2. The text becomes a :class:`~.view.TextView` (one byte per code point).
3. Chunk by chunk (:data:`CHUNK_CHARS`, each window overlapping the next by :data:`OVERLAP_CHARS`
   so a value across a chunk edge is seen whole): one RE2-set pass finds which detector *gates*
   (a pattern wherever the detector can find something: a digit run for cards, an ``@`` for
   e-mail) and which encodings occur; then every detector whose gate matched runs on the window.
   A match belongs to the chunk it starts in, so none is reported twice.
4. Unless the depth limit is reached, encoded runs (:mod:`.decode`) are decoded and their
   decodings scanned from step 2, one level deeper; findings map back onto the encoded run.
5. Findings are de-duplicated and sorted by position.

Any limit reached (CPU budget, findings, decoded bytes) or any exception inside a detector gives
a *blocked* result, never a clean one; the detail names the limit or the detector, never text.
"""

from __future__ import annotations

import bisect
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from portcullis.content.budget import BudgetExceeded, Meter, ScanBudget
from portcullis.content.cards import CardDetector
from portcullis.content.decode import ENCODINGS as DECODE_ENCODINGS
from portcullis.content.decode import encoded_runs
from portcullis.content.decode import gates as decode_gates
from portcullis.content.findings import PLAIN, Finding, ScanResult
from portcullis.content.pii import EmailDetector, IbanDetector, PhoneDetector, SsnDetector
from portcullis.content.regex import GateSet
from portcullis.content.secret_rules import MAX_MATCH_CHARS
from portcullis.content.secrets import SecretDetector
from portcullis.content.view import TextView, Window

CHUNK_CHARS = 256 * 1024
OVERLAP_CHARS = MAX_MATCH_CHARS
VIEW_UNITS = 1024  # the fixed cost of scanning one text (about 20 µs), charged however short it is
PII_KINDS = ("card", "ssn", "email", "phone", "iban")
DEFAULT_BUDGET = ScanBudget()
Clock = Callable[[], int]


class Detector(Protocol):
    """One detector: finds values in a window of a view, charging its work to the meter.

    ``detect`` reports matches that *start* in ``[window.start, window.accept_end)`` and may look up
    to ``window.stop``; offsets are the view's (code points of the scanned text). It may raise
    :class:`~.budget.BudgetExceeded`; any other exception blocks the scan as a detector error.
    """

    @property
    def name(self) -> str: ...

    @property
    def gate(self) -> str | None:
        """An RE2 pattern that occurs wherever the detector can find something (None: always run)."""

    def detect(self, view: TextView, window: Window, meter: Meter) -> list[Finding]: ...


@dataclass(frozen=True, slots=True)
class DetectorSet:
    """The detectors one scan runs, and whether encoded runs are decoded and scanned."""

    detectors: tuple[Detector, ...]
    decode: bool = True
    _gates: dict[int, GateSet] = field(default_factory=dict, init=False, repr=False, compare=False)
    # each detector with the index of its gate in the gate set (None: ungated), and the number of gates
    _plan: tuple[tuple[Detector, int | None], ...] = field(default=(), init=False, repr=False, compare=False)
    _gated: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.detectors:
            raise ValueError("a detector set needs at least one detector")  # no detectors is not "clean"
        plan: list[tuple[Detector, int | None]] = []
        gated = 0
        for detector in self.detectors:
            plan.append((detector, None if detector.gate is None else gated))
            gated += detector.gate is not None
        object.__setattr__(self, "_plan", tuple(plan))
        object.__setattr__(self, "_gated", gated)

    def _gate_set(self, min_run: int) -> GateSet:
        """One RE2 set of every detector's gate, then the decode gates (compiled once per ``min_run``)."""
        gates = self._gates.get(min_run)
        if gates is None:
            patterns = [d.gate for d in self.detectors if d.gate is not None]
            gates = self._gates[min_run] = GateSet(patterns + list(decode_gates(min_run)))
        return gates

    @classmethod
    def build(cls, *, secrets: bool = True, pii: Sequence[str] = PII_KINDS, presidio: Detector | None = None,
              decode: bool = True, phone_region: str = "US") -> DetectorSet:
        """The standard detectors: the secret rules, the named PII kinds (``card``, ``ssn``, ``email``,
        ``phone``, ``iban``) and, when given, a Presidio detector (:mod:`.presidio`)."""
        unknown = set(pii) - set(PII_KINDS)
        if unknown:
            raise ValueError(f"unknown PII kinds: {sorted(unknown)}")
        factories: dict[str, Callable[[], Detector]] = {
            "card": CardDetector, "ssn": SsnDetector, "email": EmailDetector,
            "phone": lambda: PhoneDetector(phone_region), "iban": IbanDetector,
        }
        chosen: list[Detector] = [_default_secrets()] if secrets else []
        chosen += [factories[kind]() for kind in PII_KINDS if kind in pii]
        if presidio is not None:
            chosen.append(presidio)
        return cls(tuple(chosen), decode)

    def scan(self, text: str, budget: ScanBudget = DEFAULT_BUDGET, clock: Clock = time.thread_time_ns) -> ScanResult:
        """Scan ``text`` within ``budget`` (steps in the module doc)."""
        if len(text) > budget.max_chars:
            return ScanResult((), True, "input_too_large", f"max_chars={budget.max_chars}")
        meter = Meter(budget, clock)
        found: list[Finding] = []
        try:
            self.scan_into(text, meter, found)
        except BudgetExceeded as exc:
            return ScanResult(tidy(found), True, exc.reason, exc.detail)
        except DetectorError as exc:
            return ScanResult(tidy(found), True, "detector_error", exc.detector)
        return ScanResult(tidy(found))

    def scan_into(self, text: str, meter: Meter, found: list[Finding], cover: Sequence[int] = (),
                  decoded: list[str] | None = None, cover_from: int = 0) -> None:
        """Append the findings in ``text`` to ``found`` (which keeps them if a limit stops the scan);
        raises :class:`~.budget.BudgetExceeded` or :class:`DetectorError`.

        ``cover``: positions (sorted) a wanted finding must cover (the boundaries of :func:`~.joined.scan_parts`'
        joined windows). Encoded runs that cover none of them are not decoded: a finding inside one lies
        within the run, so it could not cover a position the run does not. Other findings are reported
        as usual; the caller keeps those it wants. ``cover_from``: runs that start before it are decoded
        whatever ``cover`` says (a text of whole strings followed by boundary windows, scanned in one pass).

        ``decoded``: when given, every decoding that was scanned (each encoded run whose decoding is
        text, at every depth) is appended to it as text, for a second reader of the same decodings (the
        output filter's injection scan) that then need not find and decode the runs again."""
        positions = tuple(cover)
        kept = None if not positions else _kept(positions, cover_from)
        self._scan_view(TextView.of(text), meter, 0, found, None, (positions, cover_from), decoded, kept)

    def _scan_view(self, view: TextView, meter: Meter, depth: int, found: list[Finding],
                   outer: Callable[[Finding], Finding] | None, cover: tuple[tuple[int, ...], int] = ((), 0),
                   decoded: list[str] | None = None, kept: Callable[[Finding], bool] | None = None) -> None:
        size = len(view.data)
        meter.charge(VIEW_UNITS)
        gate_set = self._gate_set(meter.budget.min_encoded_run)
        gated = self._gated
        encodings: set[str] = set()
        for start in range(0, size, CHUNK_CHARS):
            accept_end = min(size, start + CHUNK_CHARS)
            window = Window(start, accept_end, min(size, accept_end + OVERLAP_CHARS))
            open_gates = gate_set.matching(view.data, start, window.stop)
            meter.charge(window.stop - start)
            for i, name in enumerate(DECODE_ENCODINGS):
                if gated + i in open_gates:
                    encodings.add(name)
            for detector, gate in self._plan:
                if gate is not None and gate not in open_gates:
                    continue
                try:
                    new = detector.detect(view, window, meter)
                except BudgetExceeded:
                    raise
                except Exception as exc:  # fail closed on any detector failure
                    raise DetectorError(detector.name) from exc
                if outer is not None:
                    new = [outer(f) for f in new]
                # only findings the caller keeps count against max_findings (not the windows' repeats)
                meter.count_findings(len(new) if kept is None else sum(map(kept, new)))
                found.extend(new)
        if not self.decode or depth >= meter.budget.decode_depth or not encodings:
            return
        for run in encoded_runs(view, meter, meter.budget.min_encoded_run, encodings, *cover):
            meter.count_decoded(len(run.decoded))
            if decoded is not None:
                decoded.append(run.decoded.decode("utf-8", "replace"))
            self._scan_view(TextView.of_bytes(run.decoded), meter, depth + 1, found,
                            _mapper(run.outer_span, run.encoding, outer), decoded=decoded, kept=kept)


def _kept(cover: tuple[int, ...], cover_from: int) -> Callable[[Finding], bool]:
    """Which findings of a ``cover`` scan count against ``max_findings``: with ``cover_from``, those before
    it (the caller counts the window findings it keeps itself, after dropping repeats); without, those
    over a ``cover`` position."""
    if cover_from:
        return lambda finding: finding.start < cover_from

    def crosses(finding: Finding) -> bool:
        i = bisect.bisect_right(cover, finding.start)
        return i < len(cover) and cover[i] < finding.end
    return crosses


class DetectorError(Exception):
    """A detector raised; ``detector`` is its name (the cause is chained, never shown to a client)."""

    def __init__(self, detector: str) -> None:
        super().__init__(detector)
        self.detector = detector


def _mapper(span: Callable[[int, int], tuple[int, int]], encoding: str,
            outer: Callable[[Finding], Finding] | None) -> Callable[[Finding], Finding]:
    def mapped(finding: Finding) -> Finding:
        start, end = span(finding.start, finding.end)
        chain = encoding if finding.encoding == PLAIN else f"{encoding}>{finding.encoding}"
        result = Finding(finding.kind, finding.rule_id, start, end, finding.category, finding.confidence, chain,
                         finding.flags)
        return result if outer is None else outer(result)
    return mapped


def tidy(findings: list[Finding]) -> tuple[Finding, ...]:
    """Sorted by position, each (rule, span, encoding) once."""
    unique = {(f.rule_id, f.start, f.end, f.encoding): f for f in findings}
    return tuple(sorted(unique.values(), key=lambda f: (f.start, f.end, f.rule_id, f.encoding)))


@functools.cache
def _default_secrets() -> SecretDetector:
    return SecretDetector()


@functools.cache
def default_detectors() -> DetectorSet:
    return DetectorSet.build()


def scan_text(text: str, budget: ScanBudget = DEFAULT_BUDGET, detectors: DetectorSet | None = None) -> ScanResult:
    """Scan ``text`` with ``detectors`` (default: every secret rule and every PII kind, no Presidio)."""
    return (detectors or default_detectors()).scan(text, budget)
