"""What ``portcullis lint`` and ``portcullis secrets scan`` print: a table, text lines, JSON or SARIF 2.1.0,
and the exit code by severity.

Exit codes (docs/configuration.md, "The lint gate"): 0 when nothing is at or above ``--fail-on``;
otherwise by the highest severity present: 1 errors, 3 warnings, 4 notes (2 stays typer's usage
error). Every string a problem carries can come from the repository under review (file names,
YAML keys, a pull request's text): the table and the text lines escape it (:mod:`.safe_text`), and
JSON and SARIF are ASCII-only JSON, so nothing in them reaches a terminal raw.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from rich.console import Console
from rich.table import Table
from rich.text import Text

from portcullis import __version__
from portcullis.cli.safe_text import cell, json_text, lines_safe
from portcullis.errors import Problem

Format = Literal["table", "text", "json", "sarif"]
FailOn = Literal["error", "warning", "note"]
SEVERITIES: tuple[FailOn, ...] = ("error", "warning", "note")  # highest first
EXIT_CODES = {"error": 1, "warning": 3, "note": 4}
SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
JSON_VERSION = 1

RULE_HELP: dict[str, str] = {  # rule id (or its first dotted part) -> what the check is about
    "deployment": "The deployment directory or its gateway.yaml is missing.",
    "file": "A file cannot be read, or is not a regular file.",
    "symlink": "A symbolic link leaves the deployment directory or names a directory.",
    "state.dir": "The gateway's state directory sits inside the deployment directory.",
    "layout": "A file sits where the gateway never reads it as a manifest.",
    "yaml": "A file is not valid YAML (or not a mapping at the top).",
    "schema": "A file does not match its published JSON Schema.",
    "name": "Names that differ from their file, collide, or can be confused.",
    "reference": "A manifest names a service gateway.yaml does not declare.",
    "pin": "A definition has no pin: it is not served until `portcullis pin` records its hash.",
    "cache": "A cache setting that never takes effect.",
    "sandbox": "A stdio sandbox setting weakens the sandbox or hides a path from the child.",
    "secret": "A literal secret in the deployment: use a secret:// reference instead.",
    "policy": "A policy that conflicts with itself, cannot apply, or is missing.",
    "rego": "A Rego module does not compile.",
    "poisoning": "A tool definition that reads like tool poisoning.",
    "coverage": "An exposed tool, resource or prompt lacks a risk level or a decision fixture.",
    "fixture": "A decision fixture that does not load or names nothing served.",
    "approval": "A high-risk tool that no rule sends to a person, or that nobody can approve.",
    "serve": "The gateway would refuse to start with this deployment.",
}


def describe(rule: str) -> str:
    """The help text of ``rule``: its own, else its longest dotted prefix's, else a generic one."""
    parts = rule.split(".")
    for end in range(len(parts), 0, -1):
        if (text := RULE_HELP.get(".".join(parts[:end]))) is not None:
            return text
    return "A deployment problem."


def severity_of(problem: Problem) -> FailOn:
    """The problem's severity; anything unknown counts as an error (fail closed)."""
    return problem.severity if problem.severity in SEVERITIES else "error"


def exit_code(problems: Iterable[Problem], fail_on: FailOn) -> int:
    """0 when no problem is at or above ``fail_on``; else the code of the highest severity present."""
    present = {severity_of(p) for p in problems}
    highest = next((s for s in SEVERITIES if s in present), None)
    if highest is None or SEVERITIES.index(highest) > SEVERITIES.index(fail_on):
        return 0
    return EXIT_CODES[highest]


def summary(problems: Iterable[Problem]) -> dict[str, int]:
    counts: dict[str, int] = dict.fromkeys(SEVERITIES, 0)
    for problem in problems:
        counts[severity_of(problem)] += 1
    return counts


def relative(path: Path, root: Path) -> str | None:
    """``path`` relative to ``root`` in POSIX form, or None when it is ``root`` itself or outside it."""
    try:
        rel = Path(path).relative_to(root)
    except ValueError:
        return None
    return rel.as_posix() if rel.parts else None


def to_json(problems: Sequence[Problem], root: Path) -> str:
    """``{"version": 1, "target", "summary": {...}, "problems": [{rule, severity, path, line, message}]}``."""
    rows = [{"rule": p.rule, "severity": severity_of(p), "path": relative(p.path, root) or str(p.path),
             "line": p.line, "message": p.message} for p in problems]
    return _ascii(json_text({"version": JSON_VERSION, "target": str(root), "summary": summary(problems),
                             "problems": rows}, indent=2))


def to_sarif(problems: Sequence[Problem], root: Path) -> str:
    """One SARIF 2.1.0 run: the rules that fired, and one result per problem (paths relative to %SRCROOT%)."""
    rule_ids = sorted({p.rule for p in problems})
    index = {rule: i for i, rule in enumerate(rule_ids)}
    results: list[dict[str, Any]] = []
    for problem in problems:
        result: dict[str, Any] = {"ruleId": problem.rule, "ruleIndex": index[problem.rule],
                                  "level": severity_of(problem), "message": {"text": problem.message}}
        if (rel := relative(problem.path, root)) is not None:
            physical: dict[str, Any] = {"artifactLocation": {"uri": quote(rel, safe="/"), "uriBaseId": "%SRCROOT%"}}
            if problem.line is not None and problem.line >= 1:
                physical["region"] = {"startLine": problem.line}
            result["locations"] = [{"physicalLocation": physical}]
        results.append(result)
    driver = {"name": "portcullis", "version": __version__, "semanticVersion": __version__,
              "rules": [{"id": rule, "shortDescription": {"text": describe(rule)}} for rule in rule_ids]}
    log = {"$schema": SARIF_SCHEMA, "version": "2.1.0",
           "runs": [{"tool": {"driver": driver}, "results": results}]}
    return _ascii(json_text(log, indent=2))


def to_lines(problems: Sequence[Problem]) -> list[str]:
    """``file:line: severity: message [rule]``, one line per problem, escaped for a terminal."""
    return [lines_safe(f"{p}  [{p.rule}]") for p in problems]


def to_table(problems: Sequence[Problem], root: Path) -> Table:
    """Severity, file:line, rule, message; every cell escaped, none parsed as markup."""
    table = Table("severity", "where", "rule", "message")
    for column in table.columns:
        column.overflow = "fold"  # wrap long paths and ids, never cut them short
    for p in problems:
        where = relative(p.path, root) or str(p.path)
        table.add_row(cell(severity_of(p)), cell(f"{where}:{p.line}" if p.line else where, None), cell(p.rule),
                      cell(p.message, None))
    return table


def summary_line(problems: Sequence[Problem]) -> str:
    counts = summary(problems)
    return f"{counts['error']} error(s), {counts['warning']} warning(s), {counts['note']} note(s)"


def emit(problems: Sequence[Problem], root: Path, fmt: Format, output: Path | None, out: Console,
         err: Console) -> None:
    """Print (or write to ``output``) the problems in ``fmt``; the summary line goes to stderr when the
    report itself goes to a file or is machine-readable."""
    if fmt == "json":
        body = to_json(problems, root)
    elif fmt == "sarif":
        body = to_sarif(problems, root)
    elif output is not None:
        buffer = Console(file=io.StringIO(), width=200, markup=False, emoji=False, highlight=False,
                         color_system=None)
        if fmt == "table":
            buffer.print(to_table(problems, root))
        else:
            for line in to_lines(problems):
                buffer.print(Text(line))
        buffer.print(summary_line(problems))
        body = buffer.file.getvalue()  # type: ignore[attr-defined]
    else:
        if fmt == "table":
            if problems:
                out.print(to_table(problems, root))
        else:
            for problem, line in zip(problems, to_lines(problems), strict=True):
                (err if severity_of(problem) == "error" else out).print(Text(line))
        out.print(summary_line(problems))
        return
    if output is None:
        out.file.write(body + "\n")
        out.file.flush()
        return
    from portcullis.config.loader import atomic_write_text

    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, body if body.endswith("\n") else body + "\n")
    err.print(f"{summary_line(problems)}; report written to {lines_safe(str(output))}")


def _ascii(text: str) -> str:
    """JSON from :func:`json_text` with DEL escaped too (``ensure_ascii`` leaves 0x7f raw)."""
    return text.replace("\x7f", "\\u007f")
