"""The manifest policies of one tool service, so the service can re-check what the gateway decided.

The gateway decides every ``tools/call`` against the tool's manifest ``policy:``. A service built
with the kit can hold the same policies (:class:`ServicePolicies`) and decide again with the
principal from the actor token, so a call that reaches the service some other way is still
denied (see :class:`~portcullis.service.kit.PolicyGuard` for where the check runs).

:meth:`ServicePolicies.load` follows these steps and raises one :class:`PolicyLoadError` (a
``ValueError``) listing every problem, so a service told to enforce policy that cannot load it
never starts:

1. The deployment root is a directory and ``environment`` is a non-empty name.
2. Every ``tools/<domain>/<tool>.yml`` (or ``.yaml``) is read, at most 1 MiB, refusing a symlink
   that leaves the root. As in the gateway's loader, hidden and symlinked domain directories and
   files that are not regular files are skipped, so both sides read the same manifests.
3. Each file is parsed with the loader's strict YAML reader (duplicate keys, anchors and
   non-core tags refused) and validated as a :class:`~portcullis.config.model.ToolManifest`
   (unknown keys refused). Every manifest must be valid, not only this service's: a broken file
   could be one of ours.
4. Manifests whose ``service`` is this one are kept, keyed by ``name`` (the tool's name at the
   service, which is what ``tools/call`` carries); two manifests for one name are an error.
5. At least one manifest names this service: an empty policy set is a configuration error.

:meth:`ServicePolicies.check` is pure: a tool with no manifest or no ``policy:`` is denied
(``no_policy``); otherwise the native engine decides. ``require_approval`` is an allow only when
the gateway's token carries an approval (``apv`` claim) bound to exactly these arguments (their
canonical hash); otherwise it becomes ``deny``, so a call that skipped the approval is refused.
``log_only`` policies allow, as at the gateway. Only the native policy is
re-checked; Rego modules (deployment-wide ``policy/*.rego``) are the gateway's alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from portcullis.config.model import ToolManifest
from portcullis.config.yaml_lines import MAX_BYTES, YamlError, load_yaml
from portcullis.errors import ConfigError, Problem
from portcullis.identity.principal import Principal
from portcullis.policy.decision import Decision
from portcullis.policy.model import ToolPolicy
from portcullis.policy.native import evaluate

logger = logging.getLogger("portcullis.service")

NO_POLICY = "no_policy"  # the gateway's reason for the same case
FORBIDDEN_CODE = -31403  # outside -32768..-32000, next to the kit's -31401 "unauthenticated"
FORBIDDEN_MESSAGE = "forbidden"
_SUFFIXES = (".yml", ".yaml")


class PolicyLoadError(ConfigError, ValueError):
    """The service's policies could not be loaded; ``problems`` carry file and line."""


class ServicePolicies:
    """The manifest policies of one service, by tool name at the service. Frozen once made.

    Args:
        service: the service's name in ``gateway.yaml``.
        policies: tool name → its manifest's ``policy`` (``None``: the manifest has none, so
            every call is denied). Must not be empty.
        environment: the gateway environment calls are made in (``environments`` rules).
    """

    __slots__ = ("_policies", "environment", "service", "version")

    def __init__(self, service: str, policies: Mapping[str, ToolPolicy | None], *, environment: str) -> None:
        if not service:
            raise ValueError("service must be a non-empty name")
        if not environment:
            raise ValueError("environment must be a non-empty name")
        if not policies:
            raise ValueError(f"no tool policies for service {service!r}: an empty policy set would deny "
                             "everything and is a configuration error")
        self.service = service
        self.environment = environment
        self._policies: Mapping[str, ToolPolicy | None] = MappingProxyType(dict(sorted(policies.items())))
        self.version = _version(self._policies)

    @classmethod
    def load(cls, deployment_root: Path, service: str, *, environment: str) -> ServicePolicies:
        """The policies of ``service`` from the manifests under ``deployment_root`` (steps in the module doc)."""
        root = Path(deployment_root)
        problems: list[Problem] = []
        policies: dict[str, ToolPolicy | None] = {}
        seen: dict[str, Path] = {}
        if not root.is_dir():  # 1
            raise PolicyLoadError([Problem(root, None, "policy root is not a directory")])
        if not environment:
            raise PolicyLoadError([Problem(root, None, "environment must be a non-empty name")])
        for path in _manifest_paths(root):
            manifest = _load_manifest(root, path, problems)  # 2, 3
            if manifest is None or manifest.service != service:
                continue
            if manifest.name in seen:  # 4
                problems.append(Problem(path, None, f"tool {manifest.name!r} of {service!r} is also defined in "
                                                    f"{seen[manifest.name]}"))
                continue
            seen[manifest.name] = path
            policies[manifest.name] = manifest.policy
        if not problems and not policies:  # 5
            problems.append(Problem(root / "tools", None, f"no manifest names service {service!r}"))
        if problems:
            raise PolicyLoadError(problems)
        for name, policy in policies.items():
            if policy is None:
                logger.warning("tool has no policy: every call to it is denied", extra={"fields": {
                    "service": service, "tool": name, "manifest": str(seen[name])}})
        return cls(service, policies, environment=environment)

    @property
    def tools(self) -> tuple[str, ...]:
        """Every tool name with a manifest for this service, with or without a policy, sorted."""
        return tuple(self._policies)

    def policy(self, tool: str) -> ToolPolicy | None:
        """The policy of ``tool``; ``None`` if it has none or no manifest."""
        return self._policies.get(tool)

    def check(self, tool: str, principal: Principal, arguments: Mapping[str, object], now: datetime,
              approval: Mapping[str, Any] | None = None) -> Decision:
        """Decide one ``tools/call`` of ``tool`` (its name at this service). Never raises.

        ``approval`` is the gateway token's ``apv`` claim: a ``require_approval`` decision is an
        allow only when it binds exactly these arguments (their canonical hash)."""
        policy = self._policies.get(tool)
        if policy is None:
            return Decision(effect="deny", reasons=(NO_POLICY,), rule_ids=(f"{tool}/{NO_POLICY}",),
                            policy_version=self.version)
        decision = evaluate(policy, tool=tool, principal=principal, arguments=arguments,
                            environment=self.environment, now=now, policy_version=self.version)
        if decision.effect == "require_approval":
            if approval is not None and _binds(approval, arguments):
                return replace(decision, effect="allow", reasons=(*decision.reasons, f"approved:{approval['id']}"))
            return replace(decision, effect="deny")  # no approval, or one for other arguments
        return decision


def _manifest_paths(root: Path) -> list[Path]:
    tools = root / "tools"
    if not tools.is_dir():
        return []
    return sorted(
        path for domain in tools.iterdir()
        if not domain.name.startswith(".") and not domain.is_symlink() and domain.is_dir()
        for path in domain.iterdir() if path.suffix in _SUFFIXES
    )


def _load_manifest(root: Path, path: Path, problems: list[Problem]) -> ToolManifest | None:
    data = _read(root, path, problems)
    if data is None:
        return None
    try:
        doc = load_yaml(data)
    except YamlError as exc:
        problems.append(Problem(path, exc.line, exc.message))
        return None
    if not isinstance(doc.value, dict):
        problems.append(Problem(path, 1, "expected a mapping at the top level"))
        return None
    try:
        return ToolManifest.model_validate(doc.value)
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(part) for part in error["loc"])
            message = f"{where}: {error['msg']}" if where else error["msg"]
            problems.append(Problem(path, doc.line_of(error["loc"]), message))
        return None


def _read(root: Path, path: Path, problems: list[Problem]) -> bytes | None:
    """At most MAX_BYTES + 1 bytes of a regular file inside ``root`` (no FIFOs, no escaping symlinks)."""
    real_root, real = root.resolve(), path.resolve()
    if real_root not in real.parents:
        problems.append(Problem(path, None, "symlink points outside the deployment directory: not read"))
        return None
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        with os.fdopen(os.open(real, flags), "rb") as handle:
            if stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return handle.read(MAX_BYTES + 1)
    except OSError:
        problems.append(Problem(path, None, "cannot be read"))
        return None
    logger.warning("not a regular file: ignored", extra={"fields": {"path": str(path)}})
    return None


def _version(policies: Mapping[str, ToolPolicy | None]) -> str:
    """``sha256:<hex>`` of the canonical JSON of every policy, so logs name what decided."""
    body = {name: None if policy is None else policy.model_dump(mode="json", by_alias=True)
            for name, policy in policies.items()}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    return f"sha256:{digest.hexdigest()}"


def _binds(approval: Mapping[str, Any], arguments: Mapping[str, object]) -> bool:
    from portcullis.approvals.model import arguments_hash

    try:
        return approval.get("args") == arguments_hash(arguments)
    except ValueError:
        return False
