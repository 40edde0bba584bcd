"""Payment card numbers: 13 to 19 digits, optionally grouped by spaces or dashes, with a known
issuer prefix (IIN range) for their length and a valid Luhn check digit.

Published test numbers (4111 1111 1111 1111 and kin) are still card numbers: they are reported,
with :data:`~.findings.FLAG_TEST_VALUE`, and a policy decides what to do with them. A digit run
inside a longer token (a decimal, an identifier, a hex digest) is not a card: the candidate must
stand alone, and its separators, if any, must be one character used throughout, with a first
group of four digits (the printed layouts 4-4-4-4, 4-6-5, 4-6-4).
"""

from __future__ import annotations

from portcullis.content.budget import Meter
from portcullis.content.findings import FLAG_CHECKSUM_OK, FLAG_TEST_VALUE, Finding
from portcullis.content.regex import Pattern
from portcullis.content.validators import luhn_ok
from portcullis.content.view import TextView, Window

_CANDIDATE_SOURCE = r"(?:^|[^0-9A-Za-z_.,/:-])(\d{4}(?:[ -]?\d){9,15})(?:[^0-9A-Za-z_]|$)"
_CANDIDATE = Pattern(_CANDIDATE_SOURCE, group=1)

# (first digits, inclusive range of that many leading digits, allowed lengths)
_RANGES: tuple[tuple[int, int, int, frozenset[int]], ...] = (
    (1, 4, 4, frozenset({13, 16, 19})),  # Visa
    (2, 51, 55, frozenset({16})),  # Mastercard
    (4, 2221, 2720, frozenset({16})),  # Mastercard 2-series
    (2, 34, 34, frozenset({15})), (2, 37, 37, frozenset({15})),  # American Express
    (3, 300, 305, frozenset(range(14, 20))), (2, 36, 36, frozenset(range(14, 20))),  # Diners Club
    (2, 38, 39, frozenset(range(14, 20))),
    (4, 3528, 3589, frozenset(range(16, 20))),  # JCB
    (4, 6011, 6011, frozenset(range(16, 20))), (3, 644, 649, frozenset(range(16, 20))),  # Discover
    (2, 65, 65, frozenset(range(16, 20))),
    (2, 62, 62, frozenset(range(16, 20))),  # UnionPay
    (4, 2200, 2204, frozenset(range(16, 20))),  # Mir
    (2, 50, 50, frozenset(range(13, 20))), (2, 56, 58, frozenset(range(13, 20))),  # Maestro
    (2, 60, 60, frozenset(range(13, 20))), (2, 63, 63, frozenset(range(13, 20))),
    (2, 67, 67, frozenset(range(13, 20))),
    (2, 81, 82, frozenset({16})),  # RuPay
    (4, 9792, 9792, frozenset({16})),  # Troy
)

TEST_NUMBERS = frozenset({
    "4111111111111111", "4242424242424242", "4012888888881881", "4222222222222", "4000056655665556",
    "4005519200000004", "4000000000000002", "4917610000000000", "5555555555554444", "5105105105105100",
    "5200828282828210", "2223003122003222", "2221000000000009", "378282246310005", "371449635398431",
    "378734493671000", "6011111111111117", "6011000990139424", "6011000000000004", "3530111333300000",
    "3566002020360505", "30569309025904", "38520000023237", "36227206271667", "6200000000000005",
    "6759649826438453", "5019717010103742",
})


def issuer_ok(digits: str) -> bool:
    """``digits`` starts with a known card issuer prefix allowed at its length."""
    n = len(digits)
    return any(n in lengths and lo <= int(digits[:width]) <= hi for width, lo, hi, lengths in _RANGES)


def _layout_ok(candidate: str) -> bool:
    separators = {c for c in candidate if not c.isdigit()}
    if not separators:
        return True
    if len(separators) != 1:
        return False
    groups = candidate.split(separators.pop())
    return len(groups[0]) == 4 and all(1 <= len(g) <= 6 for g in groups)


class CardDetector:
    name = "card"
    gate = _CANDIDATE_SOURCE

    def detect(self, view: TextView, window: Window, meter: Meter) -> list[Finding]:
        findings = []
        for _, _, vs, ve in _CANDIDATE.finditer(view.data, window.start, window.accept_end, window.stop):
            meter.charge(64)
            candidate = view.text[vs:ve]
            digits = candidate.replace(" ", "").replace("-", "")
            if not (13 <= len(digits) <= 19 and _layout_ok(candidate) and issuer_ok(digits) and luhn_ok(digits)):
                continue
            flags = {FLAG_CHECKSUM_OK}
            if digits in TEST_NUMBERS:
                flags.add(FLAG_TEST_VALUE)
            findings.append(Finding("card_number", "pii.card", vs, ve, "pii", 0.9, flags=frozenset(flags)))
        return findings
