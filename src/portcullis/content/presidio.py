"""Optional names and addresses through Presidio (the ``presidio`` extra), behind a small interface.

Presidio is heavy (spaCy; about 12.7 ms per 150 characters and 5.5 s per 100 KB measured here) and
its spaCy model is not on PyPI, so it is never on by default: the operator installs the extra,
supplies a model (``model_path``: an installed package name or a directory spaCy can load) and
enables it. ``presidio_analyzer`` is imported only when a detector is built without an analyzer,
so the gateway imports and runs without the extra.

Anything with :class:`Analyzer`'s ``analyze`` method can stand in for Presidio's
``AnalyzerEngine``; the tests use a fake one, as no spaCy model is installed. Input is handed over
in pieces of at most ``max_chars`` and the budget is checked between pieces: one Presidio call
cannot be interrupted, so the piece size bounds the overrun. Run the scan off the event loop when
this detector is enabled (wiring).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from portcullis.content.budget import Meter
from portcullis.content.findings import Finding
from portcullis.content.view import TextView, Window

DEFAULT_ENTITIES = ("PERSON", "LOCATION", "ADDRESS", "NRP")


class AnalyzerResult(Protocol):
    """What a Presidio ``RecognizerResult`` provides to us."""

    entity_type: str
    start: int
    end: int
    score: float


class Analyzer(Protocol):
    """The part of Presidio's ``AnalyzerEngine`` the adapter uses."""

    def analyze(self, text: str, language: str, entities: list[str] | None = None) -> Sequence[AnalyzerResult]: ...


class PresidioUnavailable(RuntimeError):
    """The extra or the model is missing; the message says which, and how to install it."""


def load_analyzer(model_path: str, language: str = "en") -> Analyzer:
    """A Presidio ``AnalyzerEngine`` on the spaCy model at ``model_path`` (imports Presidio now)."""
    try:
        from presidio_analyzer import AnalyzerEngine  # type: ignore[import-not-found]  # optional extra
        from presidio_analyzer.nlp_engine import NlpEngineProvider  # type: ignore[import-not-found]
    except ImportError:
        raise PresidioUnavailable("Presidio is not installed: pip install 'portcullis[presidio]'") from None
    config = {"nlp_engine_name": "spacy", "models": [{"lang_code": language, "model_name": model_path}]}
    try:
        engine = NlpEngineProvider(nlp_configuration=config).create_engine()
    except (OSError, ValueError) as exc:
        raise PresidioUnavailable(f"the spaCy model cannot be loaded from the configured path ({type(exc).__name__})"
                                  ) from None
    analyzer: Analyzer = AnalyzerEngine(nlp_engine=engine, supported_languages=[language])
    return analyzer


class PresidioDetector:
    """Names, places and addresses from an :class:`Analyzer`, reported as PII ``kind`` = entity type, lower-case."""

    name = "presidio"
    gate = None

    def __init__(self, analyzer: Analyzer, *, entities: Sequence[str] = DEFAULT_ENTITIES, min_score: float = 0.5,
                 language: str = "en", max_chars: int = 20_000) -> None:
        if not entities or max_chars <= 0:
            raise ValueError("a Presidio detector needs entities and a positive max_chars")
        self._analyzer = analyzer
        self._entities = list(entities)
        self._min_score = min_score
        self._language = language
        self._max_chars = max_chars

    @classmethod
    def from_model(cls, model_path: str, **options: object) -> PresidioDetector:
        return cls(load_analyzer(model_path), **options)  # type: ignore[arg-type]

    def detect(self, view: TextView, window: Window, meter: Meter) -> list[Finding]:
        findings = []
        for start in range(window.start, window.accept_end, self._max_chars):
            meter.check()
            stop = min(start + self._max_chars, window.stop)
            results = self._analyzer.analyze(view.text[start:stop], self._language, self._entities)
            meter.charge(100 * (stop - start))  # NER costs about a hundred times a regex pass
            for r in results:
                if r.score >= self._min_score and 0 <= r.start < r.end <= stop - start:
                    findings.append(Finding(r.entity_type.lower(), f"pii.presidio.{r.entity_type.lower()}",
                                            start + r.start, start + r.end, "pii", float(r.score)))
        return findings
