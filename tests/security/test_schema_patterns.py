"""Manifest patterns mean ECMA-262 (Unicode mode) everywhere, run in linear time, or do not load.

The table lists the known differences between ECMA-262 and Python's ``re`` (``$`` and a final
newline, Unicode ``\\d``/``\\w``/``\\b``, the ``\\s`` set, ``.`` and line terminators, escapes,
class edge cases): each row is checked against the JSON Schema validator the gateway builds,
against the native policy constraint and against ``regress`` (an ECMA-262 engine) as the oracle,
and shows that Python's ``re`` would have answered otherwise. Python-only syntax and constructs
that need backtracking are refused when the manifest loads, by ``serve`` and ``lint`` alike.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import regress
from hypothesis import given, settings
from hypothesis import strategies as st

from portcullis.config.loader import lint_deployment, load_deployment
from portcullis.config.schema_patterns import manifest_validator, pattern_problems
from portcullis.errors import ConfigError
from portcullis.policy.ecma_regex import PatternError, compile_pattern
from portcullis.policy.model import Constraint
from portcullis.policy.native import failing_checks

# (ECMA pattern, value, ECMA answer for "matches somewhere", Python re's answer or "error")
DIFFERENCES: list[tuple[str, str, bool, bool | str]] = [
    (r"^abc$", "abc\n", False, True),
    (r"a$", "a\n", False, True),
    (r"^\d+$", "\u0661\u0662\u0663", False, True),  # Arabic-Indic digits
    (r"^\d+$", "\uff11\uff12", False, True),  # fullwidth digits
    (r"^\d$", "\u09e9", False, True),  # Bengali digit
    (r"^\D$", "\u0661", True, False),
    (r"^\w+$", "\u00e9", False, True),
    (r"^\w+$", "\u65e5\u672c", False, True),
    (r"^\w$", "\u01c5", False, True),
    (r"^\W$", "\u00e9", True, False),
    (r"a\b", "a\u00e9", True, False),  # \b is an ASCII word boundary
    (r"\B\u00e9", "a\u00e9", False, True),
    (r"^\s$", "\ufeff", True, False),  # BOM is ECMA white space
    (r"^\s$", "\x1c", False, True),  # Python's \s has the information separators
    (r"^\s$", "\x85", False, True),  # and NEL
    (r"^\S$", "\x85", True, False),
    (r"^\s$", "\u2028", True, True),
    (r"^.$", "\u2028", False, True),  # . excludes the four line terminators
    (r"^.$", "\u2029", False, True),
    (r"^.$", "\r", False, True),
    (r"^.$", "\n", False, False),
    (r"^.$", "\x85", True, True),
    (r"^\u{41}$", "A", True, "error"),
    (r"^\u0041$", "A", True, True),
    (r"^\uD83D\uDE00$", "\U0001f600", True, False),  # a surrogate pair escape is one code point
    (r"^[^]$", "\n", True, "error"),
    (r"^[]$", "", False, "error"),
    (r"^[]", "x", False, "error"),
    (r"^\cJ$", "\n", True, "error"),
    (r"^\p{L}+$", "\u00e9cole", True, "error"),
    (r"^\P{L}$", "1", True, "error"),
    (r"^\p{Lu}$", "\u00c9", True, "error"),
    (r"^\p{Script=Greek}+$", "\u03b1\u03b2", True, "error"),
    (r"^(?<year>\d{4})$", "2024", True, "error"),
    (r"^[\b]$", "\x08", True, True),
    (r"^\0$", "\x00", True, True),
    (r"^[\w-]+$", "a-b_1", True, True),
    (r"^[^\W\d]+$", "abc", True, True),
    (r"^[^\W\d]+$", "ab1", False, False),
    (r"^[--0]$", ".", True, True),  # a range from '-' to '0'
    (r"^[\d\s]+$", "1 \u00a0 2", True, True),
    (r"^a/b$", "a/b", True, True),
    (r"^\/$", "/", True, True),
    (r"^[\^]$", "^", True, True),
    (r"^a{2,3}?$", "aaa", True, True),
    (r"^(?:a|b)*$", "abba", True, True),
    (r"^$", "\n", False, True),
]

REFUSED = [
    r"\Z", r"\A", r"\z", "(?i)abc", "(?i:abc)", "(?s).", "(?x) a", "(?u)a", "(?#note)a", "(?P<n>a)", "(?P<n>a)(?P=n)",
    "a++", "a*+", "a?+", "(?>a)", "a{,3}", r"(a)\1", r"(?<n>a)\k<n>", "(?=a)", "(?!a)", "(?<=a)b", "(?<!a)b",
    r"\p{Lowercase}", r"\p{scx=Latin}", r"\p{Script_Extensions=Greek}", "a{1001}", "a{2,5000}", r"\uD800",
    r"[a-\d]", r"\-", "{", "}", "]", r"\_", r"\8", r"\01", "[", "\\", r"\N{DIGIT ONE}", "(", ")", "a**", r"\e",
    r"\g<1>", "[[:alpha:]]x]",
]


def ecma(pattern: str, value: str) -> bool:
    """What an ECMA-262 engine (regress, Unicode mode) answers: the oracle."""
    return regress.Regex(pattern, "u").find(value) is not None


def python_re(pattern: str, value: str) -> bool | str:
    try:
        return re.search(pattern, value) is not None
    except re.error:
        return "error"


@pytest.mark.parametrize(("pattern", "value", "expected", "python"), DIFFERENCES)
def test_schema_pattern_has_ecma_semantics(pattern: str, value: str, expected: bool, python: bool | str) -> None:
    """The gateway's schema validator answers as ECMA-262 does, where Python's re may not."""
    assert ecma(pattern, value) is expected
    assert python_re(pattern, value) == python
    validator = manifest_validator({"type": "object", "properties": {"x": {"type": "string", "pattern": pattern}}})
    assert validator.is_valid({"x": value}) is expected
    assert compile_pattern(pattern).search(value) is expected


@pytest.mark.parametrize(("pattern", "value", "expected", "python"), DIFFERENCES)
def test_policy_constraint_pattern_has_ecma_semantics(pattern: str, value: str, expected: bool,
                                                      python: bool | str) -> None:
    """A policy constraint's pattern must match the whole value, with ECMA-262 meaning."""
    constraint = Constraint.model_validate({"pointer": "/x", "pattern": pattern})
    whole = ecma(f"^(?:{pattern})$", value)
    assert (failing_checks(constraint, value) == ()) is whole


@pytest.mark.parametrize("pattern", REFUSED)
def test_python_only_and_backtracking_patterns_are_refused(pattern: str) -> None:
    """Python-only syntax, lookaround, backreferences and huge repetitions never compile."""
    with pytest.raises(PatternError):
        compile_pattern(pattern)
    with pytest.raises(ValueError, match="pattern does not compile"):
        Constraint.model_validate({"pointer": "/x", "pattern": pattern})


@pytest.mark.parametrize("pattern", REFUSED)
def test_schema_with_a_refused_pattern_is_a_problem_at_its_location(pattern: str) -> None:
    """A refused pattern anywhere in a schema is reported with the path to its keyword."""
    schema = {"type": "object", "properties": {"a": {"items": [{"pattern": pattern}]},
                                               "b": {"anyOf": [{"patternProperties": {pattern: {}}}]}}}
    locations = [loc for loc, _ in pattern_problems(schema)]
    assert locations == [("properties", "a", "items", 0, "pattern"),
                         ("properties", "b", "anyOf", 0, "patternProperties", pattern)]


def test_values_named_pattern_are_not_mistaken_for_patterns() -> None:
    """A property called 'pattern' and defaults or examples holding one are data, not regexes."""
    schema = {"properties": {"pattern": {"type": "string", "default": "(?i)x"}},
              "examples": [{"pattern": "(?P<x>)"}], "default": {"pattern": r"\Z"}}
    assert pattern_problems(schema) == []


def test_catastrophic_pattern_runs_in_linear_time() -> None:
    """``^(a+)+$`` against 50 000 a's and a b finishes (a backtracking engine would take ages)."""
    value = "a" * 50_000 + "b"
    validator = manifest_validator({"properties": {"x": {"pattern": r"^(a+)+$"}, "y": {"pattern": r"^(a|aa)*$"}}})
    assert not validator.is_valid({"x": value, "y": value})
    constraint = Constraint.model_validate({"pointer": "/x", "pattern": r"(\w+\s?)*"})
    assert failing_checks(constraint, "word " * 10_000 + "!") == ("pattern",)


def test_pattern_properties_and_additional_properties_use_ecma() -> None:
    """A key 'x\\n' is not matched by '^x$', so additionalProperties: false refuses it."""
    validator = manifest_validator({"type": "object", "patternProperties": {"^x$": {"type": "string"}},
                                    "additionalProperties": False})
    assert validator.is_valid({"x": "ok"})
    assert not validator.is_valid({"x\n": "smuggled"})
    assert not validator.is_valid({"x": 1})
    names = manifest_validator({"propertyNames": {"pattern": r"^\w+$"}})
    assert not names.is_valid({"\u00e9": 1})


def test_unevaluated_properties_with_pattern_properties_is_refused() -> None:
    """jsonschema would evaluate that pair with Python's re, so the combination does not load."""
    schema = {"patternProperties": {"^a": {}}, "allOf": [{"unevaluatedProperties": False}]}
    assert [message for _, message in pattern_problems(schema)] == [
        "patternProperties cannot be combined with unevaluatedProperties in one schema "
        "(the evaluation would not use ECMA-262 patterns)"]


def test_a_pattern_behind_a_ref_that_cannot_compile_fails_closed() -> None:
    """Were an uncompilable pattern ever reached at call time, the value would be refused, not passed."""
    validator = manifest_validator({"properties": {"x": {"pattern": "(?=a)"}}})
    assert not validator.is_valid({"x": "a"})


def test_validation_errors_do_not_echo_the_value() -> None:
    """The pattern error names the pattern, never the argument (it may be a secret)."""
    validator = manifest_validator({"properties": {"x": {"pattern": "^[0-9]+$"}}})
    (error,) = validator.iter_errors({"x": "hunter2-secret"})
    assert "hunter2" not in error.message and error.validator == "pattern"


def test_lone_surrogate_value_matches_nothing() -> None:
    """A value with a lone surrogate cannot be matched exactly, so it does not match."""
    assert not compile_pattern("^[^]*$").search("\ud800")


# ----------------------------------------------------------------------------- load and lint

GATEWAY = """\
version: 1
sessions:
  key_ref: secret://env/PORTCULLIS_TEST_KEYS
services:
  billing:
    transport: http
    url: http://127.0.0.1:9001/mcp
identity: {allow_insecure_dev_issuer: true}
"""

MANIFEST = """\
name: refund
service: billing
owner: payments@example.com
description: Refund an order.
risk: medium
classification:
  input: Confidential
  output: Confidential
input_schema:
  type: object
  properties:
    order_id:
      type: string
      pattern: {input_pattern}
    meta:
      type: object
      patternProperties:
        {key_pattern}: {{type: string}}
output_schema:
  type: object
  properties:
    status: {{type: string, pattern: {output_pattern}}}
policy:
  allowed_callers: ["role:billing"]
  constraints:
    - pointer: /order_id
      pattern: {policy_pattern}
pin: sha256:{pin}
"""  # order_id's pattern on line 14, the patternProperties key on 18, status on 22, policy's on 27


def _deployment(tmp_path: Path, **patterns: str) -> Path:
    values = {"input_pattern": "'^ORD-[0-9]+$'", "key_pattern": "'^x-'", "output_pattern": "'^ok$'",
              "policy_pattern": "'^ORD-[0-9]+$'", "pin": "0f" * 32} | patterns
    root = tmp_path / "deployment"
    (root / "tools" / "billing").mkdir(parents=True)
    (root / "gateway.yaml").write_text(GATEWAY)
    (root / "tools" / "billing" / "refund.yml").write_text(MANIFEST.format(**values))
    return root


def test_deployment_with_ecma_patterns_loads(tmp_path: Path) -> None:
    """The fixture deployment is clean, so the cases below fail for their pattern alone."""
    root = _deployment(tmp_path)
    assert [p for p in lint_deployment(root) if p.severity == "error"] == []
    load_deployment(root)


@pytest.mark.parametrize(("field", "line"), [
    ("input_pattern", 14), ("key_pattern", 18), ("output_pattern", 22), ("policy_pattern", 27)])
@pytest.mark.parametrize("pattern", ["'(?i)ord'", "'^ORD\\Z'", "'(?=O)ORD'", "'(?P<id>x)'"])
def test_serve_and_lint_refuse_a_python_only_pattern_at_its_line(tmp_path: Path, field: str, line: int,
                                                                 pattern: str) -> None:
    """Lint reports the pattern at its file and line, and loading for serve refuses the same deployment."""
    root = _deployment(tmp_path, **{field: pattern})
    errors = [p for p in lint_deployment(root) if p.severity == "error"]
    assert [(p.path.name, p.line) for p in errors] == [("refund.yml", line)]
    assert "pattern" in errors[0].message
    with pytest.raises(ConfigError) as refused:
        load_deployment(root)
    assert [(p.path.name, p.line) for p in refused.value.problems] == [("refund.yml", line)]


# ----------------------------------------------------------------------------- differential

ATOMS = ["a", "b", ".", r"\d", r"\D", r"\w", r"\W", r"\s", r"\S", "[a-c]", "[^a]", r"[\d\s]", r"[^\w]", r"\u00e9",
         r"\n", "[^]", r"\p{L}", r"\P{Nd}", r"\x41", "\u00e9", r"\/", "[.-9]"]
ASSERTIONS = ["^", "$", r"\b", r"\B"]
QUANTIFIERS = ["", "", "*", "+", "?", "{2}", "{0,2}", "*?", "{1,}"]


@st.composite
def patterns(draw: Any, depth: int = 2) -> str:
    def term() -> str:
        if draw(st.integers(0, 5)) == 0:
            return draw(st.sampled_from(ASSERTIONS))
        if depth > 0 and draw(st.integers(0, 4)) == 0:
            # A group is never repeated: nested quantifiers make the backtracking oracle (regress)
            # explode in time and memory (a seed reached 24 GB); our RE2-based matcher is linear anyway.
            return "(" + draw(patterns(depth=depth - 1)) + ")" + draw(st.sampled_from(["", "?"]))
        return draw(st.sampled_from(ATOMS)) + draw(st.sampled_from(QUANTIFIERS))

    alternatives = ["".join(term() for _ in range(draw(st.integers(1, 3)))) for _ in range(draw(st.integers(1, 2)))]
    return "|".join(alternatives)


VALUES = st.text(st.sampled_from(["a", "b", "c", "A", "1", "\u0661", " ", "\n", "\r", "\u2028", "\u00a0", "\ufeff",
                                  "\x85", "\u00e9", "_", "-", ".", "/", "\U0001f600", "\x1c"]), max_size=8)


@settings(max_examples=500, deadline=None)
@given(patterns(), VALUES)
def test_translation_agrees_with_an_ecma_engine(pattern: str, value: str) -> None:
    """Over generated patterns and tricky values, our linear-time matcher answers as regress does."""
    assert compile_pattern(pattern).search(value) is ecma(pattern, value)
    assert compile_pattern(pattern).fullmatch(value) is ecma(f"^(?:{pattern})$", value)
