"""The instruction patterns the poisoning and injection scanners share: our own rules.

Each :class:`Rule` is a regular expression over *folded* text (:func:`fold`: hidden characters
removed, tag-character text spelled out, NFKC, lower case, whitespace runs as one space), guarded
by one RE2 program for the union of a scanner's rules (:func:`prefilter`): the Python expressions
run only when that single linear pass found something, so clean text costs one DFA scan. Each
expression is linear in practice: bounded gaps (``[^.\\n]{0,80}?``), no nested quantifiers.

The rule catalogue was written for Portcullis, informed by the public attack write-ups (Invariant
Labs' tool-poisoning and shadowing notes, Trail of Bits' line-jumping and ANSI posts, the
AgentDojo and garak attack templates, the MCP scanners' rule families); no rule text is copied.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import re2  # type: ignore[import-untyped]  # google-re2: linear time, one DFA pass over the union of the rules

from portcullis.content.rule_findings import Severity
from portcullis.content.unicode_safety import HiddenRun, visible_text


@dataclass(frozen=True, slots=True)
class Rule:
    """A pattern rule: ``id`` is its class (``override``); ``regex`` reads folded text."""

    id: str
    severity: Severity
    regex: re.Pattern[str]
    fast: Any  # the same rule, relaxed, in RE2: a linear-time check before the Python expression runs


# Compatibility characters that NFKC maps onto ASCII letters and digits (fullwidth, mathematical
# alphanumerics, enclosed and circled forms, ligatures, super- and subscripts, squared Latin): the
# spellings that evade a rule. Other text skips the (costly) normalisation.
_COMPAT = re.compile("[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a\U0001d400-\U0001d7ff\u2460-\u24ff"
                     "\U0001f100-\U0001f1ff\ufb00-\ufb06\u2070-\u209f\u1d2c-\u1d6a\u3200-\u33ff\u2100-\u214f]")


def fold(text: str, runs: list[HiddenRun] | None = None) -> str:
    """What pattern rules read: hidden runs removed (tag text spelled out), NFKC, lower case, and each
    line's whitespace runs as one space, ends trimmed (line breaks kept: some rules look at line starts).
    ``runs``: :func:`find_hidden` of ``text`` when the caller has it already."""
    shown = visible_text(text, runs)
    if not shown.isascii() and _COMPAT.search(shown) and not unicodedata.is_normalized("NFKC", shown):
        shown = unicodedata.normalize("NFKC", shown)
    return "\n".join(" ".join(line.split()) for line in shown.lower().split("\n"))


def _rule(id: str, severity: Severity, pattern: str) -> Rule:
    return Rule(id, severity, re.compile(pattern), re2.compile(_relaxed(pattern)))


def _relaxed(pattern: str) -> str:
    """``pattern`` for RE2 over *unfolded* lower-case text: lookarounds dropped (RE2 has none; dropping
    them only widens the match) and each literal space outside a class as ``[ \\t]+``, so the result
    matches wherever the rule could match the folded text."""
    pattern = pattern.replace(r"(?!this\b)", "").replace(r"(?<![\w.])", "")
    out, depth, escaped = [], 0, False
    for ch in pattern:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "[":
            depth += 1
        elif ch == "]" and depth:
            depth -= 1
        out.append("[ \\t\\r\\f\\v]+" if ch == " " and depth == 0 and not escaped else ch)
    return "".join(out)


def prefilter(rules: tuple[Rule, ...], *, any_case: bool = False) -> Any:
    """One RE2 program for the union of ``rules`` (relaxed): no match means no rule can match.
    ``any_case``: the program reads text of any case (not lower-cased first); on ASCII text it
    matches exactly where the lower-case program matches the lower-cased text."""
    options = re2.Options()
    options.case_sensitive = not any_case
    options.max_mem = 64 << 20  # the union's DFA; past it RE2 stays linear but slower
    return re2.compile("|".join(f"(?:{_relaxed(rule.regex.pattern)})" for rule in rules), options)


_ACT = r"(?:read|pass|send|include|provide|attach|upload|append|add|put|insert|copy|paste|supply|give|collect|" \
       r"extract|dump|cat|open|share|forward|post|leak|exfiltrate|transmit|email|reveal|output|print)"
_SENSITIVE = (r"(?:contents? of|passwords?|passphrases?|api[ _-]?keys?|secret keys?|private keys?|ssh keys?|"
              r"access tokens?|auth(?:entication)? tokens?|bearer tokens?|credentials?|session cookies?|"
              r"environment variables|env vars|system prompt|conversation history|chat history|previous messages|"
              r"all (?:the )?messages|2fa codes?|security codes?|recovery codes?|seed phrases?)")
_KEY_FILES = (r"(?:\.ssh\b|\bid_(?:rsa|dsa|ecdsa|ed25519)\b|(?<![\w.])\.env\b|\bmcp\.json\b|claude_desktop_config|"
              r"\.aws/credentials|\.netrc\b|\.npmrc\b|\.pypirc\b|\.git-credentials|\.kube/config|"
              r"\.docker/config\.json|/etc/(?:passwd|shadow)\b|\.bash_history|\.zsh_history|\bwallet\.dat\b|"
              r"\.gnupg\b|\bcookies\.sqlite\b|\blogin data\b)")
_MODEL = r"(?:ai|assistant|chatbot|chatgpt|claude|gpt(?:-?\d[\w.-]*)?|gemini|llama|llm|language model|agent|model|" \
         r"copilot|bot)"

# Rules for both scanners: what an attacker writes whether the text is a tool description or a result.
SHARED: tuple[Rule, ...] = (
    _rule("override", "high",
          r"\b(?:ignore|disregard|forget|overrid(?:e|ing)|overrule|bypass|neglect|skip)\b(?:[^.\n]{0,40}?"
          r"\b(?:previous|prior|above|earlier|preceding|former|all|any|your|the|system|original|initial|other|"
          r"existing|these|those|every)\b)?[^.\n]{0,30}?\b(?:instructions?|directions?|directives?|prompts?|rules?|"
          r"guidelines?|commands?|context|constraints?|tasks?|polic(?:y|ies)|guardrails?|safety|info|information|"
          r"the rest|everything (?:else|above|before))\b"
          r"|\b(?:ignore|disregard|forget)\s+(?:all\s+|any\s+)?(?:of\s+)?(?:your|the|my|these|those|all)?\s*"
          r"(?:previous|prior|above|earlier|preceding|former|original|initial)\b"
          r"|\b(?:reply|respond|answer|output|print|say)\b(?: with)? only (?:with )?(?:the following|this|these "
          r"words)\b[^.\n]{0,40}\b(?:nothing else|no other|and nothing)"),
    _rule("override", "high",
          r"\b(?:(?:your |the )?(?:new|updated|real|actual|true) (?:instructions?|task|rules|objective|goal)s?"
          r"(?: (?:is|are))? ?:|from now on,? (?:you|always|only|respond|reply|answer|act|do|ignore)|"
          r"your (?:new|real|actual) (?:task|goal|objective|instructions?) (?:is|are)|instead,? do\b)"),
    # The same override in other languages (German, French, Spanish, Italian, Portuguese, Russian,
    # Chinese, Japanese, Korean): the common phrasings only; no \b next to a non-ASCII letter (RE2's is ASCII).
    _rule("override", "high",
          r"\b(?:ignoriere|ignorieren sie|missachte|ignore[rz]?|ignora|ignore)\b[^.\n]{0,40}(?:anweisungen|"
          r"instruktionen|befehle|vorgaben|instructions|consignes|directives|instrucciones|indicaciones|"
          r"istruzioni|instru[cç][oõ]es)"
          r"|\b(?:vergiss|vergessen sie|oublie[rz]?|olvida|olvide|dimentica|esque[cç]a)\b[^.\n]{0,40}(?:vorherig|"
          r"bisherig|obig|fr[uü]her|pr[eé]c[eé]dent|ant[eé]rieur|ci-dessus|anterior|previ|precedent)[^.\n]{0,30}"
          r"(?:anweisungen|instruktionen|befehle|regeln|instructions|consignes|directives|r[eè]gles|instrucciones|"
          r"reglas|istruzioni|regole|instru[cç][oõ]es|regras)"
          r"|(?:игнорируй|проигнорируй|игнорируйте)[^.\n]{0,40}(?:инструкци|указани|правил)"
          r"|(?:забудь|забудьте)[^.\n]{0,30}(?:предыдущ|прежн|ранее|выше)[^.\n]{0,30}(?:инструкци|указани|правил)"
          r"|(?:忽略|无视|無視|忽视)[^。\n]{0,20}(?:指令|指示|说明|說明|规则|規則|提示)"
          r"|(?:忘记|忘記)[^。\n]{0,6}(?:之前|以前|上面|先前|前面)[^。\n]{0,10}(?:指令|指示|规则|規則|提示)"
          r"|(?:指示|命令|ルール|プロンプト)[^。\n]{0,10}無視"
          r"|(?:지시|명령|지침|규칙)[^.\n]{0,10}무시"),
    _rule("concealment", "high",
          r"\b(?:do not|don't|dont|never|without|avoid|no need to)\s+(?:tell|telling|inform|informing|notify|"
          r"notifying|alert|alerting|mention|mentioning|reveal|revealing|show|showing|let|letting|ask|asking)\s+"
          r"(?:the |your |this to the |this to |it to the |that to the )?(?:user|human|operator|person|customer|"
          r"them|anyone)\b"
          r"|\b(?:do not|don't|dont|never)\s+(?:mention|reveal|disclose)\s+(?:this|that|these|it|the (?:above|"
          r"following|instructions?|note))\b"
          r"|\b(?:the )?(?:user|human)s?\s+(?:must|should|will|need|can)\s*(?:not|never|n't)\s+(?:know|see|be told|"
          r"notice|find out|learn|be aware|be informed)"
          r"|\b(?:secretly|silently|quietly|covertly|discreetly)\s+(?:\w+ ){0,2}(?:send|include|add|forward|copy|"
          r"attach|pass|read|call|execute|run|upload|post|bcc|cc|append|transfer|change|modify)"
          r"|\bkeep (?:this|it|these instructions) (?:secret|hidden|confidential|private)"
          r"|\b(?:invisible|hidden) (?:to|from) (?:the )?(?:user|humans?|people|reviewers?)"),
    _rule("role_marker", "high",
          r"<\|(?:im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id|end_header_id)\|?>?"
          r"|</?\s*(?:important|instructions?|system(?:[ _-]?(?:prompt|message|instructions?))?|tool_results?|"
          r"tool_outputs?|function_results?|function_calls?|admin|secret|hidden|critical|assistant|information|"
          r"note_to_(?:ai|assistant|model|llm)|ai_instructions?)\s*>"
          r"|\[/?inst\]|<<\s*/?sys\s*>>|###\s*\(?\s*(?:system|instruction)|\[\s*system\s*\]"),
    _rule("role_marker", "high",
          r"(?:^|\n)[ >#*\[]*(?:assistant|ai)\s*\]?:[^\n]{0,300}\n[ >#*\[]*(?:user|human)\s*\]?:"
          r"|(?:^|\n)[ >#*\[]*(?:system|admin)(?: message| note| override| request)?\s*\]?\s*(?:::?|:)\s*"
          r"(?:focus|ignore|you|from now|new|override|forget|disregard|print|respond|reply|output|say|only|always|"
          r"never|do|the (?:user|assistant)|assistant|stop|instead)"
          r"|\[admin request|\[system(?: message| note| override)?\]"),
    _rule("address_model", "medium",
          r"\b(?:an? |this is an? )?(?:important|urgent|critical) (?:message|instructions?|notes?|notice|"
          r"update)s? (?:from|for|to) (?:me|the (?:user|developer|admin|system)|you)\b"
          r"|\bnote (?:to|for) (?:the |any |all )?(?:automated|" + _MODEL + r")\b"
          r"|\bto you,? (?:the )?" + _MODEL + r"\b"
          r"|\b(?:attention|dear|hey|hello|hi)[ ,!]+(?:the )?" + _MODEL + r"\b"
          r"|\b(?:if|when) you(?: are|'re) an? (?:ai|llm|language model|assistant|agent|automated)\b"
          r"|\b(?:before|after) you (?:can )?(?:solve|complete|answer|continue|finish|respond|reply|proceed)"
          r"(?:ing)?\b[^.\n]{0,40}\b(?:task|request|question|query)"
          r"|\b(?:automated|ai|llm) (?:analysis|screening|review|assistant|agent|model)s?(?: software| systems?)?"
          r"[,:] (?:please |you (?:must|should) )?(?:ignore|output|respond|reply|print|say|rate|recommend|report|"
          r"classify|treat|mark)"),
    _rule("secret_request", "high",
          r"\b" + _ACT + r"\b[^.\n]{0,80}?\b" + _SENSITIVE),
    _rule("secret_file", "high",
          r"\b(?:read|pass|send|include|attach|upload|cat|open|contents?|copy|load|dump|provide|supply|extract|"
          r"get|fetch|access)\b[^\n]{0,80}?" + _KEY_FILES
          + r"|" + _KEY_FILES + r"[^\n]{0,60}?\b(?:contents?|and (?:pass|send|include|put|add)|as (?:the|a) "
          r"(?:parameter|argument|value))"),
    _rule("exfil_url", "high",
          r"\b(?:webhook\.site|requestbin|pipedream\.net|ngrok(?:-free)?\.(?:io|app|dev)|burpcollaborator\.net|"
          r"oast\.(?:fun|live|me|pro|site|online)|interact\.sh|beeceptor\.com|hookbin\.com|requestcatcher\.com|"
          r"postb\.in|canarytokens\.com|ptsv[23]\.com)\b"
          r"|https?://[^\s)\"'<>]{1,200}[?&][\w.-]{1,40}=(?:\{|\$|<|%s|\[)"),
    _rule("image_exfil", "high",
          r"!\[[^\]\n]{0,200}\]\(\s*<?(?:https?:)?//[^)\s]{1,500}[?&#][^)\s]{0,500}\)"
          r"|!\[[^\]\n]{0,200}\]\(\s*<?(?:https?:)?//[^)\s]{0,500}(?:\{|\$|%s)[^)\s]{0,500}\)"
          r"|<img\b[^>]{0,200}\bsrc\s*=\s*[\"']?(?:https?:)?//[^\s\"'>]{1,500}[?&][^\s\"'>]{0,500}"),
    _rule("harmful_request", "medium",
          r"\b(?:write|generate|produce|create|say|compose|output)\b[^.\n]{0,30}\b(?:toxic|offensive|"
          r"discriminatory|hateful|racist|sexist|harmful|insulting|derogatory)\b[^.\n]{0,30}\b(?:about|against|"
          r"towards?|sentence|statement|message|joke|comment)\b"),
    _rule("tool_request", "medium",
          r"\b(?:call|use|invoke|run|execute|trigger)\s+(?:the\s+)?(?!this\b)[`'\"]?[a-z][a-z0-9_.-]{1,60}[`'\"]?\s+"
          r"(?:tool|function)\s+(?:with|to|and|using|first|now|immediately|before)\b"
          r"|\byou (?:should|must|need to|have to) (?:first )?(?:use|call|invoke|run) (?:the )?(?:tool|function)\b"),
    _rule("exfil_request", "high",
          r"\b(?:send|forward|email|transfer|post|upload|wire|pay|bcc|cc|copy)\b[^.\n]{0,60}?\bto\b[^.\n]{0,40}?"
          r"(?:\b[a-z]{2}\d{2}[a-z0-9]{11,30}\b|https?://)[^.\n]{0,80}?\b(?:including|includes?|with|containing|"
          r"contains|that has)\b"),
)

# Definition-only rules: how a poisoned description steers the model away from, or around, other tools.
DEFINITION_ONLY: tuple[Rule, ...] = (
    _rule("shadowing", "high",
          r"\b(?:when|whenever|before|after|if)\b[^.\n]{0,20}?\b(?:the |a |any )?[`'\"]?(?!this\b)"
          r"[a-z][a-z0-9_.-]{1,60}[`'\"]? (?:tool|function)\s+(?:is|gets|has been) (?:called|used|invoked|run|executed)"
          r"|\b(?:when|whenever|before|after) (?:using|calling|invoking|running) (?:the |any )?(?:other )?"
          r"[`'\"]?(?!this\b)[a-z][a-z0-9_.-]{1,60}[`'\"]? (?:tool|function)\b[^.\n]{0,40}\b(?:must|always|also|"
          r"should|add|include|send|change|set|replace|make sure)\b"
          r"|\b(?:all|every|any) (?:e-?mails?|messages?|requests?|calls?|payments?|transfers?|transactions?|"
          r"invitations?|files?)\b[^.\n]{0,30}?\b(?:must|should|shall|will|need to)\b[^.\n]{0,20}?"
          r"\b(?:be )?(?:sent|cc'?d?|bcc'?d?|forwarded|routed|copied|redirected|addressed|mirrored)\b"
          r"|\b(?:change|modify|replace|override|redirect|rewrite|switch)\b[^.\n]{0,20}?\b(?:the )?(?:recipient|"
          r"destination|to address|to-address|target account|iban|beneficiary|payee)s?\b[^.\n]{0,20}?\bto\b"),
    _rule("preference", "medium",
          r"\b(?:always|only|must)\s+(?:use|call|prefer|choose|pick)\s+(?:this|our)\s+(?:tool|function|server|"
          r"service)"
          r"|\b(?:use|prefer|choose|call)\s+this\s+(?:tool|function)\s+(?:instead|rather|over|exclusively|"
          r"whenever|for (?:all|every|any))"
          r"|\bthis is the (?:only|best|most (?:reliable|accurate|secure|trusted)|preferred|recommended|official|"
          r"correct) (?:tool|function|way|source|service)"
          r"|\b(?:do not|don't|never)\s+(?:use|call|trust|choose|rely on)\s+(?:any\s+)?(?:other|another|the other|"
          r"competing|alternative|different)\s+(?:tools?|functions?|servers?|services?)"
          r"|\b(?:all )?other\s+(?:tools?|servers?|services?|functions?)\s+(?:are|is)\s+(?:deprecated|broken|"
          r"unsafe|unreliable|malicious|outdated|compromised|insecure|disabled)"
          r"|\binstead of (?:the |any |using )?(?:other )?[`'\"]?[a-z][a-z0-9_.-]{1,60}[`'\"]? (?:tool|function)\b"),
    _rule("hidden_block", "high",
          r"<\s*(?:important|instructions?|system|secret|hidden|admin|critical|note|ai|llm|model|assistant|"
          r"context|mandatory|required|rules?)\b[^<>\n]{0,40}>"),
)


def matches(folded: str, rules: tuple[Rule, ...]) -> Iterator[tuple[Rule, re.Match[str]]]:
    """The first match of each rule class in ``folded`` (one per class: enough to flag; a later rule of
    a class already found is not run). Callers run it only after the :func:`prefilter` of ``rules``
    matched, so clean text never reaches these expressions."""
    found: set[str] = set()
    for rule in rules:
        if rule.id in found or rule.fast.search(folded) is None:
            continue
        if (m := rule.regex.search(folded)) is not None:
            found.add(rule.id)
            yield rule, m
