"""Structured PII other than card numbers: US social security numbers, e-mail addresses, phone
numbers (``phonenumbers``) and IBANs (``python-stdnum``).

Each detector finds candidates with a narrow RE2 pattern, then validates them in Python; the
validators are the costly part, so each candidate is charged to the scan budget.
"""

from __future__ import annotations

import phonenumbers
from stdnum import iban

from portcullis.content.budget import Meter
from portcullis.content.findings import FLAG_CHECKSUM_OK, FLAG_TEST_VALUE, Finding
from portcullis.content.regex import Pattern
from portcullis.content.view import TextView, Window

_SSN = Pattern(r"(?:^|[^0-9A-Za-z_.,/:-])(\d{3}-\d{2}-\d{4}|\d{3} \d{2} \d{4})(?:[^0-9A-Za-z_-]|$)", group=1)
_SSN_SAMPLES = frozenset({"078051120", "219099999", "123456789"})

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = Pattern(r"(?:^|[^A-Za-z0-9._%+-])([A-Za-z0-9_%+-][A-Za-z0-9._%+-]{0,63}@" + _LABEL
                 + r"(?:\." + _LABEL + r"){0,8}\.[A-Za-z]{2,24})(?:[^A-Za-z0-9_-]|$)", group=1)
_NOT_TLDS = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "js", "css", "map", "ts"})

_PHONE = Pattern(r"(?:^|[^0-9A-Za-z_+.,/:-])(\+?\(?\d[\d ().-]{6,20}\d)(?:[^0-9A-Za-z_]|$)", group=1)
_DATE = Pattern(r"^\d{4}[-./]\d{1,2}[-./]\d{1,2}|^\d{1,2}[-./]\d{1,2}[-./]\d{2,4}$")
_DOTTED_QUAD = Pattern(r"^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$")
PHONE_PARSE_UNITS = 4096  # a phonenumbers parse costs about 40 µs: charge it like 4 KB of scanning

_IBAN = Pattern(r"\b([A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?)\b", group=1)


class SsnDetector:
    """US SSNs written ``AAA-GG-SSSS`` or ``AAA GG SSSS``; area 000, 666 and 900-999, group 00 and
    serial 0000 are never issued, so they are not reported. Bare nine-digit runs are not considered
    (too many other things are nine digits)."""

    name = "ssn"

    def detect(self, view: TextView, window: Window, meter: Meter) -> list[Finding]:
        findings = []
        for _, _, vs, ve in _SSN.finditer(view.data, window.start, window.accept_end, window.stop):
            meter.charge(32)
            digits = view.text[vs:ve].replace("-", "").replace(" ", "")
            area, group, serial = digits[:3], digits[3:5], digits[5:]
            if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
                continue
            flags = frozenset({FLAG_TEST_VALUE}) if digits in _SSN_SAMPLES else frozenset()
            findings.append(Finding("us_ssn", "pii.us_ssn", vs, ve, "pii", 0.8, flags=flags))
        return findings


class EmailDetector:
    name = "email"

    def detect(self, view: TextView, window: Window, meter: Meter) -> list[Finding]:
        if view.data.find(b"@", window.start, window.stop) < 0:
            return []
        findings = []
        for _, _, vs, ve in _EMAIL.finditer(view.data, window.start, window.accept_end, window.stop):
            meter.charge(32)
            value = view.text[vs:ve]
            local, _, domain = value.partition("@")
            if local.endswith(".") or ".." in local or domain.rsplit(".", 1)[1].lower() in _NOT_TLDS:
                continue
            findings.append(Finding("email", "pii.email", vs, ve, "pii", 0.9))
        return findings


class PhoneDetector:
    """Phone numbers that ``phonenumbers`` accepts as valid, written with a ``+`` or with separators.
    A bare digit run (an order number, an id, a timestamp) is not taken as a phone number, nor is a
    date or a dotted quad. Numbers without a country code are read in ``region``."""

    name = "phone"

    def __init__(self, region: str = "US") -> None:
        self.region = region

    def detect(self, view: TextView, window: Window, meter: Meter) -> list[Finding]:
        findings = []
        for _, _, vs, ve in _PHONE.finditer(view.data, window.start, window.accept_end, window.stop):
            meter.charge(32)
            candidate = view.text[vs:ve]
            raw = candidate.encode("ascii")
            digits = sum(c.isdigit() for c in candidate)
            if digits < 8 or (candidate.isdigit()) or _DATE.search(raw, 0, len(raw)) \
                    or _DOTTED_QUAD.search(raw, 0, len(raw)):
                continue
            meter.charge(PHONE_PARSE_UNITS)
            for start, end in self._valid_numbers(candidate, digits, meter):
                findings.append(Finding("phone_number", "pii.phone", vs + start, vs + end, "pii", 0.7))
        return findings

    def _valid_numbers(self, candidate: str, digits: int, meter: Meter) -> list[tuple[int, int]]:
        try:
            if digits <= 15 and phonenumbers.is_valid_number(phonenumbers.parse(candidate, self.region)):
                return [(0, len(candidate))]
        except phonenumbers.NumberParseException:
            pass
        if digits <= 15:
            return []
        # several numbers run together ("415-555-2671 650-555-1234"): let the library split them
        meter.charge(4 * PHONE_PARSE_UNITS)
        matcher = phonenumbers.PhoneNumberMatcher(candidate, self.region, leniency=phonenumbers.Leniency.VALID,
                                                  max_tries=8)
        return [(m.start, m.end) for m in matcher]


class IbanDetector:
    """IBANs (upper-case, optionally grouped by spaces) whose country length and mod-97 check verify."""

    name = "iban"

    def detect(self, view: TextView, window: Window, meter: Meter) -> list[Finding]:
        findings = []
        for _, _, vs, ve in _IBAN.finditer(view.data, window.start, window.accept_end, window.stop):
            meter.charge(64)
            candidate = view.text[vs:ve]
            end = _valid_prefix(candidate)
            if end:
                findings.append(Finding("iban", "pii.iban", vs, vs + end, "pii", 0.95,
                                        flags=frozenset({FLAG_CHECKSUM_OK})))
        return findings


def _valid_prefix(candidate: str) -> int:
    """Length of the longest prefix of ``candidate`` that is a valid IBAN (ending on a group), or 0."""
    cut = len(candidate)
    while cut >= 15:
        if iban.is_valid(candidate[:cut]):
            return cut
        space = candidate.rfind(" ", 0, cut)
        if space < 0:
            return 0
        cut = space
    return 0
