"""Typed template parameters: declared with bounds, checked before anything reaches the driver.

A value is refused (``ArgumentRefused`` with a fixed reason) unless it has the declared type and
fits its bounds. Text is bound, never spliced, so quotes, ``;``, ``--`` and Unicode are ordinary
data; NUL and lone surrogates are refused (PostgreSQL text cannot hold NUL, and SQLite would store
a string its readers truncate). ``bool`` is not an integer here, NaN and infinities are not reals.
Patterns are ECMA-262, matched in linear time, like manifest patterns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from portcullis.kits.sql.errors import ArgumentRefused, SqlDeclarationError
from portcullis.kits.sql.policy import IDENTIFIER
from portcullis.policy.ecma_regex import EcmaPattern, PatternError, compile_pattern

ParamType = Literal["text", "integer", "real", "boolean"]
_INT64 = (-(2**63), 2**63 - 1)
# What each type is cast to in PostgreSQL, so the server never guesses a parameter's type.
PG_CASTS: dict[str, str] = {"text": "TEXT", "integer": "BIGINT", "real": "DOUBLE PRECISION", "boolean": "BOOLEAN"}


@dataclass(frozen=True, slots=True)
class Param:
    """One named template parameter. Bounds: ``minimum``/``maximum`` for numbers, ``max_length`` and
    ``pattern`` (ECMA-262, whole value) for text."""

    name: str
    type: ParamType
    minimum: float | None = None
    maximum: float | None = None
    max_length: int = 256
    pattern: str | None = None
    nullable: bool = False

    def compiled(self) -> EcmaPattern | None:
        """The pattern, compiled (cached); validated at declaration by :func:`check_declaration`."""
        return None if self.pattern is None else compile_pattern(self.pattern)


def check_declaration(param: Param) -> None:
    """Raise :class:`SqlDeclarationError` if the parameter is declared wrong."""
    if not isinstance(param.name, str) or not IDENTIFIER.fullmatch(param.name):
        raise SqlDeclarationError("bad_param_name")
    if param.type not in PG_CASTS:
        raise SqlDeclarationError("bad_param_type")
    if param.minimum is not None and param.maximum is not None and param.minimum > param.maximum:
        raise SqlDeclarationError("bad_param_bounds")
    if not 0 < param.max_length <= 1_000_000:
        raise SqlDeclarationError("bad_param_max_length")
    if param.pattern is not None:
        if param.type != "text":
            raise SqlDeclarationError("pattern_on_non_text")
        try:
            param.compiled()
        except PatternError:
            raise SqlDeclarationError("bad_param_pattern") from None


def _in_bounds(param: Param, value: float) -> bool:
    return (param.minimum is None or value >= param.minimum) and (param.maximum is None or value <= param.maximum)


def coerce(param: Param, value: object) -> object:
    """The value to bind for ``param``, or raise :class:`ArgumentRefused`."""
    if value is None:
        if param.nullable:
            return None
        raise ArgumentRefused("null")
    if param.type == "boolean":
        if isinstance(value, bool):
            return value
        raise ArgumentRefused("type")
    if param.type == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ArgumentRefused("type")
        if not (_INT64[0] <= value <= _INT64[1] and _in_bounds(param, value)):
            raise ArgumentRefused("out_of_bounds")
        return value
    if param.type == "real":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ArgumentRefused("type")
        number = float(value)
        if not math.isfinite(number) or not _in_bounds(param, number):
            raise ArgumentRefused("out_of_bounds")
        return number
    return _text(param, value)


def _text(param: Param, value: object) -> str:
    if not isinstance(value, str):
        raise ArgumentRefused("type")
    if len(value) > param.max_length:
        raise ArgumentRefused("too_long")
    if "\x00" in value:
        raise ArgumentRefused("nul")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ArgumentRefused("unencodable") from None
    pattern = param.compiled()
    if pattern is not None and not pattern.fullmatch(value):
        raise ArgumentRefused("pattern")
    return value
