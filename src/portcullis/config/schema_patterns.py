"""JSON Schema validation of tool arguments with ECMA-262 patterns (:mod:`portcullis.policy.ecma_regex`).

The ``jsonschema`` library evaluates ``pattern`` and ``patternProperties`` with Python's ``re``;
JSON Schema means ECMA-262. :func:`manifest_validator` returns the dialect's validator with the
three keywords that read regular expressions replaced (``pattern``, ``patternProperties`` and
``additionalProperties``, which skips the names ``patternProperties`` matches).
:func:`pattern_problems` lists, with their location, every pattern of a schema that does not
compile as ECMA-262 in linear time, and a ``patternProperties`` used in a document that also uses
``unevaluatedProperties`` (whose evaluation inside ``jsonschema`` would still use ``re``). The
loader reports both as errors, so ``portcullis serve`` and ``portcullis lint`` refuse the same
manifests, and a pattern is compiled once per load (the compiled form is cached by its text).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.protocols import Validator

from portcullis.policy.ecma_regex import PatternError, compile_pattern

Loc = tuple[str | int, ...]
_ONE = ("additionalProperties", "unevaluatedProperties", "propertyNames", "contains", "not", "if", "then", "else",
        "additionalItems", "unevaluatedItems", "items")
_MANY = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
_NAMED = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies")


def manifest_validator(schema: Mapping[str, Any]) -> Validator:
    """A validator for ``schema`` (its own ``$schema`` dialect, 2020-12 by default) with ECMA-262 patterns."""
    base = validators.validator_for(schema, default=Draft202012Validator)
    return _ecma(base)(schema)


def pattern_problems(schema: object) -> list[tuple[Loc, str]]:
    """Every pattern of ``schema`` that cannot be used, as (location of the keyword, message)."""
    problems: list[tuple[Loc, str]] = []
    keywords: set[str] = set()
    for loc, pattern in _patterns(schema, (), keywords):
        try:
            compile_pattern(pattern)
        except PatternError as exc:
            problems.append((loc, f"pattern {_short(pattern)}: {exc}"))
    if {"patternProperties", "unevaluatedProperties"} <= keywords:
        problems.append(((), "patternProperties cannot be combined with unevaluatedProperties in one schema "
                             "(the evaluation would not use ECMA-262 patterns)"))
    return problems


def _patterns(node: object, loc: Loc, keywords: set[str]) -> Iterator[tuple[Loc, str]]:
    """(location, pattern) of every ``pattern`` and ``patternProperties`` name, walking only schema positions."""
    if not isinstance(node, Mapping):
        return
    keywords.update(key for key in node if isinstance(key, str))
    if isinstance(pattern := node.get("pattern"), str):
        yield (*loc, "pattern"), pattern
    if isinstance(named := node.get("patternProperties"), Mapping):
        for name in named:
            yield (*loc, "patternProperties", name), str(name)
    for key in _ONE:
        if isinstance(node.get(key), Mapping):
            yield from _patterns(node[key], (*loc, key), keywords)
    for key in _MANY:
        if isinstance(node.get(key), list):
            for index, item in enumerate(node[key]):
                yield from _patterns(item, (*loc, key, index), keywords)
    for key in _NAMED:
        if isinstance(node.get(key), Mapping):
            for name, item in node[key].items():
                yield from _patterns(item, (*loc, key, name), keywords)


def _short(pattern: str) -> str:
    return repr(pattern if len(pattern) <= 60 else pattern[:57] + "...")


# ----------------------------------------------------------------------------- the keywords


def _compiled(pattern: str) -> Any:
    try:
        return compile_pattern(pattern)
    except PatternError:  # not checked at load (e.g. behind a $ref): the check fails, closed
        return None


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string"):
        return
    compiled = _compiled(pattern)
    if compiled is None or not compiled.search(instance):
        yield ValidationError(f"does not match {_short(pattern)}")  # never echoes the value


def _matched_by(patterns: Mapping[str, Any], name: str) -> bool:
    for pattern in patterns:
        compiled = _compiled(pattern)
        if compiled is not None and compiled.search(name):
            return True
    return False


def _pattern_properties(validator: Any, patterns: Mapping[str, Any], instance: Any,
                        schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        compiled = _compiled(pattern)
        if compiled is None:
            yield ValidationError(f"pattern {_short(pattern)} cannot be evaluated")
            continue
        for name, value in instance.items():
            if compiled.search(name):
                yield from validator.descend(value, subschema, path=name, schema_path=pattern)


def _additional_properties(validator: Any, additional: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    extras = [name for name in instance if name not in properties and not _matched_by(patterns, name)]
    if validator.is_type(additional, "object"):
        for name in extras:
            yield from validator.descend(instance[name], additional, path=name)
    elif additional is False and extras:  # jsonschema's own messages
        if "patternProperties" in schema:
            verb = "does" if len(extras) == 1 else "do"
            joined = ", ".join(repr(each) for each in sorted(extras, key=str))
            listed = ", ".join(repr(each) for each in sorted(patterns))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {listed}")
        else:
            verb = "was" if len(extras) == 1 else "were"
            joined = ", ".join(repr(each) for each in sorted(extras, key=str))
            yield ValidationError(f"Additional properties are not allowed ({joined} {verb} unexpected)")


@functools.cache
def _ecma(base: type[Validator]) -> type[Validator]:
    replaced = {"pattern": _pattern, "patternProperties": _pattern_properties,
                "additionalProperties": _additional_properties}
    extended: type[Validator] = validators.extend(  # type: ignore[no-untyped-call]  # jsonschema stubs leave it untyped
        base, {k: v for k, v in replaced.items() if k in base.VALIDATORS})
    return extended
