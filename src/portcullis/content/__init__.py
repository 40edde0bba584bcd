"""Secret and PII detection over text: the engine the output filter (issue 12) runs on every string
a result or message carries.

Public surface:

- :func:`scan_text` / :meth:`DetectorSet.scan`: one text -> :class:`ScanResult` (findings, or
  *blocked* when a limit of the :class:`ScanBudget` was reached: fail closed).
- :func:`scan_parts`: several strings scanned alone and across their boundaries (split secrets),
  findings mapped to part spans.
- :func:`string_leaves`: every string of a JSON value with its path.
- :class:`Detector`: the interface a detector implements; :class:`DetectorSet.build` assembles the
  standard ones (own secret rules, card/SSN/e-mail/phone/IBAN, optional Presidio).

The module imports ``re2`` (google-re2), which must load before ``regopy`` in a process; importing
this package first is safe.
"""

from portcullis.content.budget import ScanBudget
from portcullis.content.findings import FLAG_CHECKSUM_OK, FLAG_PARTIAL, FLAG_TEST_VALUE, Finding, ScanResult
from portcullis.content.joined import PartFinding, PartSpan, PartsResult, scan_parts
from portcullis.content.leaves import Leaf, string_leaves
from portcullis.content.presidio import PresidioDetector
from portcullis.content.scan import Detector, DetectorSet, scan_text

__all__ = [
    "FLAG_CHECKSUM_OK", "FLAG_PARTIAL", "FLAG_TEST_VALUE", "Detector", "DetectorSet", "Finding", "Leaf",
    "PartFinding", "PartSpan", "PartsResult", "PresidioDetector", "ScanBudget", "ScanResult", "scan_parts",
    "scan_text", "string_leaves",
]
