"""Canary values of every kind the acceptance suite named, and results that plant them in every channel.

Each canary is made up here (random-looking, valid where the kind has a checksum: Luhn, IBAN mod 97,
GitHub's CRC32 is not needed for detection) and never a published test value, since those are flagged
as test values. :func:`plant` builds a ``CallToolResult`` that carries one canary in one channel under
one encoding; a hostile upstream answers with it (``tests/security/canary_service.py``).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import quote

# kind the detectors report -> canary value
CANARIES: dict[str, str] = {
    "aws_access_key_id": "AKIAZ5GMHYJKLMNOPQR7",
    "github_token": "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
    "slack_token": "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "stripe_key": "sk_live_51HqZx8KjLmNoPqRsTuVwXyZ0123456789abcdEF",
    "jwt": ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIiwicm9sZSI6ImFkbWluIn0."
            "q3Hk8ZfX2mVbN7pLwR4tYcJ9sDgA1eUo6iKzM0xQvWs"),
    "private_key": ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAz8Kq3vT1mN2pL5rX9wY7bC4dF6gH8jK0lM2nP4qR6sT8uV0w"
                    "\nX2yZ4aB6cD8eF0gH2iJ4kL6mN8oP0qR2sT4uV6wX8yZ0aB2cD4eF6gH8iJ0kL2mN4o\n"
                    "-----END RSA PRIVATE KEY-----"),
    "connection_string_password": "postgres://app:S3cr3tPassw0rd9@db.internal:5432/orders",
    "card_number": "4556 7375 8689 9855",
    "us_ssn": "219-09-9999",
    "email": "jane.canary@corp-mail.net",
    "phone_number": "+1 415 555 0172",
    "iban": "DE89370400440532013000",
}
CHANNELS = ("text", "structured", "structured_key", "resource_text", "resource_blob", "error_result", "meta",
            "annotations")
ENCODINGS = ("plain", "base64", "url", "hex")
# a canary cut in two (after encoding) across two text blocks; sibling fields are not rejoined (a name
# next to an e-mail address would be read as one address: docs/decisions.md, "Split values")
SPLITS = ("split",)


def encode(value: str, encoding: str) -> str:
    if encoding == "base64":
        return base64.b64encode(value.encode()).decode()
    if encoding == "url":
        return quote(value, safe="")
    if encoding == "hex":
        return binascii.hexlify(value.encode()).decode()
    return value


def carried(kind: str, encoding: str) -> str:
    """The text the upstream writes: the canary with a little context, encoded as asked."""
    value = CANARIES[kind]
    return f"value: {value} end" if encoding == "plain" else f"blob {encode(value, encoding)} end"


def plant(spec: str) -> dict[str, Any]:
    """``<channel>:<encoding>:<kind>`` -> the result carrying that canary there; the :data:`SPLITS`
    channels cut the encoded canary in two halves, each in its own string."""
    channel, encoding, kind = spec.split(":", 2)
    text = carried(kind, encoding)
    ok: dict[str, Any] = {"content": [{"type": "text", "text": "report follows"}], "isError": False}
    if channel == "text":
        ok["content"].append({"type": "text", "text": text})
    elif channel in SPLITS:
        value = encode(CANARIES[kind], encoding)
        half = len(value) // 2
        ok["content"] = [{"type": "text", "text": "token " + value[:half]}, {"type": "text", "text": value[half:]}]
    elif channel == "structured":
        ok["structuredContent"] = {"rows": [{"note": text}]}
    elif channel == "structured_key":
        ok["structuredContent"] = {CANARIES[kind]: "x"}
    elif channel == "resource_text":
        ok["content"].append({"type": "resource", "resource": {"uri": "file:///r.txt", "mimeType": "text/plain",
                                                               "text": text}})
    elif channel == "resource_blob":
        ok["content"].append({"type": "resource", "resource": {
            "uri": "file:///r.json", "mimeType": "application/json",
            "blob": base64.b64encode(text.encode()).decode()}})
    elif channel == "error_result":
        ok = {"content": [{"type": "text", "text": "failed: " + text}], "isError": True}
    elif channel == "meta":
        ok["content"].append({"type": "text", "text": "ok", "_meta": {"debug": text}})
    elif channel == "annotations":
        ok["content"].append({"type": "text", "text": "ok", "annotations": {"audience": ["user"], "note": text}})
    else:
        raise ValueError(channel)
    return ok


def leaked(blob: str) -> list[str]:
    """Every canary (in any encoding, or either half of a split one) that occurs in ``blob``."""
    out = []
    for kind, value in CANARIES.items():
        forms = {value, *(encode(value, e) for e in ENCODINGS[1:]), value.replace("\n", "\\n")}
        forms |= {piece for form in list(forms) if len(form) >= 16
                  for piece in (form[:len(form) // 2], form[len(form) // 2:])}
        if any(form in blob for form in forms):
            out.append(kind)
    return out
