"""``portcullis init DIR``: scaffold a deployment repository by risk domain (:mod:`portcullis.config.scaffold`).

Every refusal (a bad domain, owner or target) exits 2 before anything is written; its message shows
the offending text ASCII-escaped, so a hostile argument cannot drive the terminal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from portcullis.cli.safe_text import console, terminal_safe
from portcullis.config.scaffold import (
    DEFAULT_DOMAINS,
    DEFAULT_OWNER,
    DEFAULT_SECURITY_TEAM,
    init_deployment,
    parse_domain,
)

DOMAIN_HELP = ("A risk domain NAME:RISK (RISK: low, medium or high), repeatable; it replaces the defaults "
               f"{', '.join(f'{d.name}:{d.risk}' for d in DEFAULT_DOMAINS)}. NAME: lower-case letters, digits, "
               "'_' and '-'.")
OWNER_HELP = "Who owns the repository in CODEOWNERS and the manifests: @org/team, @user or an e-mail address."
SECURITY_HELP = "Who must also review high-risk tools, policy/, gateway.yaml and .github/ (CODEOWNERS)."


def init(target: Annotated[Path, typer.Argument(help="Directory to create.")],
         domain: Annotated[list[str] | None, typer.Option("--domain", "-d", help=DOMAIN_HELP)] = None,
         owner: Annotated[str, typer.Option(help=OWNER_HELP)] = DEFAULT_OWNER,
         security_team: Annotated[str, typer.Option(help=SECURITY_HELP)] = DEFAULT_SECURITY_TEAM,
         force: Annotated[bool, typer.Option(help="Write into a non-empty directory (other files are kept).")] = False,
         ) -> None:
    """Scaffold a deployment repository: gateway.yaml, tools and fixtures per risk domain, CODEOWNERS, CI, README."""
    out, err = console(), console(stderr=True)
    try:
        domains = tuple(parse_domain(spec) for spec in domain) if domain else DEFAULT_DOMAINS
        written = init_deployment(target, force=force, domains=domains, owner=owner, security_team=security_team)
    except (FileExistsError, ValueError) as exc:
        err.print(f"init: {terminal_safe(str(exc), None, double_backslashes=False)}", highlight=False, markup=False)
        raise typer.Exit(2) from None
    except OSError as exc:  # permissions, a full disk: the files written so far stay, say which failed
        where = terminal_safe(str(exc.filename or target), None)
        err.print(f"init: cannot write {where}: {exc.strerror or type(exc).__name__}", highlight=False, markup=False)
        raise typer.Exit(1) from None
    for path in written:
        out.print(f"created {terminal_safe(str(path), None)}", highlight=False, markup=False)
    out.print("next: review the example tools, `portcullis pin`, and apply README.md's branch protection",
              highlight=False, markup=False)
