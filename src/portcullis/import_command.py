"""``portcullis import SERVICE``: draft one manifest per tool a live upstream serves, for a person to review.

The service (declared in ``gateway.yaml``) is connected once and listed, as ``pin`` does. Each tool
becomes ``tools/<domain>/<tool>.yml`` under the output directory with its name, service,
description and schemas exactly as served, and ``owner``, ``risk`` and ``classification`` set to
``REVIEW-ME`` — a value the manifest model refuses, so ``lint`` and ``serve`` refuse the manifest
until a person has filled them in. No ``policy`` is written (default deny). Every definition goes
through the tool-poisoning scanner first: its findings head the file as a comment block and are
printed; such a definition gets no ``pin`` (it stays out of service until ``portcullis pin`` after
review); a clean one is pinned to the definition just read.

The file is pure ASCII: YAML escapes every other character (``\\u202E``), so no control, bidi or
tag character of a hostile upstream lands raw in a file a person reviews in an editor. A tool
whose name is not a valid manifest name (``/``, ``..``, NUL, non-ASCII look-alikes, over 128
characters) is refused, never turned into a path; two names that differ only in case are refused
on the second (one file on a case-insensitive file system). An existing file is never replaced
without ``force``, and a symlink never.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from portcullis.config.loader import atomic_write_text
from portcullis.config.model import REVIEW_PLACEHOLDER, TOOL_NAME_RE
from portcullis.content.definition_review import finding_message, live_findings
from portcullis.content.rule_findings import Finding
from portcullis.pinning import definition_hash

MAX_TOOLS = 1000  # a hostile upstream listing more gets the first ones drafted and a refusal for the rest


@dataclass(frozen=True, slots=True)
class Draft:
    """One tool's outcome: the file written (or that would be), or why not."""

    tool: str  # escaped, for display
    state: str  # written | exists | refused
    path: Path | None
    findings: tuple[Finding, ...] = ()
    reason: str = ""


def draft_text(service: str, tool: Mapping[str, Any], findings: Sequence[Finding]) -> str:
    """The manifest text for one live tool: findings comment block, then the YAML (ASCII only)."""
    manifest: dict[str, Any] = {
        "name": tool["name"], "service": service, "owner": REVIEW_PLACEHOLDER,
        "description": tool.get("description") if isinstance(tool.get("description"), str) else "",
        "risk": REVIEW_PLACEHOLDER,
        "classification": {"input": REVIEW_PLACEHOLDER, "output": REVIEW_PLACEHOLDER},
    }
    if isinstance(tool.get("annotations"), Mapping):
        manifest["annotations"] = dict(tool["annotations"])
    manifest["input_schema"] = tool.get("inputSchema")
    if tool.get("outputSchema") is not None:
        manifest["output_schema"] = tool["outputSchema"]
    if not findings:
        manifest["pin"] = definition_hash(tool)
    head = [f"# Imported from service {service!r} by `portcullis import`: review before use.",
            f"# Fill in owner, risk and classification ({REVIEW_PLACEHOLDER} is refused by lint and serve),",
            "# check the description and schemas, and add a policy (without one every caller is denied)."]
    if findings:
        head += [f"# The tool-poisoning scanner found {len(findings)} problem(s); no pin was written. Read each",
                 "# one; after review run `portcullis pin` (with --accept-findings if you accept them):"]
        head += [f"#   {_ascii_safe(finding_message(finding))}" for finding in findings]
    body = yaml.safe_dump(manifest, sort_keys=False, allow_unicode=False, width=100)
    return "\n".join(head) + "\n" + body


def _ascii_safe(text: str) -> str:
    """One comment line: the scanner's message (its excerpts are escaped already) with every character outside
    printable ASCII shown as ``\\u{XXXX}``, so no line break, control or bidi character reaches the file."""
    text = text.replace("\u2026", "...")
    return "".join(ch if " " <= ch <= "~" else f"\\u{{{ord(ch):04X}}}" for ch in text)


def draft_manifests(service: str, tools: Iterable[Mapping[str, Any]], out: Path, domain: str, *,
                    other_tools: Sequence[str] = (), force: bool = False) -> list[Draft]:
    """Write a draft manifest per tool under ``out/tools/<domain>/``; one :class:`Draft` per tool."""
    folder = out / "tools" / domain
    folder.mkdir(parents=True, exist_ok=True)
    real_folder = folder.resolve()
    drafts: list[Draft] = []
    seen: set[str] = set()
    for index, tool in enumerate(tools):
        raw = tool.get("name") if isinstance(tool, Mapping) else None
        shown = _ascii_safe(str(raw)[:200]) if raw is not None else "(no name)"  # look-alikes show as \u{0430}
        if index >= MAX_TOOLS:
            drafts.append(Draft(shown, "refused", None, reason=f"more than {MAX_TOOLS} tools listed"))
            continue
        if not isinstance(raw, str) or not TOOL_NAME_RE.fullmatch(raw) or "\n" in raw:
            drafts.append(Draft(shown, "refused", None, reason="not a valid tool name (A-Z a-z 0-9 _ . -, at most "
                                "128, not starting with . or -): no file written"))
            continue
        if raw.casefold() in seen:
            drafts.append(Draft(shown, "refused", None, reason="another tool's name differs only in case"))
            continue
        seen.add(raw.casefold())
        path = real_folder / f"{raw}.yml"
        if path.parent != real_folder or raw in (".", ".."):  # cannot happen with a valid name; checked anyway
            drafts.append(Draft(shown, "refused", None, reason="would leave the output directory"))
            continue
        findings = tuple(live_findings(tool, other_tools))
        text = draft_text(service, tool, findings)
        state = _write(path, text, force)
        drafts.append(Draft(shown, state, path, findings,
                            "" if state == "written" else "not replaced without --force (a link: never)"))
    return drafts


def _write(path: Path, text: str, force: bool) -> str:
    if path.is_symlink():
        return "exists"
    if force and path.exists():
        atomic_write_text(path, text)
        return "written"
    try:  # O_EXCL: never replaces a file, never follows a link planted in between
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except FileExistsError:
        return "exists"
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        try:
            handle.write(text)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
    return "written"
