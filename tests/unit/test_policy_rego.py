"""Rego modules in-process: decisions, fail-closed errors, compile errors, versions, and hostile inputs."""

from __future__ import annotations

import base64
import json
import re
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from portcullis.identity.principal import Principal
from portcullis.policy import Obligation, rego_runtime
from portcullis.policy import rego as rego_module
from portcullis.policy.rego import ALL, RegoCompileError, RegoFinding, RegoPolicy, RegoResult, wanted_input

DOCS = Path(__file__).resolve().parents[2] / "docs" / "rego.md"

HR = """\
package portcullis.hr

import rego.v1

hr_tool if input.tool.service == "hr"

deny contains {"id": "hr/contractor_denied", "reason": "contractor_not_allowed"} if {
    hr_tool
    input.principal.attributes.employment_type == "contractor"
}

require_approval contains {"id": "hr/high_risk_write", "reason": "high_risk_tool"} if {
    input.tool.risk == "high"
    not input.tool.annotations.readOnlyHint
}

obligations contains {"kind": "redact", "pointer": "/ssn"} if hr_tool
obligations contains {"kind": "audit"} if hr_tool
"""

TENANCY = """\
package portcullis.tenancy

import rego.v1

same_tenant if input.arguments.tenant_id == input.principal.tenant

# Fail closed: a caller without a tenant is not in the tenant the call names.
deny contains {"id": "tenancy/cross_tenant", "reason": "tenant_mismatch"} if {
    "tenant_id" in object.keys(input.arguments)
    not same_tenant
}
"""


def _principal(**attributes: str) -> dict[str, Any]:
    principal = Principal(client_id="portal", auth_method="bearer", issuer="https://idp.example.com",
                          user_id="alice", tenant="acme", attributes=attributes)
    return principal.to_claims()


def _input(*, principal: dict[str, Any] | None = None, service: str = "hr", risk: str = "low",
           read_only: bool = True, **arguments: Any) -> dict[str, Any]:
    return {
        "principal": principal if principal is not None else _principal(employment_type="full_time"),
        "tool": {"name": f"{service}.tool", "service": service, "upstream_name": "tool", "risk": risk,
                 "owner": "team@example.com", "classification": {"input": "Internal", "output": "Internal"},
                 "annotations": {"readOnlyHint": read_only}},
        "arguments": arguments,
        "environment": "production",
        "now": "2026-03-02T10:00:00Z",
        "session": {"calls": {"hr.tool/1m": 1}, "totals": {"calls": 1}},
    }


def _module(body: str, package: str = "t") -> dict[str, str]:
    return {f"{package}.rego": f"package portcullis.{package}\n\nimport rego.v1\n\n{body}\n"}


def _ids(result: RegoResult) -> list[str]:
    return [finding.rule_id for finding in result.findings]


@pytest.fixture(scope="module")
def policy() -> RegoPolicy:
    return RegoPolicy.compile({"hr.rego": HR, "tenancy.rego": TENANCY})


# ----------------------------------------------------------------------------- decisions


def test_contractor_is_denied_hr_tools_and_full_time_employee_is_not(policy: RegoPolicy) -> None:
    """A contractor calling an hr tool is denied; a full-time employee making the same call is not."""
    contractor = policy.evaluate(_input(principal=_principal(employment_type="contractor")))
    employee = policy.evaluate(_input(principal=_principal(employment_type="full_time")))
    assert contractor == RegoResult(
        findings=(RegoFinding("deny", "hr/contractor_denied", "contractor_not_allowed"),),
        obligations=(Obligation("audit"), Obligation("redact", "/ssn")))
    assert employee.error is None and employee.findings == ()


def test_contractor_is_not_denied_tools_of_other_services(policy: RegoPolicy) -> None:
    """The contractor rule only applies to hr tools."""
    result = policy.evaluate(_input(principal=_principal(employment_type="contractor"), service="billing"))
    assert result == RegoResult()


@pytest.mark.parametrize(("caller_tenant", "denied"), [("acme", False), ("globex", True), (None, True)])
def test_cross_tenant_call_is_denied_and_tenantless_caller_fails_closed(
        policy: RegoPolicy, caller_tenant: str | None, denied: bool) -> None:
    """Naming another tenant is denied, and so is a caller with no tenant at all."""
    principal = _principal(employment_type="full_time")
    principal.pop("tenant")
    if caller_tenant is not None:
        principal["tenant"] = caller_tenant
    result = policy.evaluate(_input(principal=principal, service="billing", tenant_id="acme"))
    assert result.error is None
    assert _ids(result) == (["tenancy/cross_tenant"] if denied else [])


def test_high_risk_write_requires_approval_from_rego(policy: RegoPolicy) -> None:
    """A module can ask for a human approval, with its own rule id and reason."""
    result = policy.evaluate(_input(risk="high", read_only=False))
    assert result.findings == (RegoFinding("require_approval", "hr/high_risk_write", "high_risk_tool"),)
    assert policy.evaluate(_input(risk="high", read_only=True)).findings == ()


def test_redact_and_audit_obligations_are_returned(policy: RegoPolicy) -> None:
    """Obligations come back as the native engine's Obligation values."""
    assert policy.evaluate(_input()).obligations == (Obligation("audit"), Obligation("redact", "/ssn"))


def test_findings_of_several_packages_are_merged_denials_first_without_duplicates() -> None:
    """Findings from every package are returned once each, denials before approvals."""
    finding = '{"id": "x/same", "reason": "same"}'
    modules = {
        **_module(f'require_approval contains {{"id": "a/ask", "reason": "ask"}} if true\n'
                  f"deny contains {finding} if true", package="a"),
        **_module(f'deny contains {finding} if true\ndeny contains {{"id": "b/no", "reason": "no"}} if true',
                  package="b"),
    }
    result = RegoPolicy.compile(modules).evaluate({})
    assert [(f.effect, f.rule_id) for f in result.findings] == [
        ("deny", "x/same"), ("deny", "b/no"), ("require_approval", "a/ask")]


def test_modules_without_decision_rules_add_nothing() -> None:
    """Helper-only packages and rules that do not match add no finding and no error."""
    result = RegoPolicy.compile(_module("helper := 1\nflag if input.never")).evaluate({"a": 1})
    assert result == RegoResult()


def test_two_modules_may_share_a_package() -> None:
    """Files of one package contribute to the same deny set."""
    modules = {"one.rego": _module('deny contains {"id": "p/one", "reason": "one"} if true', "p")["p.rego"],
               "two.rego": _module('deny contains {"id": "p/two", "reason": "two"} if true', "p")["p.rego"]}
    assert _ids(RegoPolicy.compile(modules).evaluate({})) == ["p/one", "p/two"]


# ----------------------------------------------------------------------------- errors at evaluation


@pytest.mark.parametrize(("body", "message"), [
    ("x := 1 if input.a\nx := 2 if input.a\ndeny contains {\"id\": \"t/x\", \"reason\": \"x\"} if x",
     "runtime: complete rules must not produce multiple outputs"),
    ('deny contains {"id": "t/x", "reason": "x"} if 1 / input.zero', "runtime: divide by zero"),
    ('deny contains {"id": "t/x", "reason": "x"} if object.get(input.text, "k", 1)',
     "runtime: object.get: operand 1 must be object but got string"),
    ('deny contains {"id": "t/x", "reason": "x"} if to_number(input.text)', "runtime: invalid syntax"),
    ('deny contains x if { x := no_such_function(1) }', "runtime: Function not found: no_such_function"),
])
def test_rego_runtime_error_sets_error(body: str, message: str) -> None:
    """Conflicts, failing built-ins and unknown functions are errors (the caller denies), never a pass."""
    result = RegoPolicy.compile(_module(body)).evaluate({"a": True, "zero": 0, "text": "abc"})
    assert result == RegoResult(error=message)


MALFORMED = {
    "deny is a string": 'deny := "no"',
    "deny is a number": "deny := 1",
    "deny is an object": 'deny := {"id": "t/x", "reason": "x"}',
    "element is a string": 'deny contains "t/x" if true',
    "element misses reason": 'deny contains {"id": "t/x"} if true',
    "element has an extra key": 'deny contains {"id": "t/x", "reason": "x", "effect": "allow"} if true',
    "id is a number": 'deny contains {"id": 7, "reason": "x"} if true',
    "id has a space": 'deny contains {"id": "t x", "reason": "x"} if true',
    "id has a control character": 'deny contains {"id": "t/x\\n", "reason": "x"} if true',
    "id is too long": f'deny contains {{"id": "{"i" * 129}", "reason": "x"}} if true',
    "reason is a sentence": 'deny contains {"id": "t/x", "reason": "Not allowed!"} if true',
    "reason is too long": f'deny contains {{"id": "t/x", "reason": "{"r" * 65}"}} if true',
    "reason is null": 'deny contains {"id": "t/x", "reason": null} if true',
    "approval element is a list": 'require_approval contains ["t/x", "x"] if true',
    "approval has an effect": 'require_approval contains {"id": "t/x", "reason": "x", "effect": "ok"} if true',
    "unknown obligation kind": 'obligations contains {"kind": "encrypt", "pointer": "/ssn"} if true',
    "redact without pointer": 'obligations contains {"kind": "redact"} if true',
    "pointer without slash": 'obligations contains {"kind": "redact", "pointer": "ssn"} if true',
    "empty pointer": 'obligations contains {"kind": "redact", "pointer": ""} if true',
    "pointer with a bad escape": 'obligations contains {"kind": "redact", "pointer": "/a~2"} if true',
    "audit with a pointer": 'obligations contains {"kind": "audit", "pointer": "/ssn"} if true',
    "obligations is an object": 'obligations := {"kind": "audit"}',
    "too many elements": 'deny contains {"id": sprintf("t/%d", [i]), "reason": "x"} if some i in numbers.range(0, 64)',
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_output_is_an_error(body: str) -> None:
    """Anything but the documented decision shape fails closed with an output error."""
    result = RegoPolicy.compile(_module(body)).evaluate({})
    assert result.findings == () and result.obligations == ()
    assert result.error is not None and result.error.startswith("output: ")


def test_forged_output_from_a_decoded_string_is_an_error_never_fewer_findings() -> None:
    """A string rego-cpp does not escape (base64-decoded) cannot restructure the output into an allow."""
    body = ('deny contains {"id": "t/first", "reason": r} if { r := base64.decode(input.blob) }\n'
            'deny contains {"id": "t/last", "reason": "always"} if true')
    policy = RegoPolicy.compile(_module(body))
    forged = base64.b64encode(b'x"}]],[[{"id":"t/q","reason":"').decode()
    assert policy.evaluate({"blob": forged}).error == "output: unexpected shape"
    assert _ids(policy.evaluate({"blob": base64.b64encode(b"fine").decode()})) == ["t/first", "t/last"]


# ----------------------------------------------------------------------------- the input document


def test_strings_with_quotes_backslashes_and_nul_compare_exactly() -> None:
    """Escaped characters reach Rego as the same string: no truncation at NUL, no broken equality."""
    body = ('deny contains {"id": "t/quote", "reason": "x"} if input.s == "say \\"hi\\" \\\\o/"\n'
            'deny contains {"id": "t/nul", "reason": "x"} if input.s == "a"\n'
            'deny contains {"id": "t/unicode", "reason": "x"} if input.s == "zoë 😀"')
    policy = RegoPolicy.compile(_module(body))
    assert _ids(policy.evaluate({"s": 'say "hi" \\o/'})) == ["t/quote"]
    assert _ids(policy.evaluate({"s": "a\x00b"})) == []
    assert _ids(policy.evaluate({"s": "zoë 😀"})) == ["t/unicode"]


@pytest.mark.parametrize(("value", "denied"), [
    (100.0000004, True), (100.0, False), (100, False), (1e-7, True), (2**70, True), (-(2**70), False),
])
def test_numbers_keep_their_precision(value: float, denied: bool) -> None:
    """Floats the C API would round to six decimals, and ints beyond 64 bits, keep their exact value."""
    body = ('deny contains {"id": "t/over", "reason": "x"} if input.amount > 100\n'
            'deny contains {"id": "t/over", "reason": "x"} if { input.amount > 0; input.amount < 0.000001 }')
    result = RegoPolicy.compile(_module(body)).evaluate({"amount": value, "unread": {"tiny": [1.5e-9, 2**80]}})
    assert result.error is None and _ids(result) == (["t/over"] if denied else [])


NOT_JSON: dict[str, Any] = {
    "NaN": {"x": float("nan")},
    "infinity": {"x": float("-inf")},
    "a set": {"x": {1, 2}},
    "bytes": {"x": b"raw"},
    "a Decimal": {"x": Decimal("1.5")},
    "an object": {"x": object()},
    "a non-string key": {"x": {1: "one"}},
    "a lone surrogate": {"x": "\ud800"},
    "a list at the top": [1, 2],
    "too deep": {"x": json.loads("[" * 70 + "]" * 70)},
    "too many values": {"x": list(range(rego_runtime.MAX_INPUT_VALUES + 1))},
}


@pytest.mark.parametrize("document", NOT_JSON.values(), ids=NOT_JSON.keys())
def test_input_that_is_not_json_is_an_error(policy: RegoPolicy, document: Any) -> None:
    """A document json.dumps would refuse (or that is too big) is an input error, never a pass."""
    result = policy.evaluate(document)
    assert result.findings == () and result.error is not None and result.error.startswith("input: ")


WANTED: dict[str, tuple[list[str], Any]] = {
    "dotted paths": (["input.principal.attributes.employment_type", "input.tool.risk"],
                     {"principal": {"attributes": {"employment_type": ALL}}, "tool": {"risk": ALL}}),
    "a prefix wins": (["input.principal.attributes.x", "p := input.principal"], {"principal": ALL}),
    "a field named input": (["c := input.tool.classification\nc.input == 1", "my_input.x"],
                            {"tool": {"classification": ALL}}),
    "input as the last field": (["input.tool.classification.input"], {"tool": {"classification": {"input": ALL}}}),
    "brackets read everything": (["input.a", 'input["b"]'], ALL),
    "walk reads everything": (["walk(input, [p, v])"], ALL),
    "an import alias reads everything": (["import input as i"], ALL),
    "a space after input reads everything": (["input .a"], ALL),
    "no reference": (["x := 1"], {}),
    "comments and strings do not count": (['# the input document\nx := "input" \ny := `input[0]`\nz := input.a'],
                                          {"a": ALL}),
    "a # in a string hides nothing": (['x := "#"; y := input.a # input.b', 'z := "\\"#"; w := input.c'],
                                      {"a": ALL, "c": ALL}),
}


@pytest.mark.parametrize(("sources", "expected"), WANTED.values(), ids=WANTED.keys())
def test_only_the_input_paths_modules_name_are_handed_over(sources: list[str], expected: Any) -> None:
    """wanted_input is conservative: a dotted reference sends its subtree, any other use sends all."""
    assert wanted_input(sources) == expected


def test_modules_that_read_all_of_input_see_all_of_it() -> None:
    """A module using input as a whole (here object.keys(input)) gets the whole document."""
    body = 'deny contains {"id": "t/keys", "reason": "x"} if count(object.keys(input)) == 3'
    assert _ids(RegoPolicy.compile(_module(body)).evaluate({"a": 1, "b": [2], "c": {"d": None}})) == ["t/keys"]


def test_mappings_tuples_and_enum_values_are_json(policy: RegoPolicy) -> None:
    """Read-only mappings, tuples and str/int enum members are accepted as their JSON values."""
    from enum import IntEnum, StrEnum
    from types import MappingProxyType

    class Service(StrEnum):
        HR = "hr"

    class Level(IntEnum):
        ONE = 1

    document = _input(principal=_principal(employment_type="contractor"), level=Level.ONE, tags=("a", "b"))
    document["tool"] = MappingProxyType({**document["tool"], "service": Service.HR})
    assert _ids(policy.evaluate(document)) == ["hr/contractor_denied"]


# ----------------------------------------------------------------------------- time budget, threads


def test_budget_exceeded_sets_timeout_but_keeps_the_result() -> None:
    """Over budget, the findings are still there and error is 'timeout' (the caller denies)."""
    policy = RegoPolicy.compile({"hr.rego": HR}, budget_s=0)
    result = policy.evaluate(_input(principal=_principal(employment_type="contractor")))
    assert result.error == "timeout" and _ids(result) == ["hr/contractor_denied"]


def test_budget_must_be_a_finite_non_negative_number() -> None:
    """A negative or infinite budget is a configuration error."""
    for budget in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="budget_s"):
            RegoPolicy.compile({"hr.rego": HR}, budget_s=budget)


def test_concurrent_evaluations_from_threads_do_not_mix_inputs(policy: RegoPolicy) -> None:
    """The interpreter holds one input at a time; evaluations from several threads stay separate."""
    wrong: list[RegoResult] = []

    def work(contractor: bool) -> None:
        document = _input(principal=_principal(employment_type="contractor" if contractor else "full_time"))
        for _ in range(60):
            result = policy.evaluate(document)
            if (_ids(result) == ["hr/contractor_denied"]) != contractor or result.error not in (None, "timeout"):
                wrong.append(result)

    threads = [threading.Thread(target=work, args=(i % 2 == 0,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def test_evaluate_never_compiles(monkeypatch: pytest.MonkeyPatch, policy: RegoPolicy) -> None:
    """After compile, evaluation only sets the input and runs the bundle: building again would fail here."""
    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("compiled during evaluate")

    monkeypatch.setattr(rego_runtime.Interpreter, "build", refuse)
    monkeypatch.setattr(rego_runtime.Interpreter, "add_module", refuse)
    assert _ids(policy.evaluate(_input(principal=_principal(employment_type="contractor")))) == [
        "hr/contractor_denied"]


# ----------------------------------------------------------------------------- compiling


def test_syntax_error_names_the_file_and_line(capfd: pytest.CaptureFixture[str]) -> None:
    """A parse error says which file and where, prints nothing, and shows no stack trace."""
    broken = "package portcullis.b\n\nimport rego.v1\n\ndeny contains x if {\n  x := \n}\n"
    with pytest.raises(RegoCompileError) as caught:
        RegoPolicy.compile({"a.rego": "package portcullis.a\n", "b.rego": broken})
    assert str(caught.value) == "b.rego:6:5: Invalid assignment operator"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert capfd.readouterr() == ("", "")  # rego-cpp prints errors to stdout unless told not to


@pytest.mark.parametrize(("modules", "message"), [
    ({}, "no modules: a Rego policy needs at least one module"),
    ({"a.rego": "package other\ndeny := 1\n"}, "a.rego:1: the first statement must be 'package portcullis.<name>'"),
    ({"a.rego": "# only a comment\n\npackage portcullis\n"},
     "a.rego:3: the first statement must be 'package portcullis.<name>'"),
    ({"a.rego": "package portcullis.a.b\n"}, "a.rego:1: the first statement must be 'package portcullis.<name>'"),
    ({"a.rego": "# nothing\n"}, "a.rego: no package declaration (expected 'package portcullis.<name>')"),
    ({"a.rego": "package portcullis.a\n\ndefault allow := false\n"},
     "a.rego:3: rule 'allow' is not supported: Rego modules only add findings through deny, require_approval "
     "and obligations"),
    ({"a.rego": "package portcullis.a\nwarn contains 1 if true\n"}, "a.rego:2: rule 'warn' is not supported"),
    ({"a.rego": "package portcullis.a\nx := 1\x00\n"}, "a.rego: source contains a NUL character"),
    ({"../a.rego": "package portcullis.a\n"}, "module name '../a.rego' must be a plain file name"),
    ({"a.rego": "package portcullis.a\ny := {\n"}, "a.rego:2:6: this is unclosed (and 1 more)"),
])
def test_bad_modules_are_compile_errors(modules: dict[str, str], message: str) -> None:
    """Empty module sets, foreign packages, allow rules, NULs, odd names and syntax errors do not compile."""
    with pytest.raises(RegoCompileError, match="^" + re.escape(message)):
        RegoPolicy.compile(modules)


def test_version_is_stable_under_dict_order_and_changes_with_any_source() -> None:
    """The version hashes sorted (name, source) pairs: order does not matter, content does."""
    one = RegoPolicy.compile({"hr.rego": HR, "tenancy.rego": TENANCY})
    two = RegoPolicy.compile({"tenancy.rego": TENANCY, "hr.rego": HR})
    changed = RegoPolicy.compile({"hr.rego": HR + "\n# reviewed\n", "tenancy.rego": TENANCY})
    renamed = RegoPolicy.compile({"hr2.rego": HR, "tenancy.rego": TENANCY})
    assert re.fullmatch(r"rego-[0-9a-f]{16}", one.version)
    assert one.version == two.version
    assert len({one.version, changed.version, renamed.version}) == 3
    assert one.module_names == two.module_names == ("hr.rego", "tenancy.rego")


def test_rule_ids_lists_the_ids_written_in_the_modules(policy: RegoPolicy) -> None:
    """rule_ids() is the sorted set of literal ids, for coverage reports."""
    assert policy.rule_ids() == ("hr/contractor_denied", "hr/high_risk_write", "tenancy/cross_tenant")


def test_load_dir_compiles_the_rego_files_sorted_by_name(tmp_path: Path) -> None:
    """load_dir reads *.rego (not hidden files, not other files) and compiles them as one policy."""
    (tmp_path / "tenancy.rego").write_text(TENANCY)
    (tmp_path / "hr.rego").write_text(HR)
    (tmp_path / ".#hr.rego").write_text("editor lock file")
    (tmp_path / "notes.md").write_text("not a module")
    loaded = RegoPolicy.load_dir(tmp_path)
    assert loaded is not None and loaded.module_names == ("hr.rego", "tenancy.rego")
    assert loaded.version == RegoPolicy.compile({"hr.rego": HR, "tenancy.rego": TENANCY}).version
    assert RegoPolicy.load_dir(tmp_path, reuse=loaded) is loaded  # unchanged files: nothing compiled
    (tmp_path / "hr.rego").write_text(HR + "\n")
    reloaded = RegoPolicy.load_dir(tmp_path, reuse=loaded)
    assert reloaded is not None and reloaded is not loaded and reloaded.version != loaded.version


def test_load_dir_returns_none_without_rego_files(tmp_path: Path) -> None:
    """A missing directory or one with no module means no Rego policy (not an empty one)."""
    assert RegoPolicy.load_dir(tmp_path / "missing") is None
    (tmp_path / "README.md").write_text("no modules here")
    assert RegoPolicy.load_dir(tmp_path) is None


def test_load_dir_names_the_file_that_does_not_compile(tmp_path: Path) -> None:
    """A broken or non-UTF-8 file is a compile error naming it."""
    (tmp_path / "hr.rego").write_text(HR)
    (tmp_path / "zz.rego").write_bytes(b"package portcullis.zz\n# \xff\n")
    with pytest.raises(RegoCompileError, match=r"^zz\.rego: not UTF-8 text$"):
        RegoPolicy.load_dir(tmp_path)


# ----------------------------------------------------------------------------- the documentation


def _block(text: str, heading: str, language: str) -> str:
    return text.split(heading, 1)[1].split(f"```{language}\n", 1)[1].split("```", 1)[0]


def test_docs_example_module_and_input_give_the_documented_result() -> None:
    """docs/rego.md's example module, input and result stay true."""
    text = DOCS.read_text(encoding="utf-8")
    policy = RegoPolicy.compile({"hr.rego": _block(text, "## A complete example", "rego")})
    document = json.loads(_block(text, "## The input document", "json"))
    expected = json.loads(_block(text, "### What it returns", "json"))
    result = policy.evaluate(document)
    assert {"findings": [[f.effect, f.rule_id, f.reason] for f in result.findings],
            "obligations": [[o.kind, o.pointer] for o in result.obligations],
            "error": result.error} == expected


# ----------------------------------------------------------------------------- decision cache


def test_the_cache_answers_repeated_input_paths_and_only_those() -> None:
    policy = RegoPolicy.compile({"hr.rego": HR}, budget_s=10)
    first = policy.evaluate(_input(anything="x"))
    again = policy.evaluate(_input(anything="y"))  # arguments are not read by HR: the same decision input
    assert again == first and policy.cache_hits == 1
    contractor = policy.evaluate(_input(principal=_principal(employment_type="contractor")))
    assert policy.cache_hits == 1  # a referenced path changed: evaluated
    assert [f.rule_id for f in contractor.findings] == ["hr/contractor_denied"] != [f.rule_id for f in first.findings]


def test_errors_and_non_json_inputs_are_never_cached() -> None:
    policy = RegoPolicy.compile({"t.rego": TENANCY}, budget_s=10)
    for _ in range(2):
        assert policy.evaluate(_input(tenant_id=float("nan"))).error is not None
        assert policy.evaluate(_input(tenant_id={1, 2})).error is not None
    assert policy.cache_hits == 0
    boom = RegoPolicy.compile({"b.rego": 'package portcullis.b\nimport rego.v1\nx := 1 / count(input.arguments)\n'
                                          'deny contains {"id": "b/x", "reason": "r"} if x > 0\n'}, budget_s=10)
    for _ in range(2):
        assert boom.evaluate(_input()).error is not None  # division by zero, every time
    assert boom.cache_hits == 0


def test_policies_with_non_deterministic_builtins_are_never_cached() -> None:
    module = ('package portcullis.clock\nimport rego.v1\n'
              'deny contains {"id": "clock/late", "reason": "late"} if time.now_ns() < 0\n')
    policy = RegoPolicy.compile({"clock.rego": module}, budget_s=10)
    for _ in range(3):
        assert policy.evaluate(_input()).error is None
    assert policy.cache_hits == 0
    commented = RegoPolicy.compile({"c.rego": HR + "# time.now_ns() only in a comment\n"}, budget_s=10)
    commented.evaluate(_input())
    commented.evaluate(_input())
    assert commented.cache_hits == 1


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rego_module, "CACHE_ENTRIES", 3)
    policy = RegoPolicy.compile({"t.rego": TENANCY}, budget_s=10)
    for i in range(10):
        policy.evaluate(_input(tenant_id=f"t{i}"))
    assert len(policy._cache) == 3  # type: ignore[arg-type]
    policy.evaluate(_input(tenant_id="t9"))
    policy.evaluate(_input(tenant_id="t0"))  # evicted long ago: evaluated again
    assert policy.cache_hits == 1


def test_docs_read_example_is_decided_by_the_same_module() -> None:
    """docs/rego.md's read input: the example module's tool rule (input.tool.service) holds for a read too."""
    text = DOCS.read_text(encoding="utf-8")
    policy = RegoPolicy.compile({"hr.rego": _block(text, "## A complete example", "rego")})
    document = json.loads(_block(text, "### Reads: `resources/read` and `prompts/get`", "json"))
    assert document["method"] == "resources/read" and document["resource"]["template"] == document["tool"]["name"]
    result = policy.evaluate(document)
    assert [(f.effect, f.rule_id) for f in result.findings] == [("deny", "hr/contractor_denied")]
    assert result.error is None
