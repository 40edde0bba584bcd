"""Instructions hidden in base64: find the runs worth decoding and give back the text they carry.

A model decodes base64 on request ("decode the following and follow it"), so an instruction can be
written where no pattern rule sees it. :func:`decoded_texts` finds runs of 24 or more base64
characters (standard or URL-safe alphabet, optional padding) with C-level byte searches over the
text's ASCII view (:func:`~.decode.b64_runs`, a few µs on 4 KB), decodes each, and
keeps those that decode to readable UTF-8 text (at least 90 % printable, with a space) or to base64
again (the caller decodes that next, to a fixed depth): hashes, keys,
images and other binary decode to something else and are dropped. Bounded: at most ``MAX_RUNS`` runs
of at most ``MAX_RUN_CHARS`` characters are decoded per text.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from typing import Any

import re2  # type: ignore[import-untyped]  # google-re2: linear time

from portcullis.content.decode import b64_runs
from portcullis.content.view import ascii_view

MAX_RUNS = 32
MAX_RUN_CHARS = 65_536
MIN_RUN = 24
_RUN: Any = re2.compile(r"[A-Za-z0-9+/_-]{24,}={0,2}")  # a whole decoding that is base64 again
_HEXISH = b"0123456789abcdefABCDEF-"


def decoded_texts(text: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, decoded text) for each base64 run of ``text`` that decodes to readable text."""
    if len(text) < MIN_RUN:
        return
    data = ascii_view(text)  # one byte per code point: run offsets are the text's own
    count = 0
    for start, end in b64_runs(data, MIN_RUN):
        if end - start > MAX_RUN_CHARS or not data[start:end].translate(None, _HEXISH):
            continue  # too long, or UUIDs, digests, git SHAs: base64 of no readable text
        count += 1
        if count > MAX_RUNS:
            return
        decoded = _readable(text[start:end])
        if decoded is not None:
            yield start, end, decoded


def _readable(run: str) -> str | None:
    body = run.rstrip("=")
    padded = body + "=" * (-len(body) % 4)
    try:
        raw = (base64.urlsafe_b64decode(padded) if ("-" in body or "_" in body)
               else base64.b64decode(padded, validate=True))
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    printable = sum(ch.isprintable() or ch in "\n\t" for ch in text)
    wordy = " " in text or _RUN.fullmatch(text) is not None  # prose, or base64 again (decoded next level)
    return text if text and wordy and printable >= 0.9 * len(text) else None
