"""Tool-poisoning scanner: what in a tool definition is addressed to the model rather than describing the tool.

:func:`scan_definition` reads a wire-format tool definition (``name``, ``title``, ``description``,
``inputSchema`` and ``outputSchema`` with every nested ``title`` / ``description`` / ``default`` /
``examples`` / ``enum`` / ``const`` string and property name, ``annotations``) and returns
:class:`~portcullis.content.rule_findings.Finding` s, each with a rule id ``poisoning.<class>``, a
severity, the JSON pointer of the field and an escaped excerpt. Classes:

1. ``invisible_unicode`` / ``terminal_escape`` — hidden characters (:mod:`unicode_safety`); hidden
   tag-character text is decoded into the finding and scanned like the rest;
2. ``hidden_block``, ``role_marker``, ``override``, ``concealment``, ``address_model`` — instruction
   blocks and text addressed to the model (:mod:`patterns`);
3. ``secret_request``, ``secret_file`` — asks to read or pass keys, tokens, files like ``~/.ssh/id_rsa``;
4. ``shadowing`` — instructions about other tools (and any mention of a tool named in ``other_tools``);
5. ``preference`` — "always use this tool", "other tools are deprecated";
6. ``padding`` — text after a long run of blank lines or whitespace (pushed off screen);
7. ``exfil_url``, ``image_exfil``, ``tool_request``, ``exfil_request`` — collection URLs, data-carrying images;
   ``encoded_instruction`` — base64 (twice at most) that decodes to text a rule flags;
8. ``suspicious_parameter`` — a free-text parameter (``sidenote``, ``notes``, ``context``, …) whose
   description asks for data; ``suspicious_default`` — a default, example, enum or const value with
   key material, a shell command or a URL to a host outside ``allowed_hosts``.

Pure and bounded: at most ``MAX_STRINGS`` strings of at most ``MAX_CHARS`` characters each are read,
and past ``budget_s`` of scanning the answer is a ``poisoning.scan_incomplete`` finding (blocks, never
"clean"). Every finding blocks the tool until a person reviews it (``portcullis pin``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from portcullis.content.encoded import decoded_texts
from portcullis.content.patterns import DEFINITION_ONLY, SHARED, Rule, fold, matches, prefilter
from portcullis.content.rule_findings import Finding, excerpt, pointer_token
from portcullis.content.unicode_safety import find_hidden, hidden_findings

MAX_STRINGS = 5000
MAX_CHARS = 65_536
MAX_DEPTH = 64
DEFAULT_BUDGET_S = 0.25
_RULES: tuple[Rule, ...] = SHARED + DEFINITION_ONLY
_PREFILTER = prefilter(_RULES)
_TEXT_KEYS = frozenset({"title", "description", "$comment", "pattern", "format", "contentMediaType"})
_VALUE_KEYS = frozenset({"default", "examples", "enum", "const", "example"})
_FREE_TEXT_PARAMS = re.compile(r"(?:side_?notes?|notes?|context|extra|metadata|feedback|debug|comments?|reasoning|"
                               r"explanation|hidden|internal|details|summary|memo|annotations?|remarks?|"
                               r"additional_?\w*|extra_?\w*)", re.IGNORECASE)
_ASKS_FOR_DATA = re.compile(r"\b(?:secret|password|passphrase|api[ _-]?key|token|credential|private key|ssh|"
                            r"(?:contents?|text) of (?:the |your |any )?(?:config|configuration|\.?env|ssh|"
                            r"credential|secret|mcp|system prompt|conversation)|conversation|chat history|"
                            r"previous messages|system prompt|"
                            r"environment variables?|everything (?:you|the user)|all (?:the )?(?:data|information) "
                            r"(?:you|the user))")
_KEY_MATERIAL = re.compile(r"-----begin [a-z0-9 ]{0,20}private key|\bakia[0-9a-z]{16}\b|\bgh[pousr]_[a-z0-9]{30,}|"
                           r"\bsk-[a-z0-9_-]{20,}|\bxox[abprs]-[a-z0-9-]{10,}|\bglpat-[a-z0-9_-]{20}")
_SHELL = re.compile(r"\b(?:curl|wget|nc|ncat|netcat|bash|sh|zsh|powershell|pwsh|python3?|perl|ruby|php)\b[^\n]{0,80}?"
                    r"(?:\||;|&&|\s-c\b|\s-e\b|\bhttps?://)|\brm\s+-[rf]{2}\b|\$\([^)]{1,80}\)|`[^`\n]{1,80}`|"
                    r"\bchmod\s+\+x\b|\bbase64\s+-d\b")
_RESERVED_HOSTS = ("example.com", "example.org", "example.net", "example", "localhost", "test", "invalid")  # RFC 2606
_URL = re.compile(r"\b(?:https?|ftp|wss?)://[^\s\"'<>)]{1,500}")
_PADDING = re.compile(r"(?:[^\S\n]*\n){8,}[^\S\n]*|[^\S\n]{40,}")  # 8+ line breaks, or 40+ blanks in a row


def scan_definition(tool: Mapping[str, Any], *, other_tools: Iterable[str] = (),
                    allowed_hosts: Iterable[str] = (), budget_s: float = DEFAULT_BUDGET_S,
                    clock: Any = time.thread_time) -> list[Finding]:
    """Every finding in the wire-format tool definition ``tool`` (camelCase keys, as ``tools/list`` sends).

    ``other_tools``: names of tools of *other* services (exposed or upstream names); a description
    that mentions one is flagged as shadowing. ``allowed_hosts``: hosts a default or example URL may
    name (exact, or a suffix after a dot). ``clock``: a ``() -> seconds`` callable, this thread's CPU time by
    default (host load never makes a definition look poisoned; injected in tests).
    """
    own = str(tool.get("name", ""))
    others = tuple(sorted({name for name in other_tools if name and name != own and len(name) >= 3}))
    hosts = tuple(h.lower().rstrip(".") for h in allowed_hosts)
    deadline = clock() + budget_s
    findings: list[Finding] = []
    for count, (pointer, kind, text) in enumerate(_strings(tool)):
        if count >= MAX_STRINGS or clock() > deadline:
            return [*findings, Finding("poisoning.scan_incomplete", "high", pointer, "",
                                       "definition too large or scan over its time budget: treated as poisoned")]
        findings += _scan_string(pointer, kind, text[:MAX_CHARS], others, hosts)
        if len(text) > MAX_CHARS:
            findings.append(Finding("poisoning.oversized_field", "high", pointer, excerpt(text, MAX_CHARS, MAX_CHARS),
                                    f"{len(text)} characters: the rest was not read"))
    return _dedupe(findings)


def _strings(tool: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(pointer, kind, text) for each string a model may read: kind is text | name | value | param:<name>."""
    for key in ("name", "title", "description"):
        if isinstance(value := tool.get(key), str):
            yield f"/{key}", "name" if key == "name" else "text", value
    for key in ("inputSchema", "outputSchema"):
        if isinstance(schema := tool.get(key), Mapping):
            yield from _schema_strings(schema, f"/{key}", 0)
    if isinstance(annotations := tool.get("annotations"), Mapping):
        for key, value in annotations.items():
            if isinstance(value, str):
                yield f"/annotations/{pointer_token(key)}", "text", value


def _schema_strings(node: Any, pointer: str, depth: int) -> Iterator[tuple[str, str, str]]:
    if depth > MAX_DEPTH:
        yield pointer, "text", "\x00schema nested too deep"  # a control character: flagged, never skipped
        return
    if isinstance(node, Mapping):
        for key, value in node.items():
            here = f"{pointer}/{pointer_token(key)}"
            if key == "properties" and isinstance(value, Mapping):
                for name, sub in value.items():
                    at = f"{here}/{pointer_token(name)}"
                    yield at, "name", str(name)
                    if isinstance(sub, Mapping) and isinstance(sub.get("description"), str):
                        yield f"{at}/description", f"param:{name}", sub["description"]
                    yield from _schema_strings(sub, at, depth + 1)
            elif key in _TEXT_KEYS and isinstance(value, str):
                if not (key == "description" and pointer.rsplit("/", 2)[-2:-1] == ["properties"]):
                    yield here, "text", value
            elif key in _VALUE_KEYS:
                yield from _values(value, here, depth + 1)
            else:
                yield from _schema_strings(value, here, depth + 1)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _schema_strings(item, f"{pointer}/{index}", depth + 1)


def _values(value: Any, pointer: str, depth: int) -> Iterator[tuple[str, str, str]]:
    if depth > MAX_DEPTH:
        return
    if isinstance(value, str):
        yield pointer, "value", value
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _values(item, f"{pointer}/{index}", depth + 1)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _values(item, f"{pointer}/{pointer_token(key)}", depth + 1)


def _scan_string(pointer: str, kind: str, text: str, others: tuple[str, ...],
                 hosts: tuple[str, ...]) -> list[Finding]:
    runs = find_hidden(text)
    hidden_rule = {"unicode.terminal_escape": "poisoning.terminal_escape"}
    found = [Finding(hidden_rule.get(f.rule, "poisoning.invisible_unicode"), f.severity, f.pointer, f.excerpt, f.detail)
             for f in hidden_findings(text, pointer, runs=runs)]
    folded = fold(text, runs)
    for rule, m in matches(folded, _RULES) if _PREFILTER.search(folded) else ():
        found.append(Finding(f"poisoning.{rule.id}", rule.severity, pointer, excerpt(folded, m.start(), m.end())))
    found += _encoded(pointer, text)
    if (pad := _PADDING.search(text)) is not None and text[pad.end():].strip():
        found.append(Finding("poisoning.padding", "high", pointer, excerpt(text, pad.end(), pad.end() + 40, 0),
                             f"text after {len(pad.group())} blank characters ({pad.group().count(chr(10))} lines)"))
    if kind != "value":
        for name in others:
            at = _mentions(folded, name.lower())
            if at >= 0:
                found.append(Finding("poisoning.shadowing", "medium", pointer, excerpt(folded, at, at + len(name)),
                                     "names a tool of another service"))
                break
    if kind.startswith("param:") and _FREE_TEXT_PARAMS.fullmatch(kind[6:]) and (m2 := _ASKS_FOR_DATA.search(folded)):
        found.append(Finding("poisoning.suspicious_parameter", "high", pointer, excerpt(folded, m2.start(), m2.end()),
                             "a free-text parameter whose description asks for data"))
    if kind == "value":
        found += _suspicious_value(pointer, text, folded, hosts)
    return found


def _encoded(pointer: str, text: str, depth: int = 0) -> list[Finding]:
    """``encoded_instruction`` for the first base64 run (or base64 of base64) that decodes to flagged text."""
    for start, end, decoded in decoded_texts(text):
        folded = fold(decoded)
        rules = sorted({f"poisoning.{rule.id}" for rule, _ in matches(folded, _RULES)} if _PREFILTER.search(folded)
                       else set())
        if not rules and depth < 1 and _encoded(pointer, decoded, depth + 1):
            rules = ["base64 again"]
        if rules:
            return [Finding("poisoning.encoded_instruction", "high", pointer, excerpt(text, start, end),
                            f"base64 of {excerpt(decoded, 0, len(decoded), 0)!r} ({', '.join(rules)})")]
    return []


def _mentions(folded: str, name: str) -> int:
    start = folded.find(name)
    while start >= 0:
        before = folded[start - 1] if start else " "
        after = folded[start + len(name)] if start + len(name) < len(folded) else " "
        if not (before.isalnum() or before in "_-") and not (after.isalnum() or after in "_-"):
            return start
        start = folded.find(name, start + 1)
    return -1


def _suspicious_value(pointer: str, text: str, folded: str, hosts: tuple[str, ...]) -> list[Finding]:
    found = []
    if (m := _KEY_MATERIAL.search(folded)) is not None:
        found.append(Finding("poisoning.suspicious_default", "high", pointer, excerpt(folded, m.start(), m.start() + 12,
                                                                                        0), "key material"))
    if (m := _SHELL.search(folded)) is not None:
        found.append(Finding("poisoning.suspicious_default", "high", pointer, excerpt(folded, m.start(), m.end()),
                             "a shell command"))
    for url in _URL.finditer(text) if hosts else ():  # no allow-list: exfil_url judges URLs on their own
        try:
            host = (urlsplit(url.group()).hostname or "").lower().rstrip(".")
        except ValueError:  # malformed (an unclosed IPv6 bracket): not a host we allow
            host = ""
        if not any(host == h or host.endswith("." + h) for h in (*hosts, *_RESERVED_HOSTS)):
            found.append(Finding("poisoning.suspicious_default", "high", pointer, excerpt(text, url.start(), url.end()),
                                 "a URL to a host outside the allow-list"))
            break
    return found


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen: set[tuple[str, str]] = set()
    out = []
    for finding in findings:
        if (finding.rule, finding.pointer) not in seen:
            seen.add((finding.rule, finding.pointer))
            out.append(finding)
    return out
