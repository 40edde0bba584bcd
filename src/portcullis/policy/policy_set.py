"""A policy set: the deployment's policy inputs as files, checked whole before it may serve.

The set is every ``*.yml``, ``*.yaml`` and ``*.rego`` file under ``tools/``, ``resources/``,
``prompts/``, ``policy/`` (the Rego modules and golden fixtures) and the configured Rego
directory — never ``gateway.yaml``, which a reload does not change. :func:`collect` reads them
from a directory; :func:`check_names` refuses a pushed set whose names could escape a
directory or are not policy files; :func:`content_id` is its content address.

:func:`validate` checks a set **whole**, in a private scratch directory next to the running
``gateway.yaml``: it loads as a deployment (YAML, schemas, cross-checks), its Rego compiles, the
policy lint finds no error, some tool has a policy (an empty policy set is refused, not served
as deny-all), and its golden fixtures (``policy/fixtures/*.yaml``), when present, all pass. Any
failure raises :class:`SetRefused` with a short fixed reason and the problems, paths relative
to the set. Blocking (file I/O, Rego compile): call it in a worker thread.

In the gateway (``probe`` given, ``fixtures=False``) no pushed Rego is compiled or evaluated in
the gateway's process before a limited process has done so (:mod:`.rego_probe`: a blown limit is
refused with its precise fixed reason), and the fixtures are run afterwards by
:func:`check_fixtures_async` through the new version's worker processes. The CLI (``policy
diff``) validates with Rego in its own process (docs/decisions.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from portcullis.errors import ConfigError

if TYPE_CHECKING:
    from portcullis.config.loader import Deployment
    from portcullis.policy.engine import PolicyEngine
    from portcullis.policy.fixtures import Fixture, FixtureReport
    from portcullis.policy.rego import RegoPolicy
    from portcullis.policy.rego_probe import ProbeLimits

TOPS = ("tools", "resources", "prompts", "policy")
SUFFIXES = (".yml", ".yaml", ".rego")
MAX_FILES = 2000
MAX_TOTAL_BYTES = 16 * 1024 * 1024
MAX_PROBLEMS = 20
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")

# the fixed reasons (what /readyz, the audit record and the CLI show)
FILES = "policy set files refused"
LOAD = "policy set does not load (YAML or schema)"
REGO = "Rego does not compile"
REGO_SIZE = "Rego modules too many or too large"
LINT = "policy lint errors"
EMPTY = "no tool has a policy"
FIXTURES = "golden fixtures fail"


class SetRefused(Exception):
    """A policy set that must not serve. ``reason`` is one of the fixed reasons above."""

    def __init__(self, reason: str, problems: list[str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.problems = (problems or [])[:MAX_PROBLEMS]


def tops(rego_dir: str | None) -> tuple[str, ...]:
    """The top directories a set is read from."""
    first = None if rego_dir is None else PurePosixPath(rego_dir).parts[:1]
    return TOPS if not first or first[0] in TOPS else (*TOPS, first[0])


def collect(root: Path, rego_dir: str | None = "policy") -> dict[str, str]:
    """The policy files under ``root`` (symlinks and hidden names skipped), as ``relative path → text``."""
    files: dict[str, str] = {}
    for top in tops(rego_dir):
        base = root / top
        if not base.is_dir() or base.is_symlink():
            continue
        for folder, dirs, names in os.walk(base, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not Path(folder, d).is_symlink())
            for name in sorted(names):
                path = Path(folder, name)
                if name.startswith(".") or path.is_symlink() or path.suffix not in SUFFIXES:
                    continue
                try:
                    files[path.relative_to(root).as_posix()] = path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError):
                    raise SetRefused(FILES, [f"{path.relative_to(root).as_posix()}: cannot be read as UTF-8"]) from None
    check_names(files, rego_dir)
    return files


def check_names(files: Mapping[str, object], rego_dir: str | None = "policy") -> None:
    """Refuse a set with a name outside the policy directories, an odd name, or too much data."""
    if not isinstance(files, Mapping) or len(files) > MAX_FILES:
        raise SetRefused(FILES, ["too many files"])
    allowed, total, bad = tops(rego_dir), 0, []
    for name, text in files.items():
        parts = name.split("/") if isinstance(name, str) else []
        if (not isinstance(text, str) or len(parts) < 2 or parts[0] not in allowed
                or not all(_NAME.fullmatch(part) for part in parts) or not name.endswith(SUFFIXES)):
            bad.append("a file name is not a policy file under " + ", ".join(allowed))
            continue
        total += len(text.encode("utf-8", "surrogatepass"))
    if total > MAX_TOTAL_BYTES:
        bad.append("the policy set is too large")
    if bad:
        raise SetRefused(FILES, sorted(set(bad)))


def content_id(files: Mapping[str, str]) -> str:
    """The content address of a set: ``ps-`` + SHA-256 of its canonical JSON."""
    body = json.dumps(dict(sorted(files.items())), ensure_ascii=False, separators=(",", ":"))
    return "ps-" + hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()


def validate(files: Mapping[str, str], gateway_yaml: bytes, *, scratch: Path, rego_dir: str | None,
             environment: str, rego_budget_s: float, reuse: RegoPolicy | None = None,
             probe: ProbeLimits | None = None, fixtures: bool = True) -> tuple[PolicyEngine, Deployment]:
    """The :class:`~portcullis.policy.engine.PolicyEngine` of a whole, valid set and the set loaded as a
    deployment (its manifests); :class:`SetRefused` otherwise.

    ``reuse``: the running engine's Rego policy, kept (with its worker processes) when the modules
    did not change. ``probe``: changed modules are first compiled and evaluated once in a limited
    process (see the module docstring). ``fixtures``: run the golden fixtures here, in this process
    (False: the caller runs :func:`check_fixtures_async` once the engine has its workers).
    """
    from portcullis.config.loader import load_deployment
    from portcullis.policy.engine import PolicyEngine, tool_policies
    from portcullis.policy.lint import lint_policies
    from portcullis.policy.rego import RegoCompileError, RegoPolicy, RegoTooLarge
    from portcullis.policy.rego_probe import RegoLimitExceeded

    check_names(files, rego_dir)
    scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="set-", dir=scratch))
    try:
        (work / "gateway.yaml").write_bytes(gateway_yaml)
        for name, text in files.items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_text(text, encoding="utf-8")
        try:
            deployment = load_deployment(work, {k: v for k, v in os.environ.items() if k != "PORTCULLIS_STATE_DIR"})
        except ConfigError as exc:
            raise SetRefused(LOAD, [_relative(str(p), work) for p in exc.problems]) from None
        rego = None
        if rego_dir is not None:
            try:
                rego = RegoPolicy.load_dir(work / rego_dir, budget_s=rego_budget_s, reuse=reuse, probe=probe)
            except RegoLimitExceeded as exc:
                raise SetRefused(exc.reason) from None
            except RegoTooLarge as exc:
                raise SetRefused(REGO_SIZE, [str(exc)]) from None
            except (RegoCompileError, OSError) as exc:
                raise SetRefused(REGO, [_relative(str(exc), work)]) from None
        errors = [p for p in lint_policies(deployment.manifests, environment=environment) if p.severity == "error"]
        if errors:
            raise SetRefused(LINT, [_relative(f"{p.path}: {p.message}", work) for p in errors])
        if not any(m.manifest.policy is not None for m in deployment.manifests):
            raise SetRefused(EMPTY)
        engine = PolicyEngine.build(tool_policies(deployment.manifests), rego, environment=environment)
        if fixtures:
            from portcullis.policy.fixtures import run_fixtures
            from portcullis.surface import SurfaceCatalog, surface_policies

            surface = PolicyEngine.build(surface_policies(SurfaceCatalog(deployment)), rego, environment=environment)
            _check_report(lambda loaded: run_fixtures(engine, loaded, surface), files, work)
        return engine, deployment
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def check_fixtures_async(engine: PolicyEngine, files: Mapping[str, str],
                               surface: PolicyEngine | None = None) -> None:
    """The set's golden fixtures, decided with :meth:`~portcullis.policy.engine.PolicyEngine.decide_async`
    (in the gateway: in the engine's Rego worker processes, under their limits); SetRefused if one fails.
    Without ``surface`` (the resources' and prompts' engine) only the tool fixtures are decided."""
    from portcullis.policy.fixtures import load_fixtures, run_fixtures_async

    try:
        loaded = [f for text in _fixture_texts(files) for f in load_fixtures(text)
                  if surface is not None or f.tool is not None]
    except ValueError as exc:
        raise SetRefused(FIXTURES, [str(exc)[:200]]) from None
    if not loaded:
        return
    try:
        report = await run_fixtures_async(engine, loaded, surface)
    except ValueError as exc:
        raise SetRefused(FIXTURES, [str(exc)[:200]]) from None
    _refuse_failures(report)


def _fixture_texts(files: Mapping[str, str]) -> list[str]:
    return [text for name, text in sorted(files.items())
            if name.startswith("policy/fixtures/") and name.endswith((".yml", ".yaml"))]


def _check_report(run: Callable[[list[Fixture]], FixtureReport], files: Mapping[str, str], work: Path) -> None:
    from portcullis.policy.fixtures import load_fixtures

    texts = _fixture_texts(files)
    if not texts:
        return
    try:
        report = run([f for text in texts for f in load_fixtures(text)])
    except ValueError as exc:
        raise SetRefused(FIXTURES, [_relative(str(exc), work)[:200]]) from None
    _refuse_failures(report)


def _refuse_failures(report: FixtureReport) -> None:
    failed = [r.fixture.label for r in report.results if not r.passed]
    if failed:
        raise SetRefused(FIXTURES, [f"fixture fails: {label}"[:200] for label in failed])


def _relative(text: str, work: Path) -> str:
    """A problem without the scratch directory's host path, clipped."""
    return text.replace(str(work) + os.sep, "").replace(str(work), ".")[:300]
