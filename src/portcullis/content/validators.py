"""Checks that run on a candidate value after its pattern matched: entropy, checksums, structure.

Pure functions over short ASCII strings (a value is at most a few KB: patterns bound their
repetitions), so each costs microseconds; the scanner charges them to the budget all the same.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import zlib
from collections import Counter

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def shannon_entropy(value: str) -> float:
    """Bits per character of ``value`` (0 for the empty string)."""
    if not value:
        return 0.0
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())


def base62(number: int, width: int) -> str:
    digits = []
    while number:
        number, rem = divmod(number, 62)
        digits.append(_BASE62[rem])
    return "".join(reversed(digits)).rjust(width, "0")


def github_checksum_ok(token: str) -> bool:
    """GitHub's classic tokens (``ghp_`` and kin) end in the base62 CRC32 of their 30 random characters."""
    body = token.partition("_")[2]
    if len(body) != 36:
        return False
    return base62(zlib.crc32(body[:30].encode("ascii")), 6) == body[30:]


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _b64url_json(segment: str) -> object:
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    return json.loads(raw)


def jwt_header_ok(token: str) -> bool:
    """The first segment decodes (base64url) to a JSON object that names an ``alg`` or a ``typ``."""
    try:
        header = _b64url_json(token.split(".", 1)[0])
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(header, dict) and ("alg" in header or "typ" in header)


_PLACEHOLDER_PREFIXES = ("$", "{{", "<", "%", "${", "#{", "env(", "process.env", "os.environ")
_PLACEHOLDER_WORDS = frozenset({
    "password", "passwd", "secret", "changeme", "example", "redacted", "placeholder", "your_password",
    "yourpassword", "your-password", "null", "none", "undefined", "required", "optional", "string",
})


def placeholder(value: str) -> bool:
    """A template reference, a mask or a word standing in for a credential rather than one."""
    lowered = value.lower().strip("\"'`")
    if not lowered or lowered.startswith(_PLACEHOLDER_PREFIXES) or lowered in _PLACEHOLDER_WORDS:
        return True
    if len(set(lowered)) <= 2:  # "********", "xxxxxxxx", "--------"
        return True
    return "[redacted" in lowered or lowered.startswith(("your_", "your-", "my_", "<"))


def char_classes(value: str) -> int:
    """How many of lower-case, upper-case, digit and other characters ``value`` uses."""
    return (any(c.islower() for c in value) + any(c.isupper() for c in value)
            + any(c.isdigit() for c in value) + any(not c.isalnum() for c in value))


def generic_secret_ok(value: str, min_entropy: float) -> bool:
    """An assigned value that looks like a credential: not a placeholder, mixed characters, enough entropy
    (the threshold is lowered for short values, whose entropy cannot reach it: log2 of the length, less 0.5)."""
    if placeholder(value) or char_classes(value) < 2:
        return False
    return shannon_entropy(value) >= min(min_entropy, math.log2(len(value)) - 0.5)
