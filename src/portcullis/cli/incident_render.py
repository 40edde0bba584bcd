"""An incident report as Markdown (for the ticket and the terminal) or JSON.

Every string that came from a requester or an upstream goes through :func:`md`:
:func:`~portcullis.cli.safe_text.terminal_safe` first (controls, newlines, bidi and zero-width
characters become visible ``\\uXXXX``; backslashes doubled), then every character that can
open inline markup is backslash-escaped (CommonMark allows that for any ASCII punctuation):
emphasis, code spans, links and images, HTML and entities, strikethrough, table cells (``|``),
e-mail autolinks, emoji codes and math. A value never starts a line (it always follows a list
marker or a cell border), so line-start markup cannot apply; rendered, it reads exactly as the
terminal view of the same value, and ordinary identifiers (``billing-bot``) stay readable.
JSON output is plain, ASCII-only JSON (:func:`~portcullis.cli.safe_text.json_text`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime

from portcullis.audit.incident_model import NOT_RECORDED, BuildSeen, ChainRange, IncidentReport, TimelineEntry
from portcullis.cli.safe_text import json_text, terminal_safe

_MARKUP = frozenset("\\`*_[]<>&|~!#{}@:$")
MAX_VALUE_CHARS = 300


def md(value: object, max_chars: int | None = MAX_VALUE_CHARS) -> str:
    """``value`` as Markdown text that renders literally, on one line; ``-`` for nothing."""
    if value is None or value == "" or value == ():
        return "-"
    shown = terminal_safe(value, max_chars)
    return "".join("\\" + ch if ch in _MARKUP else ch for ch in shown)


def md_list(values: Iterable[object]) -> str:
    items = [md(v) for v in values]
    return ", ".join(items) if items else "-"


def utc(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def render_json(report: IncidentReport) -> str:
    return json_text(report.to_json(), indent=2)


def render_markdown(report: IncidentReport) -> str:
    lines: list[str] = ["# Incident report", ""]
    lines += _scope(report) + _chain(report) + _radius(report) + _versions(report) + _services(report)
    lines += _timeline(report)
    return "\n".join(lines) + "\n"


def _scope(report: IncidentReport) -> list[str]:
    flt = report.filter
    given = [(n, v) for n, v in (("agent", flt.agent), ("user", flt.user), ("tool", flt.tool),
                                 ("request id", flt.request_id), ("tenant", flt.tenant)) if v is not None]
    until = "now" if flt.until is None else utc(flt.until)
    return ["## Scope", "", f"- window: {md(utc(flt.since))} to {md(until)}",
            "- filters (all must match): " + ("; ".join(f"{n} = {md(v)}" for n, v in given) or "none"),
            f"- records in the window: {report.records_in_window}; of the matched requests: {report.records_matched}",
            ""]


def _chain(report: IncidentReport) -> list[str]:
    chain = report.chain
    out = ["## Audit chain", "", f"- **verification: {md(chain.status)}**" + (
        "" if chain.ok else f" at index {chain.first_bad_index}: {md(chain.reason)}")]
    if chain.first_index is None:
        return [*out, "- range read: none (no records in the window)", ""]
    out += [f"- range read: records {chain.first_index} to {chain.last_index}",
            f"- first record hash: {md(chain.first_hash)}", f"- last record hash: {md(chain.last_hash)}",
            f"- records verified (from the chain's start): {chain.records_checked}",
            "- signed checkpoints in the range (segment ends): " + (", ".join(map(str, chain.checkpoints)) or "none"),
            "- signed through: " + _signed(chain)]
    if chain.ok and chain.signed_through != chain.last_index:
        after = 0 if chain.signed_through is None else chain.signed_through + 1
        out.append(f"- note: records {max(after, chain.first_index)} to {chain.last_index} come after the newest "
                   "signed checkpoint; only their hash links protect them")
    if chain.later_failure is not None:
        index, reason = chain.later_failure
        out.append(f"- **note: the chain fails after this range, at index {index}: {md(reason)}** "
                   "(run portcullis audit verify)")
    if chain.pruned_through is not None:
        out.append(f"- note: records 0 to {chain.pruned_through} were pruned by retention (attested)")
    return [*out, ""]


def _signed(chain: ChainRange) -> str:
    if chain.signed_through is None:
        return "none of the range"
    if chain.covering_checkpoint is not None:
        return f"the whole range (checkpoint at index {chain.covering_checkpoint})"
    return f"index {chain.signed_through}"


def _radius(report: IncidentReport) -> list[str]:
    r = report.blast_radius
    rows = (("tools", r.tools), ("services", r.services), ("agents", r.agents), ("users", r.users),
            ("clients", r.clients), ("tenants", r.tenants), ("data classifications", r.classifications))
    out = ["## Blast radius", "", "| what | distinct | values |", "|---|---|---|"]
    out += [f"| {name} | {len(values)} | {md_list(values)} |" for name, values in rows]
    effects = ", ".join(f"{md(e)}: {n}" for e, n in r.effects) or "none"
    return [*out, "", f"Calls by decision: {effects}", ""]


def _versions(report: IncidentReport) -> list[str]:
    out = ["## Policy and manifest versions in force", "", "| policy version | decisions | first | last |",
           "|---|---|---|---|"]
    out += [f"| {md(v.version)} | {v.decisions} | {utc(v.first_ts)} | {utc(v.last_ts)} |"
            for v in report.policy_versions] or ["| - | 0 | - | - |"]
    out += ["", f"Manifest set version: {md(report.manifest_set_version)} (records name each tool's pin).", "",
            "| tool | service | pin (definition hash) | decisions |", "|---|---|---|---|"]
    out += [f"| {md(p.tool)} | {md(p.service)} | {md(p.definition_hash)} | {p.decisions} |"
            for p in report.pins] or ["| - | - | - | 0 |"]
    return [*out, ""]


def _services(report: IncidentReport) -> list[str]:
    out = ["## Services: identity and confinement", ""]
    if not report.services:
        return [*out, "No service was touched in the window.", ""]
    out += ["| service | reported version | build identity (index, time, what it reported, what ran or where) "
            "| spawns (index, time, outcome, launcher, program, sandbox, network, unsafe) |", "|---|---|---|---|"]
    for s in report.services:
        spawns = "; ".join(
            f"{'before the window: ' if p.before_window else ''}#{p.index} {utc(p.ts)} {md(p.outcome)}"
            f"{' (' + md(p.reason) + ')' if p.reason else ''}, {md(p.launcher)} {md(p.program)}, "
            f"{md(p.backend)}, network {md(p.network)}, unsafe: {md_list(p.unsafe) if p.unsafe else 'none'}"
            for p in s.spawns) or "no spawn record (not a stdio service, or started before the chain)"
        builds = "; ".join(_build(b) for b in s.builds) or md(NOT_RECORDED)
        if s.build_changed:
            builds = f"**CHANGED in the window ({len(s.builds)} identities):** {builds}"
        out.append(f"| {md(s.service)} | {md_list(s.reported_versions)} | {builds} | {spawns} |")
    return [*out, ""]


def _build(b: BuildSeen) -> str:
    ran = [f"{what} {md(path)} sha256 {md(digest)}" for what, path, digest in (
        ("executable", b.executable, b.executable_sha256), ("script", b.script, b.script_sha256)) if path]
    ran += [f"module {md(b.module)}"] if b.module else []
    ran += [f"origin {md(b.origin)}"] if b.origin else []
    times = f" (x{b.records})" if b.records > 1 else ""
    return (f"{'before the window: ' if b.before_window else ''}#{b.index} {utc(b.ts)}{times} "
            f"{md(b.server_name)} {md(b.server_version)}, {md(b.transport)}, protocol {md(b.protocol_version)}"
            + "".join(f", {r}" for r in ran))


def _timeline(report: IncidentReport) -> list[str]:
    out = ["## Timeline", ""]
    if not report.timeline:
        return [*out, "No matching calls.", ""]
    out += ["| # | time (UTC) | kind | request id | tool | agent / user / client / tenant | decision | rules "
            "| policy | approvals | arguments (as recorded) | hashed args | redactions | outcome | class |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    out += [_row(e) for e in report.timeline]
    return [*out, ""]


def _row(e: TimelineEntry) -> str:
    outcome = e.outcome if e.error_code is None else f"{e.outcome or '-'} ({e.error_code})"
    decision = e.effect if not e.reasons else f"{e.effect}: {'; '.join(e.reasons)}"
    arguments = None if e.arguments is None else json.dumps(e.arguments, sort_keys=True, ensure_ascii=False,
                                                            default=str)
    redactions = str(e.redactions) + (f" ({md_list(e.findings)})" if e.findings else "")
    cells = [str(e.index), utc(e.ts), md(e.kind), md(e.request_id), md(e.tool),
             " / ".join(md(w) for w in e.who), md(decision), md_list(e.rule_ids), md(e.policy_version),
             md_list(e.approval_events), md(arguments), str(e.arguments_hashed), redactions, md(outcome),
             md(e.classification)]
    return "| " + " | ".join(cells) + " |"
