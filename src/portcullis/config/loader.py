"""Load and lint a deployment directory.

::

    gateway.yaml                 listeners, services, limits
    tools/<domain>/<tool>.yml    one manifest per tool (.yaml also accepted)
    policy/*.rego                optional custom rules (Rego), compiled by the policy lint
    policy/data_class.yml        classification scheme (config/data_class.py)

Contract: :func:`lint_deployment` returns every problem, each with its file and line;
:func:`load_deployment` raises one :class:`~portcullis.errors.ConfigError` carrying every
error-severity problem (warnings never raise) or returns a frozen :class:`Deployment`. The checks,
in order: (1) walk the directory, refusing symlinks that leave it (they are never read);
(2) scan every file (dot-directories such as ``.github/`` included, not ``.git/``) for literal secrets
with the output filter's rules (:mod:`.secret_scan`); (3) gateway.yaml: YAML, schema, literal
secrets, ``sessions.key_ref``; (4) each manifest: YAML, schema, JSON Schema 2020-12 of its
schemas, every schema pattern ECMA-262 and linear-time (:mod:`.schema_patterns`); (5) across
files: unknown services, duplicate tools, exposed-name collisions (also after NFKC + casefold),
names that differ from the file stem, missing pins; (6) caller patterns against the identity
sources: an ``issuer:`` scope nobody configured, an unscoped allow or approver pattern where
several sources are trusted (:mod:`portcullis.policy.issuer_scope`). Messages never quote a value
that might be a secret.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import stat
import tempfile
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from jsonschema import Draft202012Validator
from pydantic import BaseModel, ValidationError

from portcullis.config.data_class import DataClassScheme
from portcullis.config.model import (
    PIN_PATTERN,
    GatewayConfig,
    PromptManifest,
    ResourceManifest,
    StdioService,
    ToolManifest,
    exposed_name,
    resource_prefix,
)
from portcullis.config.schema_patterns import pattern_problems
from portcullis.config.secret_lint import secret_problems
from portcullis.config.secret_scan import scan_file, strict
from portcullis.config.secrets import is_reference, literal_secret_locs
from portcullis.config.state_paths import StatePaths
from portcullis.config.stdio_sandbox import UNSAFE_SANDBOX_TEXT, UNSEEN_PATH_TEXT, unseen_path_arguments
from portcullis.config.yaml_lines import MAX_BYTES, YamlDocument, YamlError, load_yaml, set_top_level_scalar
from portcullis.errors import ConfigError, Problem

if TYPE_CHECKING:
    from portcullis.policy.lint import PolicyProblem

_META = Draft202012Validator(Draft202012Validator.META_SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)
_MANIFEST_SUFFIXES = (".yml", ".yaml")
_M = TypeVar("_M", bound=BaseModel)
_UNPINNED = "not pinned: the tool will not be served until `portcullis pin` records its hash"


@dataclass(frozen=True, slots=True)
class LoadedManifest:
    path: Path  # the manifest file
    domain: str  # the directory name under tools/
    manifest: ToolManifest
    exposed_name: str  # config.model.exposed_name(service, service_cfg.tool_prefix, manifest.name)


@dataclass(frozen=True, slots=True)
class LoadedSurface:
    """A loaded resource, resource-template or prompt manifest (docs/mcp-surface.md)."""

    path: Path
    domain: str  # the directory name under resources/ or prompts/
    manifest: ResourceManifest | PromptManifest
    exposed: str  # prefixed URI, URI template or prompt name

    @property
    def kind(self) -> str:  # resource | template | prompt
        m = self.manifest
        return "prompt" if isinstance(m, PromptManifest) else "resource" if m.uri is not None else "template"


@dataclass(frozen=True, slots=True)
class Deployment:
    root: Path
    gateway: GatewayConfig
    manifests: tuple[LoadedManifest, ...]
    surface: tuple[LoadedSurface, ...] = ()  # resources, resource templates and prompts


def load_deployment(root: Path, environ: Mapping[str, str] | None = None) -> Deployment:
    """The validated deployment at ``root``; ConfigError with every error if there is any.

    ``environ`` (default: the process environment) is where ``$PORTCULLIS_STATE_DIR`` and the
    store path overrides are read, to know which files are the gateway's state and not configuration."""
    problems, deployment = _check(Path(root), environ)
    errors = [p for p in problems if p.severity == "error"]
    if errors or deployment is None:
        raise ConfigError(_sorted(errors) or [Problem(Path(root), None, "invalid deployment")])
    return deployment


def lint_deployment(root: Path, environ: Mapping[str, str] | None = None) -> list[Problem]:
    """Every problem at ``root``, errors and warnings, sorted by path then line.

    Past the checks :func:`load_deployment` makes, (6) the policies: conflicts, unreachable rules,
    tools without a policy, Rego that does not compile (:mod:`portcullis.policy.lint`); (7) each
    manifest's definition through the tool-poisoning scanner
    (:mod:`portcullis.content.definition_review`), every finding an error; (8) coverage and approval
    paths (:mod:`.lint_rules`): a risk level on every resource and prompt, decision fixtures that load
    and cover every exposed tool, resource and prompt, and an approval path and approver for every
    high-risk tool.
    """
    problems, deployment = _check(Path(root), environ)
    problems = strict(problems)  # a file not scanned whole for secrets fails the gate (loading only warns)
    if deployment is not None:
        problems += _policy_problems(deployment)  # 6
        problems += _poisoning_problems(deployment)  # 7
        problems += _deployment_rules(deployment)  # 8
    return _sorted(problems)


def _deployment_rules(deployment: Deployment) -> list[Problem]:
    """Coverage (risk, decision fixtures) and approval paths (:mod:`.lint_rules`)."""
    from portcullis.config.lint_rules import deployment_rules
    from portcullis.policy.engine import configured_environment

    return _located(deployment_rules(deployment, configured_environment(deployment)))


def _policy_problems(deployment: Deployment) -> list[Problem]:
    """The policy lint's findings, each at the line of the offending YAML key."""
    from portcullis.policy.engine import configured_environment
    from portcullis.policy.lint import lint_policies

    # A tool without a policy is flagged only once the deployment has adopted policies (some tool
    # has one): there a missing section is the likely mistake. Either way such a tool is denied.
    adopted = any(loaded.manifest.policy is not None for loaded in deployment.manifests)
    found = lint_policies(deployment.manifests, environment=configured_environment(deployment),
                          rego_dir=deployment.root / "policy", report_missing=adopted)
    return _located(found)


def _poisoning_problems(deployment: Deployment) -> list[Problem]:
    """The tool-poisoning scanner's findings in the manifests, each at the line of its YAML key."""
    from portcullis.content.definition_review import manifest_findings

    return _located(manifest_findings(deployment.manifests))


def _located(found: list[PolicyProblem]) -> list[Problem]:
    """Lint findings as :class:`Problem` s, each at the line of its YAML key when that can be found."""
    docs: dict[Path, YamlDocument | None] = {}
    problems = []
    for item in found:
        line = item.line
        if line is None and item.loc:
            if item.path not in docs:
                try:
                    docs[item.path] = load_yaml(item.path.read_bytes())
                except (OSError, YamlError):  # changed since it was checked: the problem stands, lineless
                    docs[item.path] = None
            doc = docs[item.path]
            line = None if doc is None else doc.line_of(item.loc)
        problems.append(Problem(item.path, line, item.message, item.severity, item.rule))
    return problems


def write_pin(manifest_path: Path, pin: str) -> None:
    """Set or replace the top-level ``pin:`` of one manifest, leaving every other byte as it was."""
    if not re.fullmatch(PIN_PATTERN, pin):
        raise ConfigError([Problem(manifest_path, None, "pin must look like sha256:<64 hex digits>")])
    try:
        text = set_top_level_scalar(manifest_path.read_bytes(), "pin", pin)
    except YamlError as exc:
        raise ConfigError([Problem(manifest_path, exc.line, exc.message)]) from None
    atomic_write_text(manifest_path, text)


_ACCEPTED_NOTE = "# findings accepted by "


def write_acceptance(manifest_path: Path, pin: str, reviewer: str, rules: list[str],
                     now: datetime | None = None) -> None:
    """Set ``findings_accepted: <pin>`` with a comment line above it: who accepted the scanner's findings
    (``reviewer``, as the person running ``pin`` names themselves: the commit is the authenticated record),
    when (UTC) and which rules. Only safe characters of ``reviewer`` and ``rules`` are kept."""
    if not re.fullmatch(PIN_PATTERN, pin):
        raise ConfigError([Problem(manifest_path, None, "pin must look like sha256:<64 hex digits>")])
    try:
        data = set_top_level_scalar(manifest_path.read_bytes(), "findings_accepted", pin)
        line = load_yaml(data.encode("utf-8")).line_of(("findings_accepted",))
    except YamlError as exc:
        raise ConfigError([Problem(manifest_path, exc.line, exc.message)]) from None
    who = re.sub(r"[^A-Za-z0-9@._+-]", "", reviewer)[:64] or "unknown"
    when = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    what = ", ".join(re.sub(r"[^a-z0-9._]", "", rule)[:48] for rule in rules[:20])
    lines = data.splitlines(keepends=True)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    note = f"{_ACCEPTED_NOTE}{who} at {when} (portcullis pin --accept-findings): {what}{newline}"
    index = line - 1
    if index > 0 and lines[index - 1].startswith(_ACCEPTED_NOTE):
        lines[index - 1] = note
    else:
        lines.insert(index, note)
    atomic_write_text(manifest_path, "".join(lines))


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same directory and ``os.replace``."""
    mode = stat.S_IMODE(path.stat().st_mode) if path.is_file() and not path.is_symlink() else 0o644
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


# --------------------------------------------------------------------------- the checks


class _Problems(list[Problem]):
    """Problems as the checks find them, each under the stable id of its check (``rule``)."""

    def error(self, rule: str, path: Path, line: int | None, message: str) -> None:
        self.append(Problem(path, line, message, "error", rule))

    def warning(self, rule: str, path: Path, line: int | None, message: str) -> None:
        self.append(Problem(path, line, message, "warning", rule))


_Checked = tuple[Path, str, YamlDocument, ToolManifest]


def _check(root: Path, environ: Mapping[str, str] | None) -> tuple[list[Problem], Deployment | None]:
    report = _Problems()
    if not root.is_dir():
        report.error("deployment", root, None, "not a directory")
        return report, None
    files, texts = _files(root, report, environ)  # 1
    for rel, data in texts.items():
        report += scan_file(root / rel, data)  # 2
    gateway = _check_gateway(root, texts, report)  # 3
    _drop_repeated_secrets(report)
    manifests: list[_Checked] = []
    surface: list[tuple[Path, str, YamlDocument, ResourceManifest | PromptManifest]] = []
    for rel in sorted(files):
        if any(part.startswith(".") for part in rel.parts[:-1]):
            continue  # .github/ and friends: scanned for secrets (2), never read as configuration
        if rel.parts[0] in _SURFACE_DIRS and len(rel.parts) == 3 and rel.suffix in _MANIFEST_SUFFIXES:
            if rel in texts and (doc := _parse(root / rel, texts[rel], report)) is not None:
                model = _SURFACE_DIRS[rel.parts[0]]
                if (item := _validate(model, root / rel, doc, report)) is not None:
                    surface.append((root / rel, rel.parts[1], doc, item))
        elif rel.parts[0] in _SURFACE_DIRS:
            report.warning("layout", root / rel, None, f"not a manifest at {rel.parts[0]}/<domain>/<name>.yml: ignored")
        elif rel.parts[0] == "tools" and len(rel.parts) == 3 and rel.suffix in _MANIFEST_SUFFIXES:
            if rel in texts and (checked := _check_manifest(root / rel, texts[rel], report)):  # 4
                manifests.append((root / rel, rel.parts[1], *checked))
        elif rel.parts[0] == "tools":
            report.warning("layout", root / rel, None, "not a manifest at tools/<domain>/<tool>.yml: ignored")
        elif rel == Path("policy", "data_class.yml") and rel in texts:
            if (doc := _parse(root / rel, texts[rel], report)) is not None:
                _validate(DataClassScheme, root / rel, doc, report)
    loaded = _cross_check(gateway, manifests, report)  # 5
    surfaced = _cross_check_surface(root, gateway, surface, report)
    if gateway is not None:
        _issuer_scopes(root, gateway, texts[Path("gateway.yaml")], manifests, loaded, report)  # 6
    return report, None if gateway is None else Deployment(root, gateway, tuple(loaded), tuple(surfaced))


def deployment_files(root: Path, environ: Mapping[str, str] | None = None) -> tuple[list[Problem], dict[Path, bytes]]:
    """Steps 1 of the checks alone: the problems of the walk, and the bytes of every file read (relative
    path -> at most ``MAX_BYTES + 1`` bytes); for ``portcullis secrets scan``."""
    report = _Problems()
    if not root.is_dir():
        report.error("deployment", root, None, "not a directory")
        return report, {}
    return report, _files(root, report, environ)[1]


def _files(root: Path, report: _Problems, environ: Mapping[str, str] | None) -> tuple[dict[Path, Path],
                                                                                     dict[Path, bytes]]:
    files = _walk(root, report, _state_paths(root, report, environ))
    texts: dict[Path, bytes] = {}
    for rel, real in files.items():
        if (data := _read(root / rel, real, report)) is not None:
            texts[rel] = data
    return files, texts


def _drop_repeated_secrets(report: _Problems) -> None:
    """A value under a secret-named key is reported once (``secret.ref``), not again by the generic rule."""
    keyed = {(p.path, p.line) for p in report if p.rule == "secret.ref"}
    report[:] = [p for p in report if not (p.rule == GENERIC_RULE and (p.path, p.line) in keyed)]


GENERIC_RULE = "secret.generic.assignment"
_SURFACE_DIRS: dict[str, type[ResourceManifest] | type[PromptManifest]] = {
    "resources": ResourceManifest, "prompts": PromptManifest}


def _cross_check_surface(root: Path, gateway: GatewayConfig | None,
                         items: list[tuple[Path, str, YamlDocument, ResourceManifest | PromptManifest]],
                         report: _Problems) -> list[LoadedSurface]:
    """Resource and prompt manifests across files: known services, unique names and exposed addresses,
    resource prefixes that cannot be confused across services (none a prefix of another), pins."""
    loaded: list[LoadedSurface] = []
    seen: dict[tuple[str, str, str], Path] = {}
    prefixes: dict[str, str] = {}  # service -> resource prefix, for services that expose resources
    for path, domain, doc, manifest in items:
        name_line = doc.line_of(("name",))
        if path.stem != manifest.name:
            report.warning("name.file", path, name_line,
                           f"name {manifest.name!r} differs from the file name {path.stem!r}")
        if manifest.pin is None:
            report.warning("pin.missing", path, 1,
                           "not pinned: it will not be served until `portcullis pin` records its hash")
        if gateway is None:
            continue
        if (service := gateway.services.get(manifest.service)) is None:
            report.error("reference.service", path, doc.line_of(("service",)),
                         f"service {manifest.service!r} is not declared in gateway.yaml")
            continue
        if isinstance(manifest, PromptManifest):
            kind, public = "prompt", exposed_name(manifest.service, service.tool_prefix, manifest.name)
        else:
            prefix = prefixes[manifest.service] = resource_prefix(manifest.service, service.resource_prefix)
            kind, public = "resource", prefix + (manifest.uri or manifest.uri_template or "")
        for key in ((kind, manifest.service, "name:" + manifest.name), (kind, "", "exposed:" + public)):
            if key in seen:
                report.error("name.duplicate", path, name_line,
                             f"{kind} {manifest.name!r} ({public!r}) is also defined in {seen[key]}")
                break
        else:
            seen[(kind, manifest.service, "name:" + manifest.name)] = seen[(kind, "", "exposed:" + public)] = path
            loaded.append(LoadedSurface(path, domain, manifest, public))
    for owner, prefix in sorted(prefixes.items()):
        for other, other_prefix in sorted(prefixes.items()):
            if other != owner and other_prefix.startswith(prefix):
                report.error("name.prefix", root / "gateway.yaml", None,
                             f"services.{owner}.resource_prefix {prefix!r} is a prefix of {other!r}'s "
                             f"{other_prefix!r}: their resource URIs could be confused")
    return loaded


def _issuer_scopes(root: Path, gateway: GatewayConfig, gateway_text: bytes, manifests: list[_Checked],
                   loaded: list[LoadedManifest], report: _Problems) -> None:
    """Caller patterns whose issuer scope is unknown, or missing where several sources are trusted."""
    from portcullis.policy.issuer_scope import scope_problems

    docs = {path: doc for path, _, doc, _ in manifests}
    gateway_doc: YamlDocument | None = None
    for problem in scope_problems(gateway, [(item.path, item.manifest) for item in loaded]):
        if problem.path is None:
            if gateway_doc is None:
                gateway_doc = _parse(root / "gateway.yaml", gateway_text, _Problems())
            line = None if gateway_doc is None else gateway_doc.line_of(problem.loc)
            report.error("policy.issuer_scope", root / "gateway.yaml", line, problem.message)
        else:
            report.error("policy.issuer_scope", problem.path, docs[problem.path].line_of(problem.loc), problem.message)


def _state_paths(root: Path, report: _Problems, environ: Mapping[str, str] | None) -> StatePaths:
    """The gateway's own state as this deployment places it (read from the raw gateway.yaml, which is
    checked properly later); a state directory inside the deployment is a warning, the deployment
    directory itself an error."""
    raw: Any = None
    path = root / "gateway.yaml"
    if path.is_file() and not path.is_symlink():
        try:
            raw = load_yaml(path.read_bytes()[: MAX_BYTES + 1]).value
        except (OSError, YamlError):
            raw = None  # reported by step 3
    paths = StatePaths.from_raw(raw, environ)
    real_root = root.resolve()
    if paths.state_dir == real_root:
        report.error("state.dir", path, None, "state_dir is the deployment directory itself: the gateway's keys "
                     "would sit among the configuration; give it a directory of its own")
    elif real_root in paths.state_dir.parents:
        inside = paths.state_dir.relative_to(real_root)
        report.warning("state.dir", path, None, f"state_dir is inside the deployment directory ({inside}): it is "
                       "never read as configuration, but keep it out of version control (it holds private keys)")
    return paths


def _walk(root: Path, report: _Problems, state: StatePaths) -> dict[Path, Path]:
    """Relative path → real path of every file to read; symlinks leaving ``root`` are errors; the
    gateway's own state (``state``) is skipped, never read."""
    real_root = root.resolve()
    if real_root not in state.state_dir.parents:  # outside: nothing to skip; the root itself or above it:
        state = dataclasses.replace(state, skip_state_dir=False)  # skipping it would skip the deployment
    files: dict[Path, Path] = {}
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d != ".git"  # dot-directories (.github/) are read and scanned
                         and not state.holds_dir(Path(os.path.realpath(Path(folder, d)))))
        for name in [*dirs, *names]:
            path = Path(folder, name)
            if not path.is_symlink():
                if name in names and not state.holds_file(Path(os.path.realpath(path))):
                    files[path.relative_to(root)] = path
                continue
            target = Path(os.path.realpath(path))
            if target != real_root and real_root not in target.parents:
                report.error("symlink", path, None, "symlink points outside the deployment directory: not read")
            elif target.is_dir():
                report.warning("symlink", path, None, "symlinked directory not followed")
            elif name in names and not state.holds_file(target):
                files[path.relative_to(root)] = target
    return files


def _read(path: Path, real: Path, report: _Problems) -> bytes | None:
    """At most MAX_BYTES + 1 bytes of a regular file, refusing a last-moment symlink or FIFO."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        with os.fdopen(os.open(real, flags), "rb") as handle:
            if stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return handle.read(MAX_BYTES + 1)
        report.warning("file", path, None, "not a regular file: ignored")
    except OSError:
        report.error("file", path, None, "cannot be read")
    return None


def _parse(path: Path, data: bytes, report: _Problems, *, mapping: bool = True) -> YamlDocument | None:
    """The document if it is YAML (with a mapping at the top); otherwise None and a problem."""
    try:
        doc = load_yaml(data)
    except YamlError as exc:
        report.error("yaml", path, exc.line, exc.message)
        return None
    if mapping and not isinstance(doc.value, dict):
        report.error("yaml", path, 1, "expected a mapping at the top level")
        return None
    return doc


def _validate(model: type[_M], path: Path, doc: YamlDocument, report: _Problems) -> _M | None:
    try:
        return model.model_validate(doc.value)
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            loc = _present(doc.value, error["loc"], keep_last=error["type"] == "missing")
            prefix = ".".join(str(part) for part in loc)
            report.error("schema", path, doc.line_of(loc), f"{prefix}: {error['msg']}" if prefix else error["msg"])
        return None


def _present(data: Any, loc: tuple[Any, ...], *, keep_last: bool) -> tuple[str | int, ...]:
    """``loc`` without pydantic's union tags and markers: only the parts that exist in ``data``."""
    shown: list[str | int] = []
    for index, part in enumerate(loc):
        if isinstance(data, dict) and isinstance(part, str) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        elif not (keep_last and index == len(loc) - 1):
            continue
        shown.append(part)
    return tuple(shown)


def _check_gateway(root: Path, texts: dict[Path, bytes], report: _Problems) -> GatewayConfig | None:
    path = root / "gateway.yaml"
    if Path("gateway.yaml") not in texts:
        if not any(p.path == path and p.severity == "error" for p in report):
            report.error("deployment", path, None, "missing: a deployment needs a gateway.yaml")
        return None
    if (doc := _parse(path, texts[Path("gateway.yaml")], report)) is None:
        return None
    for loc in literal_secret_locs(doc.value):
        dotted = ".".join(str(part) for part in loc)
        report.error("secret.ref", path, doc.line_of(loc), f"{dotted}: literal secret: use a secret:// reference")
    sessions = doc.value.get("sessions")
    key_ref = sessions.get("key_ref") if isinstance(sessions, dict) else None
    if isinstance(key_ref, str) and not is_reference(key_ref):
        line = doc.line_of(("sessions", "key_ref"))
        report.error("secret.ref", path, line, "sessions.key_ref: must be a secret:// reference")
    gateway = _validate(GatewayConfig, path, doc, report)
    for loc, message in () if gateway is None else secret_problems(gateway):
        report.error("secret.ref", path, doc.line_of(loc), message)
    for name, service in ({} if gateway is None else gateway.services).items():
        if isinstance(service, StdioService):  # the gateway warns about these at every start too
            for flag in service.sandbox.unsafe_flags():
                report.warning("sandbox.unsafe", path, doc.line_of(("services", name, "sandbox", flag)),
                               f"services.{name}.sandbox.{flag}: {UNSAFE_SANDBOX_TEXT[flag]}")
            for index in unseen_path_arguments(service.args, service.cwd, service.sandbox):
                report.warning("sandbox.path", path, doc.line_of(("services", name, "args", index)),
                               f"services.{name}.args[{index}]: {UNSEEN_PATH_TEXT}")
    return gateway


def _check_manifest(path: Path, data: bytes, report: _Problems) -> tuple[YamlDocument, ToolManifest] | None:
    if (doc := _parse(path, data, report)) is None:
        return None
    for field in ("input_schema", "output_schema"):
        if isinstance(schema := doc.value.get(field), dict):
            for error in _META.iter_errors(schema):
                why = error.message if len(error.message) <= 160 else error.message[:157] + "..."
                line = doc.line_of((field, *error.absolute_path))
                report.error("schema.json_schema", path, line, f"{field}: not a valid JSON Schema 2020-12: {why}")
            for loc, message in pattern_problems(schema):  # ECMA-262, linear time
                dotted = ".".join(str(part) for part in (field, *loc))
                report.error("schema.pattern", path, doc.line_of((field, *loc)), f"{dotted}: {message}")
    manifest = _validate(ToolManifest, path, doc, report)
    return None if manifest is None else (doc, manifest)


def _cross_check(gateway: GatewayConfig | None, manifests: list[_Checked], report: _Problems) -> list[LoadedManifest]:
    loaded: list[LoadedManifest] = []
    tools: dict[tuple[str, str], Path] = {}
    exposed: dict[str, tuple[str, Path]] = {}  # NFKC + casefold of an exposed name -> (name, file)
    for path, domain, doc, manifest in manifests:
        name, name_line = manifest.name, doc.line_of(("name",))
        if path.stem != name:
            report.warning("name.file", path, name_line, f"name {name!r} differs from the file name {path.stem!r}")
        if manifest.pin is None:
            report.warning("pin.missing", path, 1, _UNPINNED)
        if gateway is None:
            continue
        if (service := gateway.services.get(manifest.service)) is None:
            line = doc.line_of(("service",))
            report.error("reference.service", path, line,
                         f"service {manifest.service!r} is not declared in gateway.yaml")
            continue
        if (key := (manifest.service, name)) in tools:
            where = tools[key]
            report.error("name.duplicate", path, name_line,
                         f"tool {name!r} of {manifest.service!r} is also defined in {where}")
            continue
        tools[key] = path
        public = exposed_name(manifest.service, service.tool_prefix, name)
        folded = unicodedata.normalize("NFKC", public).casefold()
        if folded in exposed:
            other, where = exposed[folded]
            how = "collides with" if other == public else "looks like"
            report.error("name.duplicate", path, name_line, f"exposed name {public!r} {how} {other!r} from {where}")
            continue
        exposed[folded] = (public, path)
        if manifest.cache is not None and not cache_served(gateway, manifest):
            report.warning("cache.unused", path, doc.line_of(("cache",)),
                           "cache is declared but the gateway never caches this tool "
                           "(response_cache disabled, or its output classification is not in "
                           "response_cache.classifications)")
        loaded.append(LoadedManifest(path, domain, manifest, public))
    return loaded


def cache_served(gateway: GatewayConfig, manifest: ToolManifest) -> bool:
    """Whether the gateway's response cache may hold this tool's results (its manifest must also declare
    ``cache``, which the manifest model allows only for read-only tools whose output is not Restricted)."""
    allowed = gateway.response_cache
    return allowed.enabled and manifest.classification.output in allowed.classifications


def _sorted(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (str(p.path), p.line or 0))
