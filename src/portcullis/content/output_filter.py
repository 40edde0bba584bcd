"""The output filter: one JSON message from an upstream in, the message the caller may see out.

:func:`filter_message` works on any JSON value (a ``CallToolResult`` today; resource contents,
prompt messages, notifications and elicitation or sampling payloads as those channels are added),
so it knows MCP only where MCP marks data as binary or encoded:

1. Every string (:func:`~.leaves.string_leaves`): the values of text blocks, ``structuredContent``,
   embedded resources, annotations, ``_meta`` — and object keys. A ``blob`` whose sibling ``mimeType``
   is textual is base64-decoded, scanned as text and re-encoded; other blobs and the ``data`` of
   ``image`` / ``audio`` items are binary and *not scanned*, which the report says.
2. Hidden characters (:mod:`.unicode_safety`) are removed from the text the detectors read, so a
   zero-width character inside a token does not split it; the output keeps them, strips them or
   escapes them per policy (a string in which something was found is always output stripped).
3. Secrets and PII (:class:`~.scan.DetectorSet`): every string in one pass, with adjacent text blocks
   also joined across their boundaries (:func:`~.joined.across_windows`, so a value split across two
   blocks is found; encoded values are decoded); all under one CPU budget.
   Each finding gets the action of the first
   :class:`ActionRule` naming its kind or category: ``redact``, ``mask``, ``hash``, ``block``, ``allow``.
4. Links and images that would carry data to a host off the allow-list (:mod:`.links`).
5. Injection (:func:`~.injection.scan_value` over the filtered value): ``wrap`` (every text is put in
   the untrusted-data envelope), ``flag`` or ``block``.

A budget past its limit, a detector that raised, or a ``block`` action gives a *blocked* outcome: the
caller gets none of the message (fail closed). Nothing in the :class:`ContentReport` is text from the
message: kinds, actions, rule ids and counts only.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import hmac
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from portcullis.content import injection
from portcullis.content.budget import BudgetExceeded, Meter, ScanBudget
from portcullis.content.findings import PLAIN, Finding
from portcullis.content.joined import across_findings, across_windows
from portcullis.content.leaves import Leaf, PathPart, leaf_list, string_leaves
from portcullis.content.links import neutralise_links
from portcullis.content.scan import DEFAULT_BUDGET, DetectorError, DetectorSet
from portcullis.content.unicode_safety import HiddenPolicy, find_hidden, normalise, plain_ascii

Action = Literal["redact", "mask", "hash", "block", "allow"]
InjectionAction = Literal["wrap", "flag", "block", "off"]
ACTIONS: tuple[Action, ...] = ("redact", "mask", "hash", "block", "allow")
_STRICTNESS = {"allow": 0, "mask": 1, "hash": 2, "redact": 3, "block": 4}
DEFAULT_RULE = "output.secrets"
SEPARATOR = "\n"  # between strings in the one-pass scan: no value runs on across it
BOUNDARY_REACH = 512  # characters each side of a boundary between adjacent strings scanned joined
INJECTION_RULE = "output.injection"
# keys MCP itself defines: constant text, never data (scanning them costs without finding anything)
_SCHEMA_KEYS = frozenset({
    "content", "type", "text", "structuredContent", "isError", "resource", "uri", "mimeType", "blob", "data",
    "annotations", "audience", "priority", "lastModified", "_meta", "name", "title", "description", "size",
    "icons", "messages", "role", "contents", "resourceLink", "progress", "total", "message", "level", "logger"})
_CONTENT_TYPES = frozenset({"text", "image", "audio", "resource", "resource_link"})
_BINARY_TYPES = frozenset({"image", "audio"})
_TEXT_MIME = ("text/", "application/json", "application/xml", "application/javascript", "application/yaml",
              "application/x-yaml", "application/toml", "application/sql", "application/x-sh", "application/ld+json")
BlockReason = str  # "policy", "budget_exceeded", "input_too_large", "too_many_findings", "decode_limit",
# "detector_error", "injection", "undecodable_blob"


@dataclass(frozen=True, slots=True)
class ActionRule:
    """What to do with a finding: the first rule whose ``kinds`` name its kind or category
    (``secret``, ``pii``) or hold ``*`` decides. ``rule_id`` is shown in the marker and recorded."""

    rule_id: str
    kinds: frozenset[str]
    action: Action

    def matches(self, finding: Finding) -> bool:
        return "*" in self.kinds or finding.kind in self.kinds or finding.category in self.kinds


@dataclass(frozen=True, slots=True)
class FilterPolicy:
    """Everything one filter run needs: resolved for the tool, its output classification and the caller."""

    rules: tuple[ActionRule, ...] = ()  # first match wins; no match: redact under DEFAULT_RULE
    detectors: DetectorSet | None = None  # None: no secret or PII detection
    budget: ScanBudget = DEFAULT_BUDGET
    hidden: HiddenPolicy = HiddenPolicy.STRIP
    injection: InjectionAction = "wrap"
    links: bool = True
    allow_hosts: tuple[str, ...] = ()  # normalised (links.normalise_hosts)
    hash_key: bytes = b""
    source: str = ""  # named in the injection envelope (the tool)
    clock: Callable[[], int] = time.thread_time_ns

    def decide(self, finding: Finding) -> ActionRule:
        for rule in self.rules:
            if rule.matches(finding):
                return rule
        return ActionRule(DEFAULT_RULE, frozenset({"*"}), "redact")


@dataclass(slots=True)
class ContentReport:
    """What the filter did, value-free: for the outcome record, the metrics and session rules."""

    channel: str = ""
    findings: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, action) -> count
    rule_ids: set[str] = field(default_factory=set)
    encodings: set[str] = field(default_factory=set)  # non-plain encodings a finding was in
    links_neutralised: int = 0
    injection_rules: set[str] = field(default_factory=set)
    injection_action: str = ""
    hidden_runs: int = 0
    not_scanned: int = 0  # binary items (image / audio data, non-text blobs) passed without scanning
    blocked: str | None = None  # the reason, when the message was withheld

    @property
    def sensitive(self) -> bool:
        """A secret or PII value was found (whatever was done with it)."""
        return bool(self.findings)

    @property
    def exposed(self) -> bool:
        """A secret or PII value reached the caller in clear (an ``allow`` rule let it through): what
        the toxic-flow rule taints a session for (a redacted, masked or hashed value never did)."""
        return any(count and action == "allow" for (_kind, action), count in self.findings.items())

    @property
    def injection(self) -> bool:
        return bool(self.injection_rules)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "channel": self.channel,
            "findings": [{"kind": k, "action": a, "count": n} for (k, a), n in sorted(self.findings.items())],
            "rule_ids": sorted(self.rule_ids), "sensitive": self.sensitive, "exposed": self.exposed,
            "injection": self.injection,
        }
        if self.encodings:
            out["encodings"] = sorted(self.encodings)
        if self.links_neutralised:
            out["links_neutralised"] = self.links_neutralised
        if self.injection_rules:
            out["injection_rules"] = sorted(self.injection_rules)
            out["injection_action"] = self.injection_action
        if self.hidden_runs:
            out["hidden_runs"] = self.hidden_runs
        if self.not_scanned:
            out["not_scanned"] = self.not_scanned
        if self.blocked is not None:
            out["blocked"] = self.blocked
        return out


@dataclass(frozen=True, slots=True)
class FilterOutcome:
    value: Any  # the filtered message (None when blocked)
    report: ContentReport

    @property
    def blocked(self) -> bool:
        return self.report.blocked is not None


@dataclass(slots=True)
class _Part:
    leaf: Leaf
    text: str  # what the detectors read: hidden characters stripped
    hidden: bool  # the original had hidden characters
    blob: bool = False  # a textual blob: ``text`` is its decoding, re-encode on change
    plain: bool = False  # plain ASCII (unicode_safety.plain_ascii): so is its filtered text


def filter_message(value: Any, channel: str, policy: FilterPolicy) -> FilterOutcome:
    """Filter one JSON message (see the module doc)."""
    report = ContentReport(channel)
    try:
        filtered = _filter(value, policy, report)
    except _Blocked as exc:
        report.blocked = exc.reason
        return FilterOutcome(None, report)
    return FilterOutcome(filtered, report)


class _Blocked(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _LazyMeter(Meter):
    """A :class:`Meter` that reads the CPU clock first when the work charged reaches ``CHECK_UNITS``.

    Reading the thread's CPU clock is a system call (1.4 µs on a quiet host, tens of µs on a loaded
    VM), and most results are far smaller than one check interval: they never read it at all. The
    budget then counts from the first check, so a run may do up to ``CHECK_UNITS`` of work (about
    32 KB scanned, well under a millisecond) beyond ``cpu_ms``."""

    def __init__(self, budget: ScanBudget, clock: Callable[[], int]) -> None:
        super().__init__(budget, lambda: 0)
        self._clock = clock
        self._deadline_ns = -1

    def check(self) -> None:
        if self._deadline_ns < 0:
            self._deadline_ns = self._clock() + int(self.budget.cpu_ms * 1_000_000)
            return
        super().check()


def _filter(value: Any, policy: FilterPolicy, report: ContentReport) -> Any:
    meter = _LazyMeter(policy.budget, policy.clock)
    parts: list[_Part] = []
    keys: list[_Part] = []
    for leaf in leaf_list(value):
        if leaf.is_key:
            if leaf.text not in _SCHEMA_KEYS:
                keys.append(_prepared(leaf, leaf.text, report))
            continue
        last = leaf.path[-1] if leaf.path else None
        if last == "type" and leaf.text in _CONTENT_TYPES:
            continue
        if last in ("data", "blob"):
            parent = _parent(value, leaf.path)
            if last == "data" and parent.get("type") in _BINARY_TYPES:
                report.not_scanned += 1
                continue
            if last == "blob":
                decoded = _textual_blob(parent, leaf.text)
                if decoded is None:
                    report.not_scanned += 1
                    continue
                part = _prepared(leaf, decoded, report)
                part.blob = True
                parts.append(part)
                continue
        parts.append(_prepared(leaf, leaf.text, report))
    edits: dict[tuple[tuple[PathPart, ...], bool], str] = {}
    decodings: list[str] | None = None  # the detector pass's decodings, for the injection scan
    found: dict[int, list[Span]] = {}
    if policy.detectors is not None:
        decodings = []
        found = _detect(parts, keys, policy, meter, decodings)
    values_read: list[str] = []  # what the injection scan reads: the filtered strings
    keys_read: list[str] = []
    for index, part in enumerate([*parts, *keys]):
        text, changed = _filtered(part, found.get(index, []), policy, report)
        (keys_read if part.leaf.is_key else values_read).append(text)
        if not changed:
            continue
        if part.blob:
            text = base64.b64encode(text.encode("utf-8", "surrogateescape")).decode("ascii")
        if text != part.leaf.text:
            edits[(part.leaf.path, part.leaf.is_key)] = text
    _charge_check(meter)
    out = _rebuild(value, edits) if edits else value
    if policy.injection != "off":
        # markers are plain ASCII, so a filtered string is plain when what it came from was
        plain = all(part.plain for part in parts), all(part.plain for part in keys)
        out = _injection(out, policy, report, values_read, keys_read, plain, decodings)
    _charge_check(meter)
    return out


def _filtered(part: _Part, spans: list[Span], policy: FilterPolicy, report: ContentReport) -> tuple[str, bool]:
    """The part's text after its findings' markers, link neutralisation and the hidden-character
    policy, and whether it differs from what the message holds."""
    text = part.text
    if not spans and not part.hidden and (part.blob or part.leaf.is_key or not policy.links
                                          or ("<" not in text and "]" not in text)):
        return text, False  # the common case: nothing to change, nothing a link could hide in
    text = _apply(text, spans, policy, report) if spans else text
    if policy.links and not part.leaf.is_key and not part.blob:
        linked = neutralise_links(text, policy.allow_hosts)
        report.links_neutralised += len(linked.hits)
        if linked.hits:
            report.rule_ids.add("output.links")
        text = linked.text
    if text is part.text and part.hidden and not part.blob:
        return normalise(part.leaf.text, policy.hidden).text, True  # nothing found: the policy decides
    return text, text is not part.text or part.hidden  # a blob with hidden characters: re-encoded stripped


def _charge_check(meter: Meter) -> None:
    if getattr(meter, "_deadline_ns", 0) < 0:
        return  # never started: less work than one check interval
    try:
        meter.check()
    except BudgetExceeded as exc:
        raise _Blocked(exc.reason) from None


def _prepared(leaf: Leaf, text: str, report: ContentReport) -> _Part:
    if plain_ascii(text):
        return _Part(leaf, text, False, plain=True)  # the common case, without find_hidden's wider search
    runs = find_hidden(text)
    if not runs:
        return _Part(leaf, text, False)
    report.hidden_runs += len(runs)
    return _Part(leaf, normalise(text, HiddenPolicy.STRIP).text, True)


def _parent(value: Any, path: tuple[PathPart, ...]) -> Mapping[str, Any]:
    node = value
    for step in path[:-1]:
        node = node[step]
    return node if isinstance(node, Mapping) else {}


def _textual_blob(parent: Mapping[str, Any], blob: str) -> str | None:
    mime = parent.get("mimeType")
    if not isinstance(mime, str):
        return None
    mime = mime.split(";", 1)[0].strip().lower()
    if not (mime.startswith(_TEXT_MIME) or mime.endswith(("+json", "+xml"))):
        return None
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise _Blocked("undecodable_blob") from None  # says it is text, is not base64: not relayed unread
    return raw.decode("utf-8", "surrogateescape")


Span = tuple[int, int, Finding, ActionRule, bool]  # start, end, finding, rule, first span of the finding


def _detect(parts: Sequence[_Part], keys: Sequence[_Part], policy: FilterPolicy, meter: Meter,
            decoded: list[str]) -> dict[int, list[Span]]:
    """Findings per part index (``parts`` then ``keys``); raises :class:`_Blocked` when the scan cannot finish.

    Every string is scanned in one pass, the strings joined by a line break (one detector pass per
    message, not per string: a result of many short strings costs about what one text of their
    length costs). Adjacent text blocks (:func:`_adjacent_runs`) are also
    scanned across their boundaries joined with nothing between them (:func:`~.joined.across_windows`,
    ``BOUNDARY_REACH`` characters either side), appended to the same pass; of what is found there only
    values that cross a boundary are kept, so a value split between two blocks is found."""
    assert policy.detectors is not None
    everything = [*parts, *keys]
    texts = [p.text for p in everything]
    out: dict[int, list[Span]] = {}
    seen: set[tuple[str, tuple[tuple[int, int, int], ...]]] = set()

    def record(finding: Finding, spans: Sequence[tuple[int, int, int]]) -> None:
        key = (finding.rule_id, tuple(spans))
        if key in seen or not spans:
            return
        seen.add(key)
        rule = policy.decide(finding)
        for n, (index, start, end) in enumerate(spans):
            out.setdefault(index, []).append((start, end, finding, rule, n == 0))

    starts = [0]
    for text in texts:
        starts.append(starts[-1] + len(text) + len(SEPARATOR))
    found: list[Finding] = []
    runs = _adjacent_runs(parts)
    whole = SEPARATOR.join(texts)
    base = len(whole) + len(SEPARATOR)  # the boundary windows follow the strings, scanned in the same pass
    windows = across_windows([[texts[i] for i in run] for run in runs], BOUNDARY_REACH, SEPARATOR)
    try:
        if windows is None:
            policy.detectors.scan_into(whole, meter, found, decoded=decoded)
        else:
            policy.detectors.scan_into(whole + SEPARATOR + windows.text, meter, found,
                                       [base + b for b in windows.cover], decoded, cover_from=base)
    except BudgetExceeded as exc:
        raise _Blocked(exc.reason) from None
    except DetectorError:
        raise _Blocked("detector_error") from None
    across = [] if windows is None else across_findings([f.shifted(-base) for f in found if f.start >= base], windows)
    for finding in found:
        if finding.start >= base:
            continue
        first = bisect.bisect_right(starts, finding.start) - 1
        spans = []
        for index in range(first, len(texts)):
            if starts[index] >= finding.end:
                break
            lo, hi = max(finding.start, starts[index]), min(finding.end, starts[index] + len(texts[index]))
            if lo < hi:
                spans.append((index, lo - starts[index], hi - starts[index]))
        record(finding, spans)
    try:
        meter.count_findings(len(across))  # the windows' own repeats of values were not counted
    except BudgetExceeded as exc:
        raise _Blocked(exc.reason) from None
    for index, pf in across:
        record(pf.finding, [(runs[index][s.part], s.start, s.end) for s in pf.spans])
    return out


def _adjacent_runs(parts: Sequence[_Part]) -> list[list[int]]:
    """Indexes of adjacent text blocks (strings under a ``text`` key, two or more in a row): what a
    client shows as one text, so a value split between them is still one value to a reader. Sibling
    fields of ``structuredContent`` are not joined: a name field next to an e-mail field would read
    as one address and be cut out with it (docs/decisions.md, "Split values")."""
    runs: list[list[int]] = []
    current: list[int] = []
    for index, part in enumerate(parts):
        path = part.leaf.path
        if path and path[-1] == "text" and not part.blob:
            current.append(index)
            continue
        if len(current) > 1:
            runs.append(current)
        current = []
    if len(current) > 1:
        runs.append(current)
    return runs


def _apply(text: str, spans: list[Span], policy: FilterPolicy, report: ContentReport) -> str:
    """``text`` with each finding's span replaced by its marker (overlapping spans merged, the
    strictest action deciding); a ``block`` raises."""
    spans.sort(key=lambda s: (s[0], -s[1]))
    merged: list[list[Any]] = []
    for start, end, finding, rule, first in spans:
        report.findings[(finding.kind, rule.action)] += 1 if first else 0
        report.rule_ids.add(rule.rule_id)
        if finding.encoding != PLAIN:
            report.encodings.add(finding.encoding)
        if rule.action == "block":
            raise _Blocked("policy")
        if rule.action == "allow":
            continue
        if merged and start < merged[-1][1]:
            last = merged[-1]
            last[1] = max(last[1], end)
            if _STRICTNESS[rule.action] > _STRICTNESS[last[3].action]:
                last[2], last[3], last[4] = finding, rule, first
            last[4] = last[4] or first
        else:
            merged.append([start, end, finding, rule, first])
    out: list[str] = []
    pos = 0
    for start, end, finding, rule, first in merged:
        out.append(text[pos:start])
        if first:
            out.append(_marker(text[start:end], finding, rule, policy))
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _marker(value: str, finding: Finding, rule: ActionRule, policy: FilterPolicy) -> str:
    if rule.action == "mask" and finding.encoding == PLAIN:
        tail = "".join(c for c in value if c.isalnum())[-4:]
        shown = f" last4={tail}" if len(value) >= 12 and len(tail) == 4 else ""
        return f"[MASKED:{finding.kind} rule={rule.rule_id}{shown}]"
    if rule.action == "hash":
        digest = hmac.new(policy.hash_key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:16]
        return f"[HASHED:{finding.kind} rule={rule.rule_id} hmac={digest}]"
    return f"[REDACTED:{finding.kind} rule={rule.rule_id}]"


def _rebuild(value: Any, edits: Mapping[tuple[tuple[PathPart, ...], bool], str]) -> Any:
    """A copy of ``value`` with the edited strings (and keys) replaced; untouched subtrees are shared."""
    prefixes: set[tuple[PathPart, ...]] = set()
    for path, _ in edits:
        for i in range(len(path)):
            prefixes.add(path[:i])

    def walk(node: Any, path: tuple[PathPart, ...]) -> Any:
        if isinstance(node, str) or type(node) is int:  # a long integer's finding replaces the number
            return edits.get((path, False), node)
        if path not in prefixes:
            return node
        if isinstance(node, dict):
            out: dict[Any, Any] = {}
            for key, child in node.items():
                here = (*path, key)
                new_key = edits.get((here, True), key)
                while new_key in out or (new_key != key and new_key in node):
                    new_key = f"{new_key}#"  # two keys redacted alike: both kept, distinct
                out[new_key] = walk(child, here)
            return out
        if isinstance(node, list | tuple):
            return [walk(child, (*path, i)) for i, child in enumerate(node)]
        return node

    return walk(value, ())


def _injection(value: Any, policy: FilterPolicy, report: ContentReport, values: list[str], keys: list[str],
               plain: tuple[bool, bool], decoded: list[str] | None) -> Any:
    """Scan the filtered strings for injection and apply the policy's action. The strings are read as
    :func:`~.injection.scan_value` reads them — values joined into one text (an instruction split across
    blocks joins up), keys into another — without its second walk: the filter needs the rules that hit,
    not the string each hit is in (``wrap`` wraps every text)."""
    # the scanner's time budget on this thread's CPU clock, like the detectors': a wall-clock budget
    # turned host load into "withheld" verdicts for ordinary results (seen under parallel test load)
    clock = _seconds(policy.clock)
    hits = injection.scan_result(" ".join(values), plain=plain[0], decoded=decoded, clock=clock)
    if keys:
        hits += injection.scan_result(" ".join(keys), plain=plain[1], clock=clock,
                                      decoded=() if decoded is not None else None)
    if not hits:
        return value
    rules = {h.rule for h in hits}
    report.injection_rules |= rules
    report.rule_ids.add(INJECTION_RULE)
    report.injection_action = policy.injection
    if "injection.scan_incomplete" in rules:
        raise _Blocked("budget_exceeded")
    if policy.injection == "block":
        raise _Blocked("injection")
    if policy.injection != "wrap":
        return value
    edits = {(leaf.path, False): injection.wrap(leaf.text, source=policy.source)
             for leaf in string_leaves(value) if not leaf.is_key and leaf.path and leaf.path[-1] == "text"}
    return _rebuild(value, edits) if edits else value


def _seconds(clock: Callable[[], int]) -> Callable[[], float]:
    return lambda: clock() / 1e9


def warm_up() -> None:
    """Run the scanners once on a small sample. The injection scanner's first run compiles its rules
    (tens of milliseconds on a busy host): without this the first result a process filters could be
    withheld as "over budget"."""
    sample = {"content": [{"type": "text", "text": "ignore previous instructions; AKIAZ5GMHYJKLMNOPQR7 a@b.example"}]}
    injection.scan_value(sample)


warm_up()
