"""``portcullis lint DIR``: the deployment repository's CI gate.

Every check of :func:`portcullis.config.loader.lint_deployment` (schemas, literal secrets, policy
conflicts and unreachable rules, coverage, approval paths, what ``serve`` would refuse), printed as
a table (default), text lines, JSON or SARIF 2.1.0 (:mod:`.lint_output`); the exit code says the
highest severity found at or above ``--fail-on``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from portcullis.cli.lint_output import FailOn, Format, emit, exit_code
from portcullis.cli.safe_text import console

FORMAT_HELP = ("table (default), text (one line per problem: file:line: severity: message, rule), json or sarif "
               "(SARIF 2.1.0).")
OUTPUT_HELP = "Write the report to this file instead of stdout (the summary still goes to stderr)."
FAIL_ON_HELP = ("The lowest severity that fails: error (default), warning or note. Exit 1: errors; 3: warnings "
                "were the highest; 4: notes were; 0: nothing at or above it.")
FormatOption = Annotated[Format, typer.Option("--format", "-f", help=FORMAT_HELP)]
OutputOption = Annotated[Path | None, typer.Option("--output", "-o", help=OUTPUT_HELP, dir_okay=False)]
FailOnOption = Annotated[FailOn, typer.Option("--fail-on", help=FAIL_ON_HELP)]


def lint(target: Annotated[Path, typer.Argument(help="Deployment directory to check.")],
         fmt: FormatOption = "table", output: OutputOption = None, fail_on: FailOnOption = "error") -> None:
    """Check a deployment directory: schemas, secrets, policies, coverage, approvals, and what serve refuses."""
    from portcullis.config.loader import lint_deployment

    problems = lint_deployment(target)
    emit(problems, target, fmt, output, console(), console(stderr=True))
    raise typer.Exit(exit_code(problems, fail_on))
