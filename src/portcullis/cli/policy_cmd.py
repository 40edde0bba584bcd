"""``portcullis policy``: run the golden decision fixtures, print the policy version (versions of a
running gateway: :mod:`portcullis.cli.policy_versions_cmd`).

``portcullis policy test DIR`` loads the deployment at DIR (gateway.yaml, the manifests'
``policy:`` sections and ``policy/*.rego``), decides every fixture of
``DIR/policy/fixtures/*.yaml`` (or the ``--fixtures`` files) with the real engine, and prints
pass/fail per fixture and rule coverage. It exits 1 on any failing fixture, on a deployment or
fixture file that does not load, and when there are no fixtures at all (an empty test set is not
a pass). ``portcullis policy version DIR`` prints the engine's version (``pv-…``), the value
every decision and audit record carries.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.table import Table
from rich.text import Text

from portcullis.cli.safe_text import console, lines_safe, terminal_safe

if TYPE_CHECKING:
    from portcullis.policy.engine import PolicyEngine
    from portcullis.policy.fixtures import Fixture, FixtureReport

policy_app = typer.Typer(no_args_is_help=True, help="Policy: golden fixtures and versions.")
out = console()
err = console(stderr=True)

Target = Annotated[Path | None, typer.Argument(help="Deployment directory (default: the bundled demo).",
                                               file_okay=False)]
Environment = Annotated[str | None, typer.Option(
    help="Gateway environment to decide in (default: the deployment's, else 'production').")]
DEFAULT_ENVIRONMENT = "production"
REGO_BUDGET_S = 10.0


@policy_app.command("test")
def policy_test(
    target: Target = None,
    fixtures: Annotated[list[Path] | None, typer.Option(
        "--fixtures", help="Fixture file (repeatable; default: DIR/policy/fixtures/*.yaml).", dir_okay=False,
    )] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    environment: Environment = None,
) -> None:
    """Decide every golden fixture with the deployment's policies; exit 1 on any failure."""
    from portcullis.policy.fixtures import load_fixtures, run_fixtures

    engine, root, surface = _engine(target, environment)
    files = fixtures or sorted([*(root / "policy" / "fixtures").glob("*.yaml"),
                                *(root / "policy" / "fixtures").glob("*.yml")])
    if not files:
        _fail(f"no fixtures: add {root / 'policy' / 'fixtures'}/*.yaml or pass --fixtures")
    loaded: list[Fixture] = []
    sources: list[Path] = []
    for path in files:
        try:
            batch = load_fixtures(path.read_text(encoding="utf-8"))
        except OSError:
            _fail(f"{path}: cannot be read")
        except ValueError as exc:  # pydantic's ValidationError and YAML errors are ValueErrors
            _fail(f"{path}: {_clip(exc)}")
        loaded += batch
        sources += [path] * len(batch)
    try:
        report = run_fixtures(engine, loaded, surface)
    except ValueError as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(_json(engine.version, report, sources), indent=2))
    else:
        _print(engine.version, report, sources)
    if not report.passed:
        raise typer.Exit(1)


@policy_app.command("version")
def policy_version(target: Target = None, environment: Environment = None) -> None:
    """Print the policy version (pv-…) of a deployment: it changes whenever any decision could."""
    engine, _, _ = _engine(target, environment)
    out.print(engine.version, highlight=False)


def _engine(target: Path | None, environment: str | None) -> tuple[PolicyEngine, Path, PolicyEngine]:
    """The tools' engine, the deployment root, and the resources' and prompts' engine (the same Rego)."""
    from portcullis.cli.main import demo_deployment
    from portcullis.config.loader import load_deployment
    from portcullis.errors import ConfigError
    from portcullis.policy.engine import PolicyEngine, configured_environment

    root = target or demo_deployment()
    try:
        deployment = load_deployment(root)
        env = environment or configured_environment(deployment) or DEFAULT_ENVIRONMENT
        # Fixtures check decisions, not latency: a generous Rego budget keeps a busy machine from
        # turning a slow evaluation into a policy_error deny (the budget is no part of the version).
        engine = PolicyEngine.from_deployment(deployment, environment=env, rego_budget_s=REGO_BUDGET_S)
        from portcullis.surface import SurfaceCatalog, surface_policies

        surface = PolicyEngine.build(surface_policies(SurfaceCatalog(deployment)), engine.rego, environment=env)
        return engine, root, surface
    except ConfigError as exc:
        for problem in exc.problems:
            err.print(lines_safe(str(problem)), highlight=False, markup=False)
        raise typer.Exit(1) from None
    except ValueError as exc:
        _fail(str(exc))


def _print(version: str, report: FixtureReport, sources: list[Path]) -> None:
    from portcullis.policy.fixtures import fired_rule_ids

    table = Table(title=Text(f"policy {terminal_safe(version)}"))
    table.add_column("")
    table.add_column("fixture", ratio=2, overflow="fold")
    table.add_column("expected", ratio=3, overflow="fold")
    table.add_column("got", ratio=3, overflow="fold")
    for result, source in zip(report.results, sources, strict=True):
        fixture, decision = result.fixture, result.decision
        # fixture files, tool names and rule ids are text, never markup or terminal control
        table.add_row(Text("pass", style="green") if result.passed else Text("FAIL", style="red"),
                      Text.assemble(terminal_safe(f"{source.name}: {fixture.label}", None), "\n",
                                    (terminal_safe(fixture.target, None), "dim")),
                      _effect(fixture.expect.effect, fixture.expect.rule_ids),
                      _effect(decision.effect, fired_rule_ids(decision)))
    out.print(table)
    total = len(report.covered) + len(report.uncovered)
    out.print(f"rule coverage: {len(report.covered)}/{total}", highlight=False)
    for rule in report.uncovered:
        out.print(f"  never fired: {terminal_safe(rule, None)}", highlight=False, markup=False)
    failed = sum(not result.passed for result in report.results)
    out.print(f"{len(report.results) - failed} passed, {failed} failed", highlight=False)


def _effect(effect: str, rule_ids: tuple[str, ...]) -> Text:
    return Text(terminal_safe(effect) + "".join(f"\n  {terminal_safe(rule, None)}" for rule in sorted(rule_ids)))


def _json(version: str, report: FixtureReport, sources: list[Path]) -> dict[str, Any]:
    from portcullis.policy.fixtures import fired_rule_ids

    return {
        "policy_version": version,
        "passed": report.passed,
        "results": [{
            "file": str(source), "name": r.fixture.label, "tool": r.fixture.target, "method": r.fixture.method,
            "passed": r.passed,
            "expected": {"effect": r.fixture.expect.effect, "rule_ids": sorted(r.fixture.expect.rule_ids)},
            "got": {"effect": r.decision.effect, "rule_ids": sorted(fired_rule_ids(r.decision)),
                    "reasons": list(r.decision.reasons)},
        } for r, source in zip(report.results, sources, strict=True)],
        "coverage": {"covered": list(report.covered), "uncovered": list(report.uncovered)},
    }


def _clip(exc: Exception) -> str:
    text = str(exc).strip()
    return text if len(text) <= 2000 else text[:2000] + "..."


def _fail(message: str) -> NoReturn:
    err.print(f"policy: {lines_safe(message)}", highlight=False, markup=False)
    raise typer.Exit(1)


# apply, rollback, history, show: the running gateway's policy versions (registered on policy_app)
# diff: replay a window of audited calls under two versions
from portcullis.cli import policy_replay_cmd, policy_versions_cmd  # noqa: E402,F401
