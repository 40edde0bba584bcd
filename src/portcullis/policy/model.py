"""The ``policy:`` section of a tool manifest, as typed, frozen configuration.

Every model is frozen and forbids unknown keys. Anything that would make a rule meaningless or
silently permissive is a configuration error here, once, rather than a surprise at call time:
an empty ``allowed_callers`` (never "allow everyone"), an empty ``time_windows`` or
``environments`` list, an approval threshold at or above the hard maximum (an unreachable
rule), a constraint with no check, a pattern that is not a linear-time ECMA-262 regular
expression (:mod:`.ecma_regex`), a containment
root that is not an absolute canonical directory.

Caller patterns are ``[issuer:<source>/]<kind>:<value>`` where kind is one of
:data:`CALLER_KINDS`. The optional scope names the identity source that must have asserted the
value: a configured issuer's ``name``, ``dev``, ``mtls`` or ``anonymous``, or ``*`` for any source
said out loud (``issuer:corp/role:finance``, ``issuer:*/scope:mcp:tools``); a pattern without a
scope matches whichever source asserted the value. In ``allowed_callers`` (and approver rules)
values match exactly (case-sensitive, Unicode NFC); the only wildcard is a single trailing ``*``
after at least one literal character (``agent:billing-*``). ``denied_callers`` uses the same
patterns, overrides ``allowed_callers``, and compares values case-folded (NFKC + casefold), so a
deny is never evaded by ``Admin`` for ``admin`` or a fullwidth spelling.
"""

from __future__ import annotations

import posixpath
import re
import unicodedata
import zoneinfo
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

from portcullis.policy.ecma_regex import PatternError, compile_pattern

CALLER_KINDS = frozenset({"agent", "user", "client", "app", "role", "scope", "tenant"})
ISSUER_SCOPE = "issuer:"  # the prefix of a scoped pattern: issuer:<source>/<kind>:<value>
ANY_ISSUER = "*"
_SOURCE = re.compile(r"[a-z][a-z0-9_-]{0,62}")  # = IssuerConfig.name, and the built-in sources
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index == datetime.weekday()

_POINTER = r"^(/([^~/]|~[01])*)+$"  # RFC 6901, and never "" (the whole arguments object)
_HHMM = re.compile(r"(?:[01][0-9]|2[0-3]):[0-5][0-9]|24:00")
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def unsafe_text(value: str) -> bool:
    """True if ``value`` holds control, format (bidi, zero-width), unassigned or odd space characters."""
    if value.isascii():
        return not value.isprintable()
    for char in value:
        category = unicodedata.category(char)
        if category in _UNSAFE_CATEGORIES or (category == "Zs" and char != " "):
            return True
    return False


def _strict_number(value: Any) -> Any:
    # A JSON/YAML number only: "500" (a string) and true (a bool) are configuration mistakes.
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValueError("must be a number")
    return value


Number = Annotated[Decimal, BeforeValidator(_strict_number), Field(allow_inf_nan=False)]
Pointer = Annotated[str, Field(pattern=_POINTER, max_length=512)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class TimeWindow(_Model):
    """A weekly window in which calls are allowed, ``from`` inclusive and ``to`` exclusive.

    A window does not wrap past midnight: write an overnight window as two windows.
    """

    days: tuple[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"], ...] = Field(
        min_length=1, description="Weekdays (in ``tz``) the window applies to.")
    from_: str = Field(alias="from", description="Start time ``HH:MM`` in ``tz``, inclusive.")
    to: str = Field(description="End time ``HH:MM`` in ``tz``, exclusive; ``24:00`` is end of day.")
    tz: str = Field("UTC", description="IANA time zone name the window is written in.")

    @field_validator("from_", "to")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM.fullmatch(value):
            raise ValueError("times are HH:MM (00:00 to 24:00)")
        return value

    @field_validator("tz")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _ordered(self) -> TimeWindow:
        if self.from_ >= self.to:
            raise ValueError("'from' must be before 'to' (split an overnight window in two)")
        return self


class Constraint(_Model):
    """Checks on one argument, addressed by JSON pointer. Each check is its own rule id."""

    pointer: Pointer = Field(description="RFC 6901 pointer into the arguments, e.g. ``/reason``.")
    required: StrictBool = Field(True, description="A missing argument is a deny (else the checks are skipped).")
    max_length: StrictInt | None = Field(None, ge=0, description="Longest string allowed, in code points.")
    enum: tuple[str | StrictInt, ...] | None = Field(
        None, min_length=1, description="The only values allowed (type and value must both match).")
    within_root: str | None = Field(
        None, description="The argument is a relative path that must stay inside this absolute directory. "
        "Judged on its exact text (nothing is decoded): percent escapes, backslashes, ':', control and "
        "lookalike characters, a leading '/' or '~' and Windows device names are refused; '..' may not "
        "climb above the root (see docs/arguments.md).")
    pattern: str | None = Field(
        None, description="ECMA-262 regular expression (JSON Schema's dialect, Unicode mode) the whole string "
        "must match. Lookaround and backreferences are refused: patterns run in linear time (see docs/arguments.md).")
    minimum: Number | None = Field(None, description="Smallest number allowed (inclusive).")
    maximum: Number | None = Field(None, description="Largest number allowed (inclusive).")

    @field_validator("within_root")
    @classmethod
    def _root(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.startswith("/") or value == "/" or "\\" in value or "\x00" in value:
            raise ValueError("within_root must be an absolute directory other than '/'")
        if posixpath.normpath(value) != value or value.startswith("//"):
            raise ValueError("within_root must be canonical (no trailing '/', '.', '..' or '//')")
        return value

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                compile_pattern(value)
            except PatternError as exc:
                raise ValueError(f"pattern does not compile: {exc}") from None
        return value

    @model_validator(mode="after")
    def _some_check(self) -> Constraint:
        if not self.checks():
            raise ValueError("a constraint needs at least one check")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError("minimum is above maximum")
        return self

    def checks(self) -> tuple[str, ...]:
        """Names of the checks this constraint makes, in evaluation order."""
        names = ("max_length", "enum", "within_root", "pattern", "minimum", "maximum")
        return tuple(name for name in names if getattr(self, name) is not None)


class ToolPolicy(_Model):
    """The native per-tool policy. Unset optional rules do not apply; ``allowed_callers`` always does."""

    allowed_callers: tuple[str, ...] = Field(
        description="Caller patterns ``<kind>:<value>``; the call is allowed past this rule if any pattern "
        "matches. Must not be empty: an empty list is an error, never 'allow everyone'.")
    denied_callers: tuple[str, ...] = Field(
        (), description="Caller patterns that are denied even if an ``allowed_callers`` pattern matches "
        "(deny overrides allow). Same syntax as ``allowed_callers``.")
    amount_pointer: Pointer = Field("/amount", description="The argument that holds the amount.")
    currency_pointer: Pointer = Field("/currency", description="The argument that holds the currency code.")
    max_amount: Number | None = Field(None, ge=0, description="Amounts above this are denied.")
    requires_approval_over: Number | None = Field(
        None, ge=0, description="Amounts above this (and within max_amount) need a human approval.")
    requires_two_approvals_over: Number | None = Field(
        None, ge=0, description="Amounts above this need two distinct approvers (above requires_approval_over).")
    allowed_currencies: tuple[Annotated[str, Field(pattern=r"^[A-Z]{3}$")], ...] | None = Field(
        None, min_length=1, description="ISO 4217 codes allowed in the currency argument.")
    audit_required: StrictBool = Field(True, description="Attach an 'audit' obligation to every decision.")
    redact: tuple[Pointer, ...] = Field((), description="Arguments to redact in logs and audit records.")
    constraints: tuple[Constraint, ...] = Field((), description="Argument checks by JSON pointer.")
    tenant_argument: Pointer | None = Field(
        None, description="Argument that must name the principal's tenant (cross-tenant calls are denied): a string "
        "equal to it, or a non-empty array of such strings (one call never names two tenants). Compared exactly: "
        "``ACME`` is not ``acme``.")
    tenant_arguments: tuple[Pointer, ...] = Field(
        (), description="Further arguments held to the ``tenant_argument`` rule (a source and a target tenant, "
        "…): every one must name the caller's own tenant, so one call never mixes tenants.")
    require_attributes: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")],
                             tuple[str, ...]] = Field(
        default_factory=dict, description="Principal attributes that must be present with one of these values.")
    time_windows: tuple[TimeWindow, ...] | None = Field(
        None, min_length=1, description="Calls are allowed only inside one of these windows.")
    environments: tuple[str, ...] | None = Field(
        None, min_length=1, description="Gateway environments (deployment names) the tool may run in.")
    mode: Literal["enforce", "log_only"] = Field(
        "enforce", description="``log_only`` is shadow mode: the would-be decision is returned in "
        "``Decision.shadow`` and the call is ALLOWED. Use only to trial a new policy.")

    @field_validator("allowed_callers")
    @classmethod
    def _callers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("allowed_callers must not be empty (an empty list would deny everyone; "
                             "it never means allow everyone)")
        for pattern in value:
            check_caller_pattern(pattern)
        return value

    @field_validator("denied_callers")
    @classmethod
    def _denied(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            check_caller_pattern(pattern)
        return value

    @field_validator("require_attributes")
    @classmethod
    def _attribute_values(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for name, allowed in value.items():
            if not allowed:
                raise ValueError(f"require_attributes[{name}] must list at least one value")
        return value

    @model_validator(mode="after")
    def _reachable(self) -> ToolPolicy:
        if (self.max_amount is not None and self.requires_approval_over is not None
                and self.requires_approval_over >= self.max_amount):
            raise ValueError("requires_approval_over must be below max_amount (else the rule never applies)")
        if self.requires_two_approvals_over is not None and (
                self.requires_approval_over is None or self.requires_two_approvals_over <= self.requires_approval_over):
            raise ValueError("requires_two_approvals_over needs a lower requires_approval_over")
        seen: set[tuple[str, str]] = set()
        for constraint in self.constraints:
            for check in constraint.checks():
                if (constraint.pointer, check) in seen:
                    raise ValueError(f"duplicate {check} constraint on {constraint.pointer}")
                seen.add((constraint.pointer, check))
        return self


def split_issuer_scope(pattern: str) -> tuple[str | None, str]:
    """``(source or "*", rest)`` of a scoped pattern ``issuer:<source>/<rest>``; ``(None, pattern)`` if unscoped."""
    if not pattern.startswith(ISSUER_SCOPE):
        return None, pattern
    source, _, rest = pattern[len(ISSUER_SCOPE):].partition("/")
    return source, rest


def check_caller_pattern(pattern: str) -> None:
    """Raise :class:`ValueError` unless ``pattern`` is a well-formed ``[issuer:<source>/]<kind>:<value>`` pattern."""
    if not isinstance(pattern, str):
        raise ValueError("a caller pattern is a string")
    source, pattern = split_issuer_scope(pattern)
    if source is not None and source != ANY_ISSUER and not _SOURCE.fullmatch(source):
        raise ValueError(f"caller pattern scope issuer:{source[:64]!r} must be an issuer name (a-z 0-9 _ -, "
                         "starting with a letter) or '*', followed by '/'")
    kind, sep, value = pattern.partition(":")
    if not sep or kind not in CALLER_KINDS:
        raise ValueError(f"caller pattern {pattern!r} must start with one of {sorted(CALLER_KINDS)} and ':'")
    literal = value.removesuffix("*")
    if not literal or "*" in literal:
        raise ValueError(f"caller pattern {pattern!r}: '*' is allowed only as a suffix after a literal prefix")
    if unsafe_text(value) or unicodedata.normalize("NFC", value) != value:
        raise ValueError(f"caller pattern {pattern!r} must be NFC text without control or format characters")
