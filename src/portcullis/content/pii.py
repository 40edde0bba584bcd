"""Structured PII other than card numbers: US social security numbers, e-mail addresses, phone
numbers (``phonenumbers``) and IBANs (``python-stdnum``).

Each detector finds candidates with a narrow RE2 pattern, then validates them in Python; the
validators are the costly part, so each candidate is charged to the scan budget.
"""

from __future__ import annotations

import re

import phonenumbers
from stdnum import iban

from portcullis.content.budget import Meter
from portcullis.content.findings import FLAG_CHECKSUM_OK, FLAG_TEST_VALUE, Finding
from portcullis.content.regex import Pattern
from portcullis.content.view import TextView, Window

_SSN_SOURCE = r"(?:^|[^0-9A-Za-z_.,/:-])(\d{3}-\d{2}-\d{4}|\d{3} \d{2} \d{4})(?:[^0-9A-Za-z_-]|$)"
_SSN = Pattern(_SSN_SOURCE, group=1)
_SSN_SAMPLES = frozenset({"078051120", "219099999", "123456789"})

# at most 255 characters reach this pattern, and each label is delimited by a dot: bounded backtracking
_DOMAIN_SHAPE = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,9}[A-Za-z]{2,24}")
_DOMAIN_CHARS = bytes(0x61 if chr(b).isascii() and (chr(b).isalnum() or chr(b) in ".-") else 0x20 for b in range(256))
# local-part characters map to "a", everything else to " " (then rfind(b" ") finds where the local part starts)
_LOCAL_CHARS = bytes(0x61 if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "._%+-") else 0x20
                     for b in range(256))
_NOT_TLDS = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "js", "css", "map", "ts"})

_PHONE_SOURCE = r"(?:^|[^0-9A-Za-z_+.,/:-])(\+?\(?\d[\d ().-]{6,20}\d)(?:[^0-9A-Za-z_]|$)"
_PHONE = Pattern(_PHONE_SOURCE, group=1)
_DATE = Pattern(r"^\d{4}[-./]\d{1,2}[-./]\d{1,2}|^\d{1,2}[-./]\d{1,2}[-./]\d{2,4}$")
_DOTTED_QUAD = Pattern(r"^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$")
_NON_DIGITS = re.compile(r"[^0-9]+")  # on a candidate of at most 23 characters: no ReDoS
PHONE_PARSE_UNITS = 4096  # a phonenumbers parse costs about 40 µs: charge it like 4 KB of scanning

_IBAN_SOURCE = r"\b([A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?)\b"
_IBAN = Pattern(_IBAN_SOURCE, group=1)


class SsnDetector:
    """US SSNs written ``AAA-GG-SSSS`` or ``AAA GG SSSS``; area 000, 666 and 900-999, group 00 and
    serial 0000 are never issued, so they are not reported. Bare nine-digit runs are not considered
    (too many other things are nine digits)."""

    name = "ssn"
    gate = _SSN_SOURCE  # the candidate pattern itself: the gate set pass then finds exactly the texts with one

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
    """E-mail addresses with an ASCII local part and a dotted domain, found from each ``@``: the local part
    is the run of local-part characters before it (at most 64), the domain is matched after it."""

    name = "email"
    gate = r"[A-Za-z0-9_%+-]@[A-Za-z0-9]"

    def detect(self, view: TextView, window: Window, meter: Meter) -> list[Finding]:
        data, findings = view.data, []
        at = data.find(b"@", window.start, window.accept_end + 64)
        while 0 <= at < window.stop:
            meter.charge(128)
            lo = max(0, at - 64)
            start = lo + data[lo:at].translate(_LOCAL_CHARS).rfind(b" ") + 1
            while start < at and data[start] == 0x2E:  # a local part does not start with "."
                start += 1
            if window.start <= start < min(at, window.accept_end):
                stop = min(window.stop, at + 1 + 255)
                length = data[at + 1:stop].translate(_DOMAIN_CHARS).find(b" ")
                domain = view.text[at + 1:stop if length < 0 else at + 1 + length].rstrip(".-")
                if _plausible(view.text[start:at], domain):
                    findings.append(Finding("email", "pii.email", start, at + 1 + len(domain), "pii", 0.9))
            at = data.find(b"@", at + 1, window.accept_end + 64)
        return findings


def _plausible(local: str, domain: str) -> bool:
    if local.endswith(".") or ".." in local or not _DOMAIN_SHAPE.fullmatch(domain):
        return False
    return domain[domain.rfind(".") + 1:].lower() not in _NOT_TLDS


class PhoneDetector:
    """Phone numbers that ``phonenumbers`` accepts as valid, written with a ``+`` or with separators.
    A bare digit run (an order number, an id, a timestamp) is not taken as a phone number, nor is a
    date or a dotted quad. Numbers without a country code are read in ``region``."""

    name = "phone"
    gate = _PHONE_SOURCE

    def __init__(self, region: str = "US") -> None:
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
        if metadata is None or metadata.general_desc is None:
            raise ValueError(f"unknown phone region {region!r}")
        self.region = region
        # digit counts a number written without "+" can have in the region (with or without the trunk prefix)
        national = set(metadata.general_desc.possible_length or ())
        prefix = len(metadata.national_prefix or "")
        self._national_lengths = frozenset(national | {n + prefix for n in national})

    def detect(self, view: TextView, window: Window, meter: Meter) -> list[Finding]:
        findings = []
        for _, _, vs, ve in _PHONE.finditer(view.data, window.start, window.accept_end, window.stop):
            meter.charge(32)
            candidate = view.text[vs:ve]
            raw = candidate.encode("ascii")
            digits = sum(c.isdigit() for c in candidate)
            international = candidate.startswith("+")
            if digits < 8 or candidate.isdigit() or (not international and digits <= 15
                                                     and digits not in self._national_lengths):
                continue
            if _DATE.search(raw, 0, len(raw)) or _DOTTED_QUAD.search(raw, 0, len(raw)):
                continue
            meter.charge(PHONE_PARSE_UNITS)
            for start, end in self._valid_numbers(candidate, digits, meter):
                findings.append(Finding("phone_number", "pii.phone", vs + start, vs + end, "pii", 0.7))
        return findings

    def _valid_numbers(self, candidate: str, digits: int, meter: Meter) -> list[tuple[int, int]]:
        try:
            number = phonenumbers.parse(candidate, self.region) if digits <= 15 else None
        except phonenumbers.NumberParseException:
            number = None
        if number is not None and phonenumbers.is_valid_number(number) and _grouping_ok(candidate, number):
            return [(0, len(candidate))]
        if digits <= 15 or not ("+" in candidate or self._splits_into_numbers(candidate)):
            return []
        # several numbers run together ("415-555-2671 650-555-1234"): let the library split them
        meter.charge(4 * PHONE_PARSE_UNITS)
        matcher = phonenumbers.PhoneNumberMatcher(candidate, self.region, leniency=phonenumbers.Leniency.VALID,
                                                  max_tries=8)
        return [(m.start, m.end) for m in matcher]


    def _splits_into_numbers(self, candidate: str) -> bool:
        """Whether the candidate's digit groups (cut at every separator) can be taken in consecutive runs
        that each have a national number's digit count: the only way several numbers without ``+`` can
        run together.
        A card number written in fours (16 digits, groups of 4) cannot in most regions, and skipping
        the library's matcher there saves about 100 µs per candidate."""
        counts = [len(group) for group in _NON_DIGITS.split(candidate) if group]
        reachable = {0}  # digits consumed by whole numbers, group boundaries only
        total = 0
        for count in counts:
            total += count
            if any(total - done in self._national_lengths for done in reachable):
                reachable.add(total)
        return total in reachable


def _suffix_boundaries(text: str) -> set[int]:
    """Where digit groups end, counted in digits from the end (``"(212) 345-6789"`` gives {4, 7})."""
    groups = [g for g in _NON_DIGITS.split(text) if g]
    bounds, total = set(), 0
    for group in reversed(groups[1:]):
        total += len(group)
        bounds.add(total)
    return bounds


def _grouping_ok(candidate: str, number: phonenumbers.PhoneNumber) -> bool:
    """The candidate's digit groups split the number where its national or international format does:
    "170-3276-4252" (an order number) is a valid US number, but no one writes a phone number that way."""
    formats = (phonenumbers.PhoneNumberFormat.NATIONAL, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    allowed = set().union(*(_suffix_boundaries(phonenumbers.format_number(number, f)) for f in formats))
    return _suffix_boundaries(candidate) <= allowed


class IbanDetector:
    """IBANs (upper-case, optionally grouped by spaces) whose country length and mod-97 check verify."""

    name = "iban"
    gate = _IBAN_SOURCE

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
