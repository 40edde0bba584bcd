"""What a scan reports: :class:`Finding` (one detected secret or PII value over one text) and
:class:`ScanResult` (the findings, or a *blocked* verdict when the scan could not finish).

Offsets are Python ``str`` indices (code points) into the scanned text, ``start`` inclusive,
``end`` exclusive. A finding in decoded content (:mod:`.decode`) spans the *encoded* run in the
original text, and ``encoding`` names the decoding chain: ``"plain"``, ``"base64"``, ``"hex"``,
``"url"``, ``"quoted-printable"``, or two of them joined by ``">"`` (outer first) for a value
encoded twice (e.g. ``"base64>url"``: a base64 run whose decoding holds a URL-encoded secret).

A finding never carries the matched value: callers that need it slice the text themselves, so a
finding can be logged or recorded as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

Category = Literal["secret", "pii"]
PLAIN = "plain"

# flags a detector may set on a finding (a policy can choose to treat them differently)
FLAG_TEST_VALUE = "test_value"  # a published test/sample value (4111 1111 1111 1111, AKIA…EXAMPLE, 078-05-1120)
FLAG_CHECKSUM_OK = "checksum_ok"  # the kind has a checksum and it verified (GitHub CRC32, Luhn, IBAN mod 97)
FLAG_PARTIAL = "partial"  # a truncated value (a private-key block without its END line)


class Finding(NamedTuple):
    """One detected value: what it is, which rule said so, and where it is. (A named tuple, not a frozen
    dataclass: a frozen dataclass costs about 1.5 µs to build, a named tuple a tenth of that.)"""

    kind: str  # what was found, e.g. "aws_secret_access_key", "card_number", "email"
    rule_id: str  # the rule that matched, e.g. "secret.aws.secret_access_key"
    start: int
    end: int
    category: Category
    confidence: float  # 0..1: how sure the rule is that this is the real thing
    encoding: str = PLAIN
    flags: frozenset[str] = frozenset()

    def shifted(self, offset: int) -> Finding:
        """The same finding ``offset`` characters further on (a text scanned as part of a larger one)."""
        return self._replace(start=self.start + offset, end=self.end + offset)


BlockReason = Literal["budget_exceeded", "input_too_large", "too_many_findings", "decode_limit", "detector_error"]


@dataclass(frozen=True, slots=True)
class ScanResult:
    """The outcome of one scan. ``blocked`` means the scan did not finish, so the text must be treated
    as unsafe (fail closed); ``findings`` then holds what was found before it stopped."""

    findings: tuple[Finding, ...]
    blocked: bool = False
    reason: BlockReason | None = None
    detail: str = ""  # value-free: which detector or limit, never text from the input

    @property
    def clean(self) -> bool:
        """Finished and found nothing."""
        return not self.blocked and not self.findings
