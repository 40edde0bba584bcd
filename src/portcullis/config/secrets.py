"""Secret references: resolving them at run time, and finding secrets written out literally.

A deployment never holds a secret value, only a reference to one:

* ``secret://env/NAME`` — the gateway process's environment variable ``NAME``;
* ``secret://file/<absolute path>`` — the stripped contents of that file
  (``secret://file/run/secrets/key`` reads ``/run/secrets/key``).

Every failure is a :class:`~portcullis.errors.ConfigError` that names the reference and never the
value. The same goes for the lint helpers below: they report where a literal secret is and what
kind it looks like, never the secret itself.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from portcullis.errors import ConfigError, Problem

SCHEME = "secret://"
MAX_SECRET_BYTES = 65_536

SECRET_KEY_NAME = re.compile(r"(password|passwd|secret|token|api[_-]?key|private[_-]?key|credential)", re.I)
"""Mapping keys whose string values must be ``secret://`` references."""

KNOWN_FORMATS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("GitHub token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36}\b")),
    ("GitHub token", re.compile(r"\bgithub_pat_[A-Za-z0-9_]{22,}")),
    ("GitLab token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20}")),
    ("Slack token", re.compile(r"\bxox[baprs]-[A-Za-z0-9-]+")),
    ("Stripe live key", re.compile(r"\b[sr]k_live_[A-Za-z0-9]{16,}")),
    ("Google API key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}")),
)
"""Well-known secret formats, recognised in any file of a deployment."""

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_WHERE = Path("<secret>")


def is_reference(value: str) -> bool:
    """True if ``value`` is a ``secret://`` reference (resolvable or not)."""
    return value.startswith(SCHEME)


def resolve_secret(ref: str, *, origin: Path = _WHERE) -> str:
    """The secret ``ref`` points to; ``origin`` is the file named in a ConfigError, if any."""
    if ref.startswith(SCHEME + "env/"):
        name = ref.removeprefix(SCHEME + "env/")
        if not _ENV_NAME.match(name):
            raise _unresolvable(ref, origin, "not a valid environment variable name")
        value = os.environ.get(name)
        if value is None:
            raise _unresolvable(ref, origin, "the environment variable is not set")
        return _non_empty(value, ref, origin)
    if ref.startswith(SCHEME + "file/"):
        path = Path("/" + ref.removeprefix(SCHEME + "file/").lstrip("/"))
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_SECRET_BYTES + 1)
        except OSError:
            raise _unresolvable(ref, origin, "the file cannot be read") from None
        if len(data) > MAX_SECRET_BYTES:
            raise _unresolvable(ref, origin, "the file is too large")
        try:
            return _non_empty(data.decode("utf-8").strip(), ref, origin)
        except UnicodeDecodeError:
            raise _unresolvable(ref, origin, "the file is not UTF-8 text") from None
    scheme = ref.split("/", 3)[2] if is_reference(ref) else "none"
    raise _unresolvable(_safe_ref(ref), origin, f"unknown secret scheme {scheme[:16]!r}")


def literal_secret_locs(value: Any, loc: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Locations of non-empty strings under a secret-named key that are not ``secret://`` refs."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from literal_secret_locs(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from literal_secret_locs(item, (*loc, index))
    elif isinstance(value, str) and value and not is_reference(value):
        key = next((part for part in reversed(loc) if isinstance(part, str)), "")
        if SECRET_KEY_NAME.search(key):
            yield loc


def find_known_secrets(text: str) -> Iterator[tuple[int, str]]:
    """``(line, kind)`` for every line of ``text`` holding a well-known secret format."""
    for number, line in enumerate(text.splitlines(), start=1):
        for kind, pattern in KNOWN_FORMATS:
            if pattern.search(line):
                yield number, kind
                break


def _non_empty(value: str, ref: str, origin: Path) -> str:
    if not value:
        raise _unresolvable(ref, origin, "the secret is empty")
    return value


def _safe_ref(ref: str) -> str:
    """A non-reference might be a pasted secret: show only that it was not a reference."""
    return ref if is_reference(ref) else "(not a secret:// reference)"


def _unresolvable(ref: str, origin: Path, why: str) -> ConfigError:
    return ConfigError([Problem(origin, None, f"secret {ref} cannot be resolved: {why}")])
