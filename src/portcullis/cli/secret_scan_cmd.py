"""``portcullis secrets scan DIR``: only the literal-secret scan of ``portcullis lint``, for a CI step of its own.

The same walk (dot-directories such as ``.github/`` included; not ``.git/`` nor the gateway's state
directory), the same rules as the output filter (:mod:`portcullis.config.secret_scan`), the same
formats, ``--output`` and exit codes as ``lint`` (:mod:`.lint_output`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from portcullis.cli.lint_cmd import FailOnOption, FormatOption, OutputOption
from portcullis.cli.lint_output import emit, exit_code
from portcullis.cli.safe_text import console


def scan(target: Annotated[Path, typer.Argument(help="Deployment directory to scan.")],
         fmt: FormatOption = "table", output: OutputOption = None, fail_on: FailOnOption = "error") -> None:
    """Find literal secrets in every file (the output filter's rules); a secret:// reference is not one."""
    from portcullis.config.secret_scan import scan_directory

    problems = scan_directory(target)
    emit(problems, target, fmt, output, console(), console(stderr=True))
    raise typer.Exit(exit_code(problems, fail_on))
