"""The native per-tool policy engine: a pure function from (policy, call) to a :class:`Decision`.

Contract, in the order :func:`evaluate` follows it:

1. Every rule the policy sets is checked; none short-circuits, so every failing rule adds its
   reason and rule id to the decision.
2. The effect combines the failures: any deny → ``deny``; else any approval → ``require_approval``;
   else ``allow``. ``allowed_callers`` is never empty, so a caller nobody listed is denied
   (default deny).
3. Any exception while evaluating is a ``deny`` with reason ``policy_error`` (fail closed).
4. In ``log_only`` mode the decision from 1-3 goes into ``shadow`` and ``allow`` is returned.

Caller patterns match as :mod:`portcullis.policy.model` describes: an ``issuer:<source>/`` scope
exactly against the principal's ``issuer_name``; ``allowed_callers`` values exactly; and
``denied_callers`` values case-folded (NFKC + casefold), the fail-closed direction for each.

No I/O: the clock (``now``) and environment are passed in; paths are checked on their text.
"""

from __future__ import annotations

import re
import unicodedata
import zoneinfo
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from itertools import chain

from portcullis.identity.claims import fold
from portcullis.identity.principal import Principal
from portcullis.policy import decision as r
from portcullis.policy.decision import Decision, Effect, Obligation
from portcullis.policy.ecma_regex import compile_pattern
from portcullis.policy.model import ANY_ISSUER, DAYS, ISSUER_SCOPE, Constraint, TimeWindow, ToolPolicy, unsafe_text
from portcullis.policy.paths import is_within_root

_MISSING = object()
_INDEX = re.compile(r"0|[1-9][0-9]{0,8}")  # RFC 6901 array index, ASCII digits only
Failure = tuple[Effect, str, str]  # effect, reason, rule name (prefixed with the tool later)


def evaluate(
    policy: ToolPolicy,
    *,
    tool: str,
    principal: Principal,
    arguments: Mapping[str, object],
    environment: str,
    now: datetime,
    policy_version: str,
) -> Decision:
    """Decide one ``tools/call`` of ``tool`` by ``principal`` with ``arguments``. Never raises."""
    obligations = static_obligations(policy)
    try:
        failures = list(_failures(policy, principal, arguments, environment, now))
        decided = _combine(failures, tool, obligations, policy_version)
    except Exception:  # fail closed: a broken rule or hostile input must not become an allow
        decided = Decision(effect="deny", reasons=(r.POLICY_ERROR,), rule_ids=(f"{tool}/policy_error",),
                           obligations=obligations, policy_version=policy_version, denied_by=f"{tool}/policy_error")
    if policy.mode == "log_only":
        return Decision(effect="allow", reasons=(r.SHADOW_MODE,), obligations=obligations,
                        policy_version=policy_version, shadow=decided)
    return decided


def may_call(policy: ToolPolicy, principal: Principal, *, environment: str, now: datetime) -> bool:
    """True if ``principal`` could call the tool with *some* arguments at *some* time (for filtering
    ``tools/list``, and the gate: a caller for whom this is False is told the tool is unknown).

    Only the rules about who is calling and where are checked: callers (allowed and denied),
    required attributes and environments. Time windows are not: a caller admitted by those rules
    may see the tool at any hour, and a call outside its window is refused by rule
    ``<tool>/time_windows`` (the caller learns nothing about a tool it could not see anyway). A
    ``log_only`` policy allows every call, so it is always True there. Never raises: an error is
    False (fail closed: the tool is hidden); so is a naive ``now``.
    """
    if policy.mode == "log_only":
        return True
    try:
        if now.tzinfo is None or now.utcoffset() is None:
            return False
        failures = chain(_caller(policy, principal), _attributes(policy, principal), _environment(policy, environment))
        return next(failures, None) is None
    except Exception:  # fail closed: a tool we cannot decide about is not listed
        return False


def rule_ids(policy: ToolPolicy, tool: str) -> tuple[str, ...]:
    """Every rule id ``policy`` can produce for ``tool`` (for coverage reports and lint)."""
    names = ["caller"]
    if policy.denied_callers:
        names.append("denied_callers")
    if policy.max_amount is not None:
        names.append("max_amount")
    if policy.requires_approval_over is not None:
        names.append("requires_approval_over")
    if policy.allowed_currencies is not None:
        names.append("allowed_currencies")
    names += [f"require_attributes/{name}" for name in policy.require_attributes]
    if policy.tenant_argument is not None or policy.tenant_arguments:
        names.append("tenant_argument")
    if policy.time_windows is not None:
        names.append("time_windows")
    if policy.environments is not None:
        names.append("environments")
    names += [_constraint_rule(c, check) for c in policy.constraints for check in c.checks()]
    names.append("policy_error")
    return tuple(f"{tool}/{name}" for name in names)


# ----------------------------------------------------------------------------- combining


def _combine(failures: Sequence[Failure], tool: str, obligations: tuple[Obligation, ...],
             policy_version: str) -> Decision:
    effects = {effect for effect, _, _ in failures}
    effect: Effect = "deny" if "deny" in effects else "require_approval" if effects else "allow"
    return Decision(
        effect=effect,
        reasons=tuple(dict.fromkeys(reason for _, reason, _ in failures)),
        rule_ids=tuple(dict.fromkeys(f"{tool}/{name}" for _, _, name in failures)),
        obligations=obligations,
        policy_version=policy_version,
        denied_by=next((f"{tool}/{name}" for kind, _, name in failures if kind == "deny"), None),
    )


def static_obligations(policy: ToolPolicy) -> tuple[Obligation, ...]:
    """The obligations ``policy`` attaches to every decision, whatever the effect."""
    audit = (Obligation("audit"),) if policy.audit_required else ()
    return audit + tuple(Obligation("redact", pointer) for pointer in policy.redact)


# ----------------------------------------------------------------------------- the rules, in order


def _failures(policy: ToolPolicy, principal: Principal, arguments: Mapping[str, object], environment: str,
              now: datetime) -> Iterator[Failure]:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")  # a naive clock is a bug upstream: policy_error
    # Who: the caller must match an allowed pattern and no denied one; its ids must be unambiguous text.
    yield from _caller(policy, principal)
    # How much: Decimal from the JSON number, hard maximum before the approval threshold.
    yield from _amount(policy, arguments)
    yield from _attributes(policy, principal)
    # Where: the tenant named in the arguments must be the caller's own.
    # One call never mixes tenants: every tenant argument names the caller's own, exactly.
    pointers = (*(() if policy.tenant_argument is None else (policy.tenant_argument,)), *policy.tenant_arguments)
    if any(not _own_tenant(_resolve(arguments, pointer), principal.tenant) for pointer in pointers):
        yield "deny", r.TENANT_MISMATCH, "tenant_argument"
    # When, and in which deployment.
    yield from _context(policy, environment, now)
    for constraint in policy.constraints:
        yield from _constraint(constraint, arguments)


def _own_tenant(value: object, tenant: str | None) -> bool:
    """Whether ``value`` (a string, or a non-empty array of strings) names only ``tenant``, code point
    for code point (no folding: a look-alike of the caller's tenant is another tenant)."""
    if tenant is None:
        return False
    if isinstance(value, list | tuple):
        return bool(value) and all(isinstance(item, str) and item == tenant for item in value)
    return isinstance(value, str) and value == tenant


def _attributes(policy: ToolPolicy, principal: Principal) -> Iterator[Failure]:
    for name, allowed in policy.require_attributes.items():
        if principal.attributes.get(name) not in allowed:
            yield "deny", r.ATTRIBUTE_NOT_ALLOWED, f"require_attributes/{name}"


def _context(policy: ToolPolicy, environment: str, now: datetime) -> Iterator[Failure]:
    if policy.time_windows is not None and not any(_in_window(w, now) for w in policy.time_windows):
        yield "deny", r.OUTSIDE_TIME_WINDOW, "time_windows"
    yield from _environment(policy, environment)


def _environment(policy: ToolPolicy, environment: str) -> Iterator[Failure]:
    if policy.environments is not None and environment not in policy.environments:
        yield "deny", r.ENVIRONMENT_NOT_ALLOWED, "environments"


def caller_matches(patterns: Iterable[str], principal: Principal) -> bool:
    """Whether any caller pattern (``role:finance``, ``issuer:corp/user:al*``) matches ``principal`` (the
    same matching as ``allowed_callers``; a principal with unsafe ids matches nothing)."""
    values = _caller_values(principal)
    return values is not None and any(_matches(pattern, values) for pattern in patterns)


def _caller(policy: ToolPolicy, principal: Principal) -> Iterator[Failure]:
    values = _caller_values(principal)
    if values is None:
        yield "deny", r.CALLER_ID_REJECTED, "caller"
        return
    if policy.denied_callers:
        folded: dict[str, tuple[str, ...]] = {}  # filled per kind, only for the kinds a deny names
        if any(_matches(pattern, values, folded=folded) for pattern in policy.denied_callers):
            yield "deny", r.CALLER_DENIED, "denied_callers"
    if not any(_matches(pattern, values) for pattern in policy.allowed_callers):
        yield "deny", r.CALLER_NOT_ALLOWED, "caller"


def _caller_values(principal: Principal) -> dict[str, tuple[str, ...]] | None:
    """The principal's ids by pattern kind, NFC-normalised; ``None`` if any id is unsafe text.

    ``issuer`` holds the source that asserted them (for the ``issuer:<source>/`` scope), empty
    when the principal does not name one: then only unscoped and ``issuer:*/`` patterns match.
    """
    raw = (
        ("agent", (principal.agent_id,)), ("user", (principal.user_id,)), ("client", (principal.client_id,)),
        ("app", (principal.source_app,)), ("tenant", (principal.tenant,)),
        ("role", principal.roles), ("scope", principal.scopes),
    )
    values: dict[str, tuple[str, ...]] = {}
    for kind, items in raw:  # a plain loop: this runs on every call and every tools/list entry
        present: list[str] = []
        for item in items:
            if item is None:
                continue
            if item.isascii():
                if not item.isprintable():
                    return None
                present.append(item)
            elif unsafe_text(item):
                return None
            else:
                present.append(unicodedata.normalize("NFC", item))
        values[kind] = tuple(present)
    values["issuer"] = () if principal.issuer_name is None else (principal.issuer_name,)
    return values


def _matches(pattern: str, values: Mapping[str, tuple[str, ...]], *,
             folded: dict[str, tuple[str, ...]] | None = None) -> bool:
    """``pattern`` against the principal's ``values``. With ``folded`` (deny rules) both sides are
    compared case-folded, the folded values cached there per kind. The issuer scope is exact."""
    if pattern.startswith(ISSUER_SCOPE):
        source, _, pattern = pattern[len(ISSUER_SCOPE):].partition("/")
        if source != ANY_ISSUER and source not in values["issuer"]:
            return False
    kind, _, expected = pattern.partition(":")
    wildcard = expected.endswith("*")  # before folding: a fullwidth star folds to '*' but is no wildcard
    if wildcard:
        expected = expected[:-1]
    candidates = values[kind]
    if folded is not None:
        expected = fold(expected)
        if kind not in folded:
            folded[kind] = tuple(fold(value) for value in candidates)
        candidates = folded[kind]
    if wildcard:
        return any(value.startswith(expected) for value in candidates)
    return expected in candidates


def _amount(policy: ToolPolicy, arguments: Mapping[str, object]) -> Iterator[Failure]:
    if policy.max_amount is not None or policy.requires_approval_over is not None:
        amount_rule = "max_amount" if policy.max_amount is not None else "requires_approval_over"
        raw = _resolve(arguments, policy.amount_pointer)
        amount = _number(raw)
        if raw is _MISSING:
            yield "deny", r.AMOUNT_MISSING, amount_rule
        elif amount is None:
            yield "deny", r.AMOUNT_INVALID, amount_rule
        elif policy.max_amount is not None and amount > policy.max_amount:
            yield "deny", r.AMOUNT_OVER_MAX, "max_amount"
        elif policy.requires_approval_over is not None and amount > policy.requires_approval_over:
            yield "require_approval", r.AMOUNT_NEEDS_APPROVAL, "requires_approval_over"
    if policy.allowed_currencies is not None:
        currency = _resolve(arguments, policy.currency_pointer)
        if not isinstance(currency, str) or currency not in policy.allowed_currencies:
            yield "deny", r.CURRENCY_NOT_ALLOWED, "allowed_currencies"


def _number(value: object) -> Decimal | None:
    """A finite Decimal from a JSON number; ``None`` for anything else (bools and strings included).

    A float becomes the Decimal of its shortest repr (``100.1`` → ``Decimal("100.1")``), which is
    the number the JSON text spelled, not its binary approximation.
    """
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, int):
            return Decimal(value)
        if isinstance(value, float):
            number = Decimal(repr(value))
        elif isinstance(value, Decimal):
            number = value
        else:
            return None
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _in_window(window: TimeWindow, now: datetime) -> bool:
    local = now.astimezone(zoneinfo.ZoneInfo(window.tz))
    hhmm = f"{local.hour:02d}:{local.minute:02d}"
    return DAYS[local.weekday()] in window.days and window.from_ <= hhmm < window.to


# ----------------------------------------------------------------------------- argument constraints


def _constraint_rule(constraint: Constraint, check: str) -> str:
    return f"constraint{constraint.pointer}/{check}"


def _constraint(constraint: Constraint, arguments: Mapping[str, object]) -> Iterator[Failure]:
    value = _resolve(arguments, constraint.pointer)
    if value is _MISSING:
        if constraint.required:
            for check in constraint.checks():
                yield "deny", r.ARGUMENT_MISSING, _constraint_rule(constraint, check)
        return
    for check in constraint.checks():
        passed = _CHECKS[check](constraint, value)
        if not passed:
            reason = r.PATH_OUTSIDE_ROOT if check == "within_root" else r.ARGUMENT_INVALID
            yield "deny", reason, _constraint_rule(constraint, check)


def _max_length(c: Constraint, value: object) -> bool:
    return isinstance(value, str) and c.max_length is not None and len(value) <= c.max_length


def _enum(c: Constraint, value: object) -> bool:
    # type() equality so that True never passes for 1 nor 1 for True.
    return c.enum is not None and any(type(item) is type(value) and item == value for item in c.enum)


def _pattern(c: Constraint, value: object) -> bool:
    # ECMA-262, whole string, linear time; compiled once per pattern text (validated at load).
    return isinstance(value, str) and c.pattern is not None and compile_pattern(c.pattern).fullmatch(value)


def _minimum(c: Constraint, value: object) -> bool:
    number = _number(value)
    return number is not None and c.minimum is not None and number >= c.minimum


def _maximum(c: Constraint, value: object) -> bool:
    number = _number(value)
    return number is not None and c.maximum is not None and number <= c.maximum


def _within_root(c: Constraint, value: object) -> bool:
    return c.within_root is not None and isinstance(value, str) and path_within_root(c.within_root, value)


_CHECKS: dict[str, Callable[[Constraint, object], bool]] = {
    "max_length": _max_length, "enum": _enum, "within_root": _within_root,
    "pattern": _pattern, "minimum": _minimum, "maximum": _maximum,
}


def failing_checks(constraint: Constraint, value: object) -> tuple[str, ...]:
    """The names of ``constraint``'s checks that ``value`` fails (for lint: an enum value no call can pass)."""
    return tuple(check for check in constraint.checks() if not _CHECKS[check](constraint, value))


def path_within_root(root: str, path: str) -> bool:
    """True if the relative ``path`` stays inside the absolute ``root`` (no filesystem access).

    One decision, made by :func:`portcullis.policy.paths.canonical_segments` (see there for the
    decoding model and the steps): the canonical segments lie under any root by construction.
    ``root`` must be absolute and canonical, which the manifest model checks once at load.
    """
    return root.startswith("/") and is_within_root(path)


# ----------------------------------------------------------------------------- JSON pointer


def _resolve(document: object, pointer: str) -> object:
    """The value at RFC 6901 ``pointer`` in ``document``, or ``_MISSING``."""
    current = document
    for token in pointer.split("/")[1:]:
        key = token.replace("~1", "/").replace("~0", "~")
        if isinstance(current, Mapping):
            current = current.get(key, _MISSING)
        elif isinstance(current, list | tuple) and _INDEX.fullmatch(key):
            index = int(key)
            current = current[index] if index < len(current) else _MISSING
        else:
            return _MISSING
        if current is _MISSING:
            return _MISSING
    return current


# the one RFC 6901 resolver: policy constraints, limits and data governance read arguments and results with it
resolve_pointer, POINTER_MISSING = _resolve, _MISSING
