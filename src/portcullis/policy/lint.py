"""Policy lint: contradictions and rules that can never apply, found before a call ever is.

:func:`lint_policies` reads the manifests' ``policy:`` sections next to their input schemas and
reports, for each manifest in order:

1. a served tool without ``policy:`` (warning: it is denied to every caller);
2. conflicts: a pattern both in ``allowed_callers`` and ``denied_callers``, or an allowed
   pattern that a denied wildcard covers — it can never allow anyone (error);
3. ``environments`` that leave out the gateway's own environment (warning: every call is denied);
4. a constraint ``enum`` value that fails the constraint's own other checks (warning; an error
   when no enum value can pass, since then every call that carries the argument is denied);
5. amount rules the input schema makes unreachable: ``max_amount`` or ``requires_approval_over``
   at or above the schema's ``maximum`` (warning: never triggers), or below its minimum
   (``max_amount``: error, every call denied; ``requires_approval_over``: warning, every call
   needs approval);
6. ``allowed_currencies`` the currency argument's schema (``enum``, ``const``, ``pattern``)
   never accepts (warning per code; error if it accepts none of them);
7. JSON pointers (``amount_pointer``, ``currency_pointer``, constraints, ``tenant_argument``,
   ``redact``, ``sensitive_arguments``) that name no argument the input schema allows: an error
   when the rule then denies every call, else a warning (the rule has no effect — and a typo in
   ``redact`` leaves the real argument in clear);

and then 8. Rego modules in the policy directory that do not compile (error); 9. a tool with
``openWorldHint: true`` and no ``egress`` (warning: the hint alone makes it an egress tool for the
toxic-flow rule, :mod:`portcullis.governance.flow`; say so explicitly).

A pointer "names no argument" only when the schema says so for certain: an object schema with
``properties`` that lack the name and ``additionalProperties: false`` (no ``patternProperties``,
no composition keywords). Each problem carries the manifest and the location of the offending
YAML key (``("policy", "allowed_callers", 1)``) so the loader can print ``file:line``. Pure:
no I/O except compiling the Rego directory when one is given.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from portcullis.identity.claims import fold
from portcullis.policy.ecma_regex import PatternError, compile_pattern
from portcullis.policy.model import ANY_ISSUER, Constraint, ToolPolicy, split_issuer_scope
from portcullis.policy.native import failing_checks

if TYPE_CHECKING:
    from portcullis.config.loader import LoadedManifest

Severity = Literal["error", "warning", "note"]
Loc = tuple[str | int, ...]
_COMPOSITION = ("$ref", "$dynamicRef", "allOf", "anyOf", "oneOf", "not", "if", "then", "else",
                "dependentSchemas", "unevaluatedProperties", "patternProperties")
_ABSENT, _UNKNOWN = "absent", "unknown"
_SHOWN = 48  # longest value quoted in a message
_REGO_AT = re.compile(r"(?P<file>[A-Za-z0-9][A-Za-z0-9_.-]*\.rego)(?::(?P<line>[0-9]+)(?::[0-9]+)?)?: (?P<message>.*)",
                      re.S)


@dataclass(frozen=True, slots=True)
class PolicyProblem:
    """One policy problem.

    Fields:
        path: the manifest (or Rego file / directory) it is in.
        loc: where in the manifest's YAML, as keys and indexes (``()`` for the whole file).
        message: what is wrong, without secrets.
        severity: ``"error"``, ``"warning"`` or ``"note"``.
        line: the line, when known without the YAML (Rego compile errors); else None.
        rule: the stable id of the check (``policy.conflict``; ``portcullis lint --format sarif``'s ruleId).
    """

    path: Path
    loc: Loc
    message: str
    severity: Severity
    line: int | None = None
    rule: str = "policy"


def lint_policies(manifests: Iterable[LoadedManifest], *, environment: str | None,
                  rego_dir: Path | None = None, report_missing: bool = True) -> list[PolicyProblem]:
    """Every policy problem of the served ``manifests`` (and the Rego in ``rego_dir``), in order.

    ``environment`` is the gateway's configured environment; None skips check 3.
    ``report_missing`` False skips check 1 (see :func:`portcullis.config.loader.lint_deployment`).
    """
    problems: list[PolicyProblem] = []
    for loaded in manifests:
        manifest, path = loaded.manifest, loaded.path
        if manifest.policy is None and report_missing:  # 1
            problems.append(PolicyProblem(path, ("name",), f"{loaded.exposed_name}: no policy: the tool is "
                                          "denied to every caller (add a policy: section)", "warning",
                                          rule="policy.missing"))
        elif manifest.policy is not None:
            problems += (PolicyProblem(path, ("policy", *loc), message, severity, rule=rule)
                         for loc, message, severity, rule in _policy(manifest.policy, manifest.input_schema,
                                                                     environment))
        for index, pointer in enumerate(manifest.sensitive_arguments):  # 7
            if _schema_at(manifest.input_schema, pointer)[0] == _ABSENT:
                problems.append(PolicyProblem(path, ("sensitive_arguments", index), f"sensitive_arguments: "
                                              f"{_show(pointer)} names no argument of the input schema", "warning",
                                              rule="policy.pointer"))
        if manifest.egress is None and manifest.annotations.openWorldHint is True:  # 9
            problems.append(PolicyProblem(path, ("annotations", "openWorldHint"), f"{loaded.exposed_name}: "
                                          "openWorldHint without egress: the hint makes it an egress tool for the "
                                          "toxic-flow rule; say so with egress: true (or egress: false)", "warning",
                                          rule="policy.egress"))
    if rego_dir is not None:
        problems += _rego(rego_dir)  # 8
    return problems


_Found = tuple[Loc, str, Severity]


def _policy(policy: ToolPolicy, schema: Mapping[str, Any],
            environment: str | None) -> Iterator[tuple[Loc, str, Severity, str]]:
    """Checks 2 to 7, each finding with its rule id."""
    checks: list[tuple[str, Iterable[_Found]]] = [("policy.conflict", _conflicts(policy))]  # 2
    if environment is not None and policy.environments is not None and environment not in policy.environments:
        checks.append(("policy.environment", [(("environments",), f"environments: the gateway's environment "
                                               f"{_show(environment)} is not listed: every call is denied",
                                               "warning")]))  # 3
    checks += [("policy.enum", _enum(constraint, ("constraints", index)))  # 4
               for index, constraint in enumerate(policy.constraints)]
    checks += [("policy.unreachable", _amounts(policy, schema)),  # 5
               ("policy.unreachable", _currencies(policy, schema)),  # 6
               ("policy.pointer", _pointers(policy, schema))]  # 7
    for rule, found in checks:
        for loc, message, severity in found:
            yield loc, message, severity, rule


# ----------------------------------------------------------------------------- 2. caller conflicts


def covers(wider: str, narrower: str) -> bool:
    """True if every caller ``narrower`` (an allowed pattern) matches is also matched by ``wider`` (a denied one).

    Same kind; ``wider``'s issuer scope is absent, ``*`` or ``narrower``'s own; values compared as
    deny rules compare them (case-folded), ``wider`` a prefix of ``narrower`` or equal.
    """
    wider_source, wider = split_issuer_scope(wider)
    narrower_source, narrower = split_issuer_scope(narrower)
    if wider_source not in (None, ANY_ISSUER, narrower_source):
        return False
    kind, _, value = wider.partition(":")
    other_kind, _, other_value = narrower.partition(":")
    if kind != other_kind:
        return False
    if value.endswith("*"):
        return fold(other_value.removesuffix("*")).startswith(fold(value[:-1]))
    return not other_value.endswith("*") and fold(value) == fold(other_value)


def _conflicts(policy: ToolPolicy) -> Iterator[_Found]:
    for index, allowed in enumerate(policy.allowed_callers):
        for denied in policy.denied_callers:
            if covers(denied, allowed):
                how = "is also denied" if denied == allowed else f"is covered by denied {_show(denied)}"
                yield (("allowed_callers", index), f"allowed_callers: {_show(allowed)} {how}: it can never allow "
                       "anyone (deny overrides allow)", "error")
                break


# ----------------------------------------------------------------------------- 4. enum values


def _enum(constraint: Constraint, loc: Loc) -> Iterator[_Found]:
    if constraint.enum is None or len(constraint.checks()) == 1:
        return
    dead = []
    for index, value in enumerate(constraint.enum):
        failed = [check for check in failing_checks(constraint, value) if check != "enum"]
        if failed:
            dead.append((index, value, failed))
    for index, value, failed in dead:
        yield ((*loc, "enum", index), f"constraints: enum value {_show(value)} on {constraint.pointer} fails the "
               f"constraint's own {', '.join(failed)}: no call can use it", "warning")
    if dead and len(dead) == len(constraint.enum):
        yield ((*loc, "enum"), f"constraints: no enum value on {constraint.pointer} passes the constraint's other "
               "checks: every call with this argument is denied", "error")


# ----------------------------------------------------------------------------- 5. amounts


def _amounts(policy: ToolPolicy, schema: Mapping[str, Any]) -> Iterator[_Found]:
    state, amount = _schema_at(schema, policy.amount_pointer)
    if state != "present" or amount is None:
        return
    upper, upper_strict = _bound(amount, "maximum", "exclusiveMaximum", lower=False)
    lower, lower_strict = _bound(amount, "minimum", "exclusiveMinimum", lower=True)
    for name in ("max_amount", "requires_approval_over"):
        threshold: Decimal | None = getattr(policy, name)
        if threshold is None:
            continue
        # The rule fires for amounts above the threshold: possible only below the schema's upper bound.
        if upper is not None and threshold >= upper:
            yield ((name,), f"{name}: {threshold} is at or above the input schema's "
                   f"{'exclusiveMaximum' if upper_strict else 'maximum'} {upper}: the rule never applies", "warning")
        elif lower is not None and (threshold < lower or (lower_strict and threshold == lower)):
            bound = "exclusiveMinimum" if lower_strict else "minimum"
            if name == "max_amount":
                yield ((name,), f"max_amount: {threshold} is below the input schema's {bound} {lower}: every call "
                       "is denied", "error")
            else:
                yield ((name,), f"requires_approval_over: {threshold} is below the input schema's {bound} {lower}: "
                       "every call needs an approval", "warning")


def _bound(schema: Mapping[str, Any], inclusive: str, exclusive: str, *, lower: bool) -> tuple[Decimal | None, bool]:
    """The tighter of the inclusive and exclusive bound, and whether it is exclusive."""
    found: list[tuple[Decimal, bool]] = []
    for key, strict in ((inclusive, False), (exclusive, True)):
        value = schema.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
            if number.is_finite():
                found.append((number, strict))
    if not found:
        return None, False
    # Lower bound: the largest, exclusive first on a tie; upper bound: the smallest, exclusive first.
    def rank(item: tuple[Decimal, bool]) -> tuple[Decimal, bool]:
        return (item[0], item[1]) if lower else (-item[0], item[1])

    best = max(found, key=rank)
    return best[0], best[1]


# ----------------------------------------------------------------------------- 6. currencies


def _currencies(policy: ToolPolicy, schema: Mapping[str, Any]) -> Iterator[_Found]:
    if policy.allowed_currencies is None:
        return
    state, currency = _schema_at(schema, policy.currency_pointer)
    if state != "present" or currency is None:
        return
    rejected = [(index, code) for index, code in enumerate(policy.allowed_currencies)
                if _accepts(currency, code) is False]
    for index, code in rejected:
        yield (("allowed_currencies", index), f"allowed_currencies: {code} is never accepted by the input schema "
               f"at {policy.currency_pointer}", "warning")
    if rejected and len(rejected) == len(policy.allowed_currencies):
        yield (("allowed_currencies",), "allowed_currencies: the input schema accepts none of them: every call "
               "is denied", "error")


def _accepts(schema: Mapping[str, Any], value: str) -> bool | None:
    """False if ``schema`` surely rejects the string ``value`` (enum, const, type, pattern); None if unsure."""
    if "enum" in schema and isinstance(schema["enum"], list) and value not in schema["enum"]:
        return False
    if "const" in schema and schema["const"] != value:
        return False
    kinds = schema.get("type")
    if isinstance(kinds, str | list) and "string" not in ([kinds] if isinstance(kinds, str) else kinds):
        return False
    if isinstance(pattern := schema.get("pattern"), str):
        try:
            if not compile_pattern(pattern).search(value):  # ECMA-262, unanchored as in JSON Schema
                return False
        except PatternError:  # reported by the loader at the pattern's line
            return None
    return None


# ----------------------------------------------------------------------------- 7. pointers


def _pointers(policy: ToolPolicy, schema: Mapping[str, Any]) -> Iterator[_Found]:
    uses: list[tuple[Loc, str, bool]] = []  # where, pointer, whether a missing argument denies the call
    if policy.max_amount is not None or policy.requires_approval_over is not None:
        uses.append((("amount_pointer",), policy.amount_pointer, True))
    if policy.allowed_currencies is not None:
        uses.append((("currency_pointer",), policy.currency_pointer, True))
    if policy.tenant_argument is not None:
        uses.append((("tenant_argument",), policy.tenant_argument, True))
    uses += [(("tenant_arguments", i), pointer, True) for i, pointer in enumerate(policy.tenant_arguments)]
    uses += [(("constraints", i, "pointer"), c.pointer, c.required) for i, c in enumerate(policy.constraints)]
    uses += [(("redact", i), pointer, False) for i, pointer in enumerate(policy.redact)]
    for loc, pointer, denies in uses:
        if _schema_at(schema, pointer)[0] != _ABSENT:
            continue
        field = str(loc[0])
        if denies:
            yield (loc, f"{field}: {_show(pointer)} names no argument of the input schema: every call is denied",
                   "error")
        else:
            yield (loc, f"{field}: {_show(pointer)} names no argument of the input schema: it has no effect",
                   "warning")


def _schema_at(schema: Mapping[str, Any], pointer: str) -> tuple[str, Mapping[str, Any] | None]:
    """``("present", subschema)``, ``("absent", None)`` if no argument can be there, else ``("unknown", None)``."""
    node: Any = schema
    for token in pointer.split("/")[1:]:
        key = token.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or any(word in node for word in _COMPOSITION):
            return _UNKNOWN, None
        properties = node.get("properties")
        if isinstance(properties, Mapping) and key in properties:
            node = properties[key]
        elif isinstance(properties, Mapping) and node.get("additionalProperties") is False:
            return _ABSENT, None
        else:
            return _UNKNOWN, None
    return ("present", node) if isinstance(node, Mapping) else (_UNKNOWN, None)


# ----------------------------------------------------------------------------- 8. Rego


def _rego(directory: Path) -> list[PolicyProblem]:
    if not directory.is_dir() or not any(directory.glob("*.rego")):
        return []
    from portcullis.policy.rego import RegoCompileError, RegoPolicy

    try:
        RegoPolicy.load_dir(directory)
    except RegoCompileError as exc:
        located = _REGO_AT.match(str(exc))  # "file.rego[:line[:column]]: message" when the compiler says where
        if located is not None and (directory / located["file"]).is_file():
            line = int(located["line"]) if located["line"] else None
            return [PolicyProblem(directory / located["file"], (), f"Rego policy does not compile: "
                                  f"{located['message']}", "error", line, "rego.compile")]
        return [PolicyProblem(directory, (), f"Rego policy does not compile: {exc}", "error", rule="rego.compile")]
    except OSError:
        return [PolicyProblem(directory, (), "Rego policy cannot be read", "error", rule="rego.compile")]
    return []


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 4] + "...'"
