"""The provider seam: ``read(ref) -> value``, and the checks every provider shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from portcullis.config.secrets import MAX_SECRET_BYTES, SecretRef


class SecretUnavailable(Exception):
    """A reference could not be read; ``why`` says why in words that never hold the secret."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class SecretProvider(Protocol):
    def read(self, ref: SecretRef) -> str:
        """The value ``ref`` points to now; :class:`SecretUnavailable` if there is none."""
        ...


def non_empty(value: str) -> str:
    if not value:
        raise SecretUnavailable("the secret is empty")
    return value


def pick_field(mapping: Any, field: str | None) -> str:
    """``mapping[field]``, a non-empty string; reasons name the field at most, never a value."""
    if field is None:
        raise SecretUnavailable("a #field is needed: the secret is a mapping")
    if not isinstance(mapping, dict):
        raise SecretUnavailable("the secret is not a mapping of fields")
    if field not in mapping:
        raise SecretUnavailable("the field does not exist")
    value = mapping[field]
    if not isinstance(value, str):
        raise SecretUnavailable("the field is not a string")
    return non_empty(value)


def read_bounded(path: Path) -> bytes:
    """The file's bytes, at most :data:`MAX_SECRET_BYTES`."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SECRET_BYTES + 1)
    except OSError:
        raise SecretUnavailable("the file cannot be read") from None
    if len(data) > MAX_SECRET_BYTES:
        raise SecretUnavailable("the file is too large")
    return data


def utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretUnavailable("the file is not UTF-8 text") from None
