"""The lint gate's deployment-wide checks, past what loading a deployment already refuses.

:func:`deployment_rules` runs, in order:

1. ``coverage.risk`` — every resource and prompt manifest declares a ``risk`` (tools must already);
2. decision fixtures (``policy/fixtures/*.yaml``): each file loads (``fixture.invalid``), each fixture
   names a tool, resource or prompt the deployment exposes (``fixture.unknown``), and every exposed
   tool, resource and prompt appears in at least one fixture (``coverage.fixture``: an error once the
   deployment has fixtures; without any, one note: nothing shows its policies work, adopt fixtures);
3. every high-risk tool with a policy has an approval path — ``policy.requires_approval_over``, risk
   scoring (``approvals.risk``) whose points for the tool reach ``one_approver``, or a Rego module that
   declares ``require_approval`` — (``approval.missing``), and an ``approvals.approvers`` rule that lets
   somebody approve it (``approval.approver``): else every call that needs approval is denied, or the
   tool runs unattended. A high-risk tool without a policy is denied to everyone, so it needs neither;
4. what ``portcullis serve`` would refuse when it builds the gateway, checked without building it
   (one decision, made once): no ``identity`` (``serve.refuses``), an issuer whose ``audience`` is not
   the gateway's resource URI as served without ``--host``/``--port`` (``serve.refuses``); and, as
   warnings since they depend on the machine that serves (``serve.environment``): a stdio ``command``
   not on this machine's PATH, the ``otlp`` tracing exporter without its package.
   ``listen.workers`` without shared state, Rego that does not compile and every schema rule are
   refused by loading already (``schema``, ``rego.compile``).

Pure over the loaded :class:`~portcullis.config.loader.Deployment` except reading the fixture and
Rego files. Messages never quote file contents.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from portcullis.config.model import GatewayConfig, ToolManifest
from portcullis.policy.lint import PolicyProblem

if TYPE_CHECKING:
    from portcullis.config.loader import Deployment, LoadedManifest
    from portcullis.policy.fixtures import Fixture

FIXTURE_DIR = Path("policy", "fixtures")
_MAX_REGO_BYTES = 1_048_576


def deployment_rules(deployment: Deployment, environment: str | None) -> list[PolicyProblem]:
    """Checks 1 to 3 (module docstring); each problem at its file and YAML key (the caller finds the line)."""
    problems = [PolicyProblem(item.path, ("name",), f"{item.kind} {item.manifest.name!r}: no risk: declare risk: low, "
                        "medium or high", "error", rule="coverage.risk")
                for item in deployment.surface if item.manifest.risk is None]  # 1
    problems += _fixtures(deployment)  # 2
    rego_approval = _rego_declares_approval(deployment.root / "policy")
    for loaded in deployment.manifests:  # 3
        problems += _approval(loaded, deployment.gateway, environment, rego_approval)
    problems += serve_refusals(deployment)  # 4
    return problems


# ----------------------------------------------------------------------------- 4. serve parity


def serve_refusals(deployment: Deployment) -> list[PolicyProblem]:
    """Check 4: what building the gateway would refuse, as problems at gateway.yaml's keys."""
    import os
    import shutil

    from portcullis.config.model import StdioService
    from portcullis.gateway import default_resource

    path, cfg = deployment.root / "gateway.yaml", deployment.gateway
    found: list[PolicyProblem] = []
    if cfg.identity is None:
        found.append(PolicyProblem(path, (), "identity: missing; serve refuses to start: configure how callers "
                                   "authenticate (issuers, mtls, or allow_insecure_dev_issuer for development)",
                                   "error", rule="serve.refuses"))
    else:
        resource = cfg.identity.resource or default_resource(deployment, None, None)
        for index, issuer in enumerate(cfg.identity.issuers):
            if issuer.audience != resource:
                found.append(PolicyProblem(path, ("identity", "issuers", index, "audience"), f"identity.issuers"
                                           f"[{issuer.name}].audience must equal the gateway's resource URI "
                                           f"{resource}: serve refuses to start", "error", rule="serve.refuses"))
    for name, service in cfg.services.items():
        command = service.command if isinstance(service, StdioService) else None
        if command and not os.path.isabs(command) and shutil.which(command) is None:
            found.append(PolicyProblem(path, ("services", name, "command"), f"services.{name}.command: "
                                       f"{command[:80]!r} is not on this machine's PATH: the service cannot start "
                                       "here", "warning", rule="serve.environment"))
    tracing = cfg.observability.tracing
    if tracing.exporter == "otlp" and not _installed("opentelemetry.exporter.otlp.proto.http.trace_exporter"):
        found.append(PolicyProblem(path, ("observability", "tracing", "exporter"), "observability.tracing.exporter "
                                   "'otlp' needs the package opentelemetry-exporter-otlp-proto-http, which is not "
                                   "installed here: serve refuses to start", "warning", rule="serve.environment"))
    return found


# ----------------------------------------------------------------------------- 2. fixtures


def fixture_files(root: Path) -> list[Path]:
    """``policy/fixtures/*.yaml`` and ``*.yml``, sorted."""
    folder = root / FIXTURE_DIR
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]) if folder.is_dir() else []


def _fixtures(deployment: Deployment) -> list[PolicyProblem]:

    files = fixture_files(deployment.root)
    exposed: dict[tuple[str, str], Path] = {("tool", m.exposed_name): m.path for m in deployment.manifests}
    exposed |= {("prompt" if s.kind == "prompt" else "resource", s.exposed): s.path for s in deployment.surface}
    if not files:
        if not exposed:
            return []
        return [PolicyProblem(deployment.root / FIXTURE_DIR, (), "no decision fixtures: add policy/fixtures/*.yaml "
                              "with an allow and a deny case per tool, resource and prompt (`portcullis policy "
                              "test`)", "note", rule="coverage.fixture")]
    problems: list[PolicyProblem] = []
    seen: set[tuple[str, str]] = set()
    for path in files:
        loaded, refused = _load_fixture_file(path)
        if refused is not None:
            problems.append(refused)
            continue
        for index, fixture in enumerate(loaded):
            kind = "tool" if fixture.tool is not None else "resource" if fixture.resource is not None else "prompt"
            if (kind, fixture.target) not in exposed:
                problems.append(PolicyProblem(path, (index, kind), f"fixture {fixture.label[:80]!r}: no exposed "
                                              f"{kind} {fixture.target[:120]!r}", "error", rule="fixture.unknown"))
            seen.add((kind, fixture.target))
    for (kind, name), path in sorted(exposed.items()):
        if (kind, name) not in seen:
            problems.append(PolicyProblem(path, ("name",), f"{kind} {name!r} appears in no decision fixture "
                                          "(policy/fixtures/*.yaml)", "error", rule="coverage.fixture"))
    return problems


def _load_fixture_file(path: Path) -> tuple[tuple[Fixture, ...], PolicyProblem | None]:
    """The fixtures of one file, read with the deployment's safe YAML loader (no aliases, bounded size
    and depth; messages never quote the file), or the problem that refuses it."""
    from portcullis.config.yaml_lines import MAX_BYTES, YamlError, load_yaml
    from portcullis.policy.fixtures import parse_fixtures

    try:
        with path.open("rb") as handle:
            doc = load_yaml(handle.read(MAX_BYTES + 1))
    except OSError:
        return (), PolicyProblem(path, (), "cannot be read", "error", rule="fixture.invalid")
    except YamlError as exc:
        return (), PolicyProblem(path, (), exc.message, "error", exc.line, "fixture.invalid")
    if not isinstance(doc.value, list):
        return (), PolicyProblem(path, (), "a fixture file is a YAML list", "error", 1, "fixture.invalid")
    try:
        return parse_fixtures(doc.value), None
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        return (), PolicyProblem(path, tuple(part for part in first["loc"] if isinstance(part, (str, int))),
                                 f"not a fixture list: {where}: {first['msg']}", "error", rule="fixture.invalid")


# ----------------------------------------------------------------------------- 3. approvals


def _approval(loaded: LoadedManifest, gateway: GatewayConfig, environment: str | None,
              rego_approval: bool) -> list[PolicyProblem]:
    manifest = loaded.manifest
    if manifest.risk != "high" or manifest.policy is None:
        return []
    name = loaded.exposed_name
    if not (manifest.policy.requires_approval_over is not None or rego_approval
            or _scoring_asks(manifest, gateway, environment)):
        return [PolicyProblem(loaded.path, ("risk",), f"{name}: high risk, but no call of it ever waits for a "
                              "person: set policy.requires_approval_over, approvals.risk scoring that reaches "
                              "one_approver, or a Rego require_approval rule", "error", rule="approval.missing")]
    if not any(rule.covers(name, "high") for rule in gateway.approvals.approvers):
        return [PolicyProblem(loaded.path, ("risk",), f"{name}: calls can need approval, but no approvals.approvers "
                              "rule covers this high-risk tool: nobody can approve them", "error",
                              rule="approval.approver")]
    return []


def _scoring_asks(manifest: ToolManifest, gateway: GatewayConfig, environment: str | None) -> bool:
    """Whether risk scoring gives every call of the tool at least ``one_approver`` points (before the
    amount and rate parts, which depend on the call)."""
    scoring = gateway.approvals.risk
    if scoring is None:
        return False
    classes = (manifest.classification.input, manifest.classification.output)
    points = (scoring.tool_risk.get("high", 0) + max(scoring.classification.get(c, 0) for c in classes)
              + scoring.environment.get(environment or "", 0))
    return points >= scoring.thresholds.one_approver


def _rego_declares_approval(folder: Path) -> bool:
    """Whether a Rego module in ``folder`` writes a ``require_approval`` rule (which tools it covers is
    decided at run time; the fixtures show it)."""
    if not folder.is_dir():
        return False
    for path in sorted(folder.glob("*.rego")):
        try:
            if b"require_approval" in path.read_bytes()[:_MAX_REGO_BYTES]:
                return True
        except OSError:
            continue
    return False


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False
