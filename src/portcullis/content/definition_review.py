"""The poisoning scanner applied where definitions are reviewed: manifests (``lint``) and live listings (``pin``).

:func:`manifest_findings` scans each manifest's copy of its definition (name, description, input and
output schemas, annotation title), with the tools of *other* services as the shadowing list, and
reports each finding at the YAML key it came from. :func:`live_findings` scans a live ``tools/list``
entry the same way. :func:`finding_message` is the one wording both commands print: rule, field,
escaped excerpt, decoded hidden text — nothing raw from the definition.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from portcullis.content.poisoning import scan_definition
from portcullis.content.rule_findings import Finding
from portcullis.policy.lint import PolicyProblem

if TYPE_CHECKING:
    from portcullis.config.loader import LoadedManifest

_WIRE_TO_YAML = {"inputSchema": "input_schema", "outputSchema": "output_schema"}


def wire_view(loaded: LoadedManifest) -> dict[str, Any]:
    """A manifest's definition in wire format (camelCase), as an upstream would list it."""
    manifest = loaded.manifest
    view: dict[str, Any] = {"name": manifest.name, "description": manifest.description,
                            "inputSchema": manifest.input_schema}
    if manifest.output_schema is not None:
        view["outputSchema"] = manifest.output_schema
    if manifest.annotations.title is not None:
        view["annotations"] = {"title": manifest.annotations.title}
    return view


def _other_tools(manifests: Sequence[LoadedManifest], service: str) -> list[str]:
    others = []
    for loaded in manifests:
        if loaded.manifest.service != service:
            others += [loaded.manifest.name, loaded.exposed_name]
    return others


def manifest_findings(manifests: Iterable[LoadedManifest]) -> list[PolicyProblem]:
    """Every poisoning finding in the manifests, as errors located at the offending YAML key."""
    loaded_all = list(manifests)
    problems = []
    for loaded in loaded_all:
        others = _other_tools(loaded_all, loaded.manifest.service)
        for finding in scan_definition(wire_view(loaded), other_tools=others):
            problems.append(PolicyProblem(loaded.path, _yaml_loc(finding.pointer),
                                          f"{loaded.exposed_name}: {finding_message(finding)}", "error",
                                          rule=finding.rule))
    return problems


def live_findings(tool: Mapping[str, Any], other_tools: Iterable[str]) -> list[Finding]:
    """The findings of one live ``tools/list`` entry."""
    return scan_definition(tool, other_tools=other_tools)


def finding_message(finding: Finding) -> str:
    """``possible tool poisoning (poisoning.secret_file) at /description: "…excerpt…"[; hidden text: "…"]``."""
    message = f"possible tool poisoning ({finding.rule}) at {finding.pointer or '/'}: \"{finding.excerpt}\""
    return message + (f"; {finding.detail}" if finding.detail else "")


def _yaml_loc(pointer: str) -> tuple[str | int, ...]:
    parts: list[str | int] = []
    for token in pointer.split("/")[1:]:
        key = token.replace("~1", "/").replace("~0", "~")
        parts.append(int(key) if key.isdigit() and parts and parts[-1] in ("examples", "enum") else key)
    if parts and isinstance(parts[0], str):
        parts[0] = _WIRE_TO_YAML.get(parts[0], parts[0])
    return tuple(parts)
