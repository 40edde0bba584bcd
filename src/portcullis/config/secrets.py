"""Secret references: their one grammar, resolving them, and finding secrets written out literally.

A deployment never holds a secret value, only a reference to one (``SECRET_REF_PATTERN``)::

    secret://env/NAME                      the gateway process's environment variable NAME
    secret://file/<absolute path>[#field]  the stripped contents of that file, or with #field the
                                           value under that key of the JSON/YAML mapping it holds
    secret://sealed/<absolute path>#field  a key of an AES-256-GCM sealed file (docs/secrets.md)
    secret://vault/<mount>/<path>#field    a field of a Vault/OpenBao KV v2 secret (``secrets.vault``)

``secret://file/run/secrets/key`` reads ``/run/secrets/key``. Every failure is a
:class:`~portcullis.errors.ConfigError` that names the reference and never the value. The same goes
for the lint helpers below: they report where a literal secret is and what kind it looks like, never
the secret itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from portcullis.errors import ConfigError, Problem
from portcullis.text import escape_invisible

SCHEME = "secret://"
MAX_SECRET_BYTES = 65_536

_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,127}"
_PART = r"[!-\"$-~]"  # printable ASCII but '#': a reference holds nothing that can act on a terminal or log
_FIELD = rf"#{_PART}{{1,256}}"
SECRET_REF_PATTERN = (rf"^secret://(?:env/{_NAME}|file/{_PART}+(?:{_FIELD})?|sealed/{_PART}+{_FIELD}"
                      rf"|vault/[!-\"$-.0-~]+/{_PART}+{_FIELD})$")
"""Every ``secret://`` reference a configuration may hold (the models' and JSON Schemas' pattern)."""
LOCAL_REF_PATTERN = rf"^secret://(?:env/{_NAME}|file/{_PART}+(?:{_FIELD})?)$"
"""References that need no other provider: the credentials of the sealed and Vault providers."""

Provider = Literal["env", "file", "sealed", "vault"]
_REF = re.compile(SECRET_REF_PATTERN)


@dataclass(frozen=True, slots=True)
class SecretRef:
    """A parsed reference: ``provider``, its ``path`` (a name, file or ``mount/path``), an optional ``field``."""

    provider: Provider
    path: str
    field: str | None = None

    def __str__(self) -> str:
        where = self.path if self.path.startswith("/") else "/" + self.path  # file and sealed paths are absolute
        return f"{SCHEME}{self.provider}{where}" + ("" if self.field is None else f"#{self.field}")


def parse_ref(ref: str) -> SecretRef:
    """``ref`` parsed; ValueError (naming at most the provider, never the text) when it breaks the grammar."""
    if not _REF.fullmatch(ref):
        raise ValueError("not a valid secret:// reference (docs/secrets.md)")
    provider, _, rest = ref.removeprefix(SCHEME).partition("/")
    path, hashed, field = rest.partition("#")
    if provider in ("file", "sealed"):
        path = "/" + path.lstrip("/")
    elif provider == "vault" and any(part in ("", ".", "..") for part in path.split("/")):
        raise ValueError("a vault path has no empty, '.' or '..' segments")
    return SecretRef(provider, path, field if hashed else None)  # type: ignore[arg-type]  # the pattern's four

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

_WHERE = Path("<secret>")


def is_reference(value: str) -> bool:
    """True if ``value`` is a ``secret://`` reference (resolvable or not)."""
    return value.startswith(SCHEME)


def resolve_secret(ref: str, *, origin: Path = _WHERE) -> str:
    """The secret ``ref`` points to; ``origin`` is the file named in a ConfigError, if any.

    env, file and sealed references are read now; vault ones come from the process's secret store
    (config/secret_store.py), which the gateway opens at start from ``gateway.yaml``'s ``secrets:``."""
    parsed = parsed_ref(ref, origin)
    from portcullis.config.secret_store import read_secret  # the store imports this module's grammar

    return read_secret(parsed, origin)


def parsed_ref(ref: str, origin: Path = _WHERE) -> SecretRef:
    """``ref`` parsed, or the ConfigError that says why not (the reference shown escaped)."""
    try:
        return parse_ref(ref)
    except ValueError as exc:
        if not is_reference(ref):
            why = "unknown secret scheme 'none'"
        elif (scheme := ref.removeprefix(SCHEME).partition("/")[0]) not in ("env", "file", "sealed", "vault"):
            why = f"unknown secret scheme {scheme[:16]!r}"
        elif scheme == "env":
            why = "not a valid environment variable name"
        else:
            why = str(exc)
        raise unresolvable(_safe_ref(ref), origin, why) from None


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


def _safe_ref(ref: str) -> str:
    """A non-reference might be a pasted secret: show only that it was not a reference; a malformed one
    is shown with its invisible characters escaped, so it cannot act on a terminal or a log line."""
    return escape_invisible(ref[:512]) if is_reference(ref) else "(not a secret:// reference)"


def unresolvable(ref: str | SecretRef, origin: Path, why: str) -> ConfigError:
    """The one error for a reference that cannot be resolved: the reference and why, never a value."""
    return ConfigError([Problem(origin, None, f"secret {ref} cannot be resolved: {why}")])
