"""Encoded runs: base64 / base64url, hex, URL-encoding (``%xx``) and quoted-printable (``=XX``).

:func:`encoded_runs` finds candidate runs in a view, decodes each and keeps those whose decoding
is text (a secret inside an image or an archive is out of scope: binary decodings are not
scanned). The scanner scans each kept decoding like any text, one level deeper, up to
``ScanBudget.decode_depth`` levels, and :meth:`EncodedRun.outer_span` maps a finding in the
decoding back onto the encoded characters: exactly for base64 (to the 4-character groups that
hold the value's bytes) and hex (two characters per byte; hex in dashed groups, such as a UUID's,
is read without its dashes and maps to the whole run), the whole run for URL-encoding and
quoted-printable, whose decodings are not a fixed stride.

Bounds: runs shorter than ``min_run`` are ignored; every decoded byte counts against
``ScanBudget.max_decoded_chars`` (all depths together), and every run is charged to the budget.
Runs are searched in the whole text (not per chunk), so a long run is decoded from its real start;
base64 is then taken from the run's first character (a run glued to a preceding word is not
realigned), and line-wrapped base64 is read one line at a time.
"""

from __future__ import annotations

import base64
import binascii
import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from portcullis.content.budget import Meter
from portcullis.content.regex import Pattern
from portcullis.content.view import TextView

_PRINTABLE = bytes(range(0x20, 0x7F)) + b"\t\n\r"
_CONTROL = bytes(b for b in range(0x20) if b not in (9, 10, 13))
_HEX = b"0123456789abcdefABCDEF"
_HEX_DASH = _HEX + b"-"
_URL_CHARS = r"[A-Za-z0-9._~!*'()+,;=:@/?&$#\[\]-]"
_QP_CHARS = r"[!-<>-~]"


ENCODINGS = ("base64", "url", "quoted-printable")  # base64 covers hex (a hex run is a base64-alphabet run)


def gates(min_run: int) -> tuple[str, str, str]:
    """For each of :data:`ENCODINGS`, a pattern that occurs wherever a run of that encoding does."""
    return r"[A-Za-z0-9+/_-]{" + str(min_run) + "}", r"%[0-9A-Fa-f]{2}", r"=(?:[0-9A-F]{2}|\r?\n)"


_URL = Pattern(_URL_CHARS + r"*(?:%[0-9A-Fa-f]{2}" + _URL_CHARS + r"*)+")
_QP = Pattern(_QP_CHARS + r"*(?:=(?:[0-9A-F]{2}|\r?\n)" + _QP_CHARS + r"*){2,}")
# base64-alphabet bytes become "a", all others " ": a run of min_run "a" is then found by bytes.find
_B64_CLASS = bytes(0x61 if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "+/_-") else 0x20 for b in range(256))


def b64_runs(data: bytes, min_run: int) -> Iterator[tuple[int, int]]:
    """Maximal base64-alphabet runs of at least ``min_run`` bytes, with up to two "=" of padding.

    A result is full of such runs (digests, UUIDs, long identifiers), so this is written with C-level
    byte searches (about 0.5 µs a run) rather than a regex search per run (about 3 µs): the first
    occurrence of ``min_run`` alphabet bytes is where a long enough run starts."""
    marks = data.translate(_B64_CLASS)
    needle = b"a" * min_run
    start = marks.find(needle)
    while start >= 0:
        end = marks.find(b" ", start + min_run)
        end = len(data) if end < 0 else end
        padded = end
        while padded < len(data) and padded - end < 2 and data[padded] == 0x3D:
            padded += 1
        yield start, padded
        start = marks.find(needle, end)


@dataclass(frozen=True, slots=True)
class EncodedRun:
    start: int
    end: int
    encoding: str  # "base64", "hex", "url", "quoted-printable"
    decoded: bytes

    def outer_span(self, start: int, end: int) -> tuple[int, int]:
        """The encoded characters that hold decoded bytes ``[start, end)``."""
        if self.encoding == "base64":
            return self.start + start // 3 * 4, min(self.end, self.start + -(-end // 3) * 4)
        if self.encoding == "hex" and self.end - self.start == 2 * len(self.decoded):
            return self.start + 2 * start, min(self.end, self.start + 2 * end)  # undashed: two characters a byte
        return self.start, self.end


def is_text(raw: bytes) -> bool:
    """Mostly printable ASCII (at most 15 % other bytes), or valid UTF-8 with at most 10 % control
    characters: everything the injection scanner would read as text (it wants 90 % printable
    characters) is text here too, since the output filter hands it these decodings."""
    if not raw:
        return False
    if len(raw.translate(None, _PRINTABLE)) <= len(raw) * 0.15:
        return True
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return len(raw.translate(None, bytes(range(0x20, 0x100)) + b"\t\n\r")) <= len(raw) * 0.10


def _decode_b64(token: bytes) -> tuple[str, bytes] | None:
    if b"-" in token and not token.translate(None, _HEX_DASH):
        token = token.replace(b"-", b"")  # hex digits in dashed groups (a UUID, a dashed digest): read as hex
    body = token.rstrip(b"=")
    if len(body) % 4 == 1:
        body = body[:-1]
    if len(body) % 2 == 0 and not body.translate(None, _HEX):
        if body[::2].translate(None, b"01234567"):  # a byte >= 0x80: not ASCII text (a digest, an id)
            return None
        return "hex", bytes.fromhex(body.decode("ascii"))
    urlsafe = b"-" in body or b"_" in body
    if urlsafe and (b"+" in body or b"/" in body):
        return None  # two alphabets: a path or an identifier, not base64
    padded = body + b"=" * (-len(body) % 4)
    try:
        return "base64", (base64.urlsafe_b64decode(padded) if urlsafe else base64.b64decode(padded, validate=True))
    except (binascii.Error, ValueError):
        return None


def encoded_runs(view: TextView, meter: Meter, min_run: int, present: set[str],
                 cover: tuple[int, ...] = (), cover_from: int = 0) -> Iterator[EncodedRun]:
    """Runs in ``view`` whose decoding is text, base64/hex first, then URL, then QP; only the encodings
    in ``present`` (whose :func:`gates` matched) are searched and, when ``cover`` (sorted) is given,
    only runs that start at or after ``cover_from`` and hold one of its positions (``start < p < end``)
    are decoded, with every run before ``cover_from``."""
    data = view.data

    def wanted(start: int, end: int) -> bool:  # ``cover`` is sorted: the first position past ``start``
        if not cover or start < cover_from:
            return True
        i = bisect.bisect_right(cover, start)
        return i < len(cover) and cover[i] < end

    known: dict[bytes, tuple[str, bytes] | None] = {}  # a result repeats its ids: each decoded once
    for start, end in b64_runs(data, min_run) if "base64" in present else ():
        if not wanted(start, end):
            continue
        meter.charge(64 + end - start)
        token = data[start:end]
        decoded = known[token] if token in known else known.setdefault(token, _decode_b64(token))
        if decoded is not None and is_text(decoded[1]):
            yield EncodedRun(start, end, decoded[0], decoded[1])
    for pattern, encoding in ((_URL, "url"), (_QP, "quoted-printable")):
        if encoding not in present:
            continue
        for _, _, start, end in pattern.finditer(data, 0, len(data), len(data)):
            if end - start < min_run or not wanted(start, end):
                continue
            meter.charge(64 + end - start)
            token = data[start:end]
            raw = unquote_to_bytes(token) if encoding == "url" else binascii.a2b_qp(token)
            if raw != token and is_text(raw):
                yield EncodedRun(start, end, encoding, raw)
