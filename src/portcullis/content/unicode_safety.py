"""Invisible and control characters: find them, and report, strip or escape them, per policy.

What counts as hostile (each a rule id, ``unicode.<kind>``):

* ``tag_characters`` — U+E0000..U+E007F ("ASCII smuggling": text a person cannot see, a model reads),
  except a well-formed emoji tag sequence (a black flag, lowercase/digit tags, CANCEL TAG);
* ``bidi_control`` — embeddings, overrides and isolates (U+202A..U+202E, U+2066..U+2069). The marks
  LRM, RLM and ALM are not: right-to-left text needs them and they reorder nothing;
* ``zero_width`` — ZWSP, WORD JOINER, invisible math operators, a BOM past the first character, a
  Mongolian vowel separator outside Mongolian, and ZWNJ / ZWJ *except* between two letters of a
  script that uses them (Arabic, Persian, Syriac, the Indic scripts, …) or, for ZWJ, between two
  emoji (a family emoji). ZWSP between Thai, Lao, Khmer or Myanmar letters (word breaks) is kept;
* ``control`` — C0 and C1 controls other than tab, line feed and carriage return;
* ``terminal_escape`` — a whole ANSI / OSC / CSI escape sequence (colour, cursor moves, hyperlinks);
* ``variation_selector`` — a selector that does not follow a base character, or a run of them (the
  "emoji smuggling" encoding); one selector after a base is kept (an emoji's VS16, an ideographic variation selector);
* ``deprecated_format`` — U+206A..U+206F, interlinear annotation U+FFF9..U+FFFB, Hangul fillers.

Everything else is left alone: CJK, Arabic and Hebrew, combining marks, emoji sequences, ordinary
whitespace. :func:`find_hidden` is pure and linear; plain ASCII text costs one regex scan.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from dataclasses import dataclass

from portcullis.content.rule_findings import Finding, Severity, excerpt


class HiddenPolicy(enum.StrEnum):
    """What :func:`normalise` does with a hostile run."""

    REPORT = "report"  # leave the text as it is; findings only
    STRIP = "strip"  # remove the run
    ESCAPE = "escape"  # replace each character by a visible \u{XXXX}


@dataclass(frozen=True, slots=True)
class HiddenRun:
    """A run of adjacent hostile characters of one kind: ``text[start:end]``."""

    kind: str
    start: int
    end: int
    decoded: str = ""  # the ASCII a tag-character run spells, or the bytes variation selectors encode


@dataclass(frozen=True, slots=True)
class Normalised:
    text: str
    runs: tuple[HiddenRun, ...]


_SEVERITY: dict[str, Severity] = {"tag_characters": "high", "bidi_control": "high", "terminal_escape": "high",
                                  "variation_selector": "high", "zero_width": "medium", "control": "medium",
                                  "deprecated_format": "medium"}

# Every code point that may be hostile (context decides for some): the fast path is one search.
_CANDIDATE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u115f\u1160\u180e\u200b\u200c\u200d\u202a-\u202e\u2060-\u2064"
    "\u2066-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb\U000e0000-\U000e007f\U000e0100-\U000e01ef]")
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]|\x9b[0-?]*[ -/]*[@-~]")

_BIDI = frozenset(range(0x202A, 0x202F)) | frozenset(range(0x2066, 0x206A))
_DEPRECATED = frozenset(range(0x206A, 0x2070)) | {0xFFF9, 0xFFFA, 0xFFFB, 0x115F, 0x1160, 0x3164, 0xFFA0}
_ZW_ALWAYS = frozenset({0x2060, 0x2061, 0x2062, 0x2063, 0x2064})
_FLAG, _CANCEL_TAG = 0x1F3F4, 0xE007F
# Scripts whose orthography uses ZWNJ / ZWJ between letters (start, end inclusive).
_JOINING_SCRIPTS = ((0x0600, 0x08FF), (0x0900, 0x0DFF), (0x0F00, 0x0FFF), (0x1000, 0x109F), (0x1780, 0x18AF),
                    (0xA8E0, 0xA8FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF), (0x11000, 0x111FF))
_WORD_BREAK_SCRIPTS = ((0x0E00, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF))  # Thai, Lao, Myanmar, Khmer


def _in(cp: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(lo <= cp <= hi for lo, hi in ranges)


def _is_emoji(ch: str) -> bool:
    cp = ord(ch)
    return (0x1F000 <= cp <= 0x1FAFF or 0x2600 <= cp <= 0x27BF or cp in (0xFE0F, 0x2640, 0x2642, 0x2695, 0x2708,
                                                                          0x2764, 0x2B50, 0x2B1B, 0x2B1C))


def _is_letter_or_mark(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LM"


def _legit_joiner(text: str, i: int) -> bool:
    """ZWNJ / ZWJ at ``i`` sits between two letters (or marks) of a joining script, or ZWJ between emoji."""
    if i == 0:
        return False
    before = text[i - 1]
    if unicodedata.category(before) == "Mn" and _in(ord(before), _JOINING_SCRIPTS):
        return True  # after a virama or other sign: conjunct and chillu forms, even at a word's end
    if i + 1 >= len(text):
        return False
    after = text[i + 1]
    if text[i] == "\u200d" and _is_emoji(before) and _is_emoji(after):
        return True
    return (_is_letter_or_mark(before) and _is_letter_or_mark(after)
            and _in(ord(before), _JOINING_SCRIPTS) and _in(ord(after), _JOINING_SCRIPTS))


def _is_selector(ch: str) -> bool:
    return 0xFE00 <= ord(ch) <= 0xFE0F or 0xE0100 <= ord(ch) <= 0xE01EF


def _legit_selector(text: str, i: int) -> bool:
    """One variation selector right after a visible base character (not after another selector)."""
    if i == 0:
        return False
    before = text[i - 1]
    if _CANDIDATE.match(before):
        return False  # after a selector, a control or another hidden character
    category = unicodedata.category(before)
    return category[0] in "LNSP" or category == "Mn"


def _tag_sequence_end(text: str, i: int) -> int:
    """End of a well-formed emoji tag sequence whose tags start at ``i`` (after 🏴), else -1."""
    if i == 0 or ord(text[i - 1]) != _FLAG:
        return -1
    j = i
    while j < len(text) and j - i <= 8 and (0xE0030 <= ord(text[j]) <= 0xE0039 or 0xE0061 <= ord(text[j]) <= 0xE007A):
        j += 1
    if j > i and j < len(text) and ord(text[j]) == _CANCEL_TAG:
        return j + 1
    return -1


def _kind(text: str, i: int, after_hidden: bool = False) -> str | None:
    """The hostile kind of the candidate character at ``i``, or None when its context makes it legitimate.
    ``after_hidden``: the character before it is hostile (a selector then has no visible base)."""
    cp = ord(text[i])
    if 0xE0000 <= cp <= 0xE007F:
        return "tag_characters"
    if cp in _BIDI:
        return "bidi_control"
    if cp in _DEPRECATED:
        return "deprecated_format"
    if _is_selector(text[i]):
        return None if not after_hidden and _legit_selector(text, i) else "variation_selector"
    if cp in (0x200C, 0x200D):
        return None if _legit_joiner(text, i) else "zero_width"
    if cp == 0x200B:
        ok = 0 < i < len(text) - 1 and all(_is_letter_or_mark(c) and _in(ord(c), _WORD_BREAK_SCRIPTS)
                                           for c in (text[i - 1], text[i + 1]))
        return None if ok else "zero_width"
    if cp == 0xFEFF:
        return None if i == 0 else "zero_width"
    if cp == 0x180E:
        ok = 0 < i and 0x1800 <= ord(text[i - 1]) <= 0x18AF and _is_letter_or_mark(text[i - 1])
        return None if ok else "zero_width"
    if cp in _ZW_ALWAYS:
        return "zero_width"
    return "control"  # C0 / C1 (tab, LF, CR never reach here)


def _decode(kind: str, run: str) -> str:
    if kind == "tag_characters":
        return "".join(chr(ord(c) - 0xE0000) for c in run if 0xE0020 <= ord(c) <= 0xE007E)
    if kind == "variation_selector":  # the byte encoding used to smuggle data after an emoji
        data = bytes((ord(c) - 0xFE00) if ord(c) < 0xFE10 else (ord(c) - 0xE0100 + 16) for c in run)
        return data.decode("utf-8", "replace") if len(data) > 1 else ""
    return ""


# the hidden ASCII bytes: C0 controls but tab, LF, CR; DEL
_HIDDEN_BYTES = tuple(b for b in range(0x80) if (b < 0x20 and b not in (0x09, 0x0A, 0x0D)) or b == 0x7F)
_ASCII_HIDDEN = bytes(0 if b in _HIDDEN_BYTES else 1 for b in range(256))  # hidden to 0x00, the rest to 0x01


def plain_ascii(text: str) -> bool:
    """ASCII with no hidden character (no C0 control but tab, line feed and carriage return, no DEL):
    :func:`find_hidden` would find nothing. C-level work only: ``isascii`` (known without a pass), an
    ASCII copy, then a byte ``translate`` marking the controls and a ``memchr`` (short text) or one
    ``memchr`` per hidden byte (long text): under 1 µs on 4 KB, where a regular expression costs 20 µs
    and ``str.isprintable`` (a Unicode database lookup per character) several."""
    if not text.isascii():
        return False
    if len(text) < 64 and text.isprintable():
        return True  # short: a lookup per character beats building two byte strings
    data = text.encode("ascii")
    if len(data) < 256:
        return b"\x00" not in data.translate(_ASCII_HIDDEN)  # a table pass, then a memchr
    return not any(byte in data for byte in _HIDDEN_BYTES)  # 30 memchr passes: cheaper on long text


def find_hidden(text: str) -> list[HiddenRun]:
    """Every hostile run in ``text``, in order; adjacent characters of one kind form one run."""
    first = _CANDIDATE.search(text)
    if first is None:
        return []
    runs: list[HiddenRun] = []
    i, n = first.start(), len(text)
    while i < n:
        ch = text[i]
        if ch in "\x1b\x9b" and (m := _ANSI.match(text, i)) is not None:
            runs.append(HiddenRun("terminal_escape", i, m.end()))
            i = m.end()
        elif 0xE0030 <= ord(ch) <= 0xE007A and (end := _tag_sequence_end(text, i)) > 0:
            i = end  # a flag emoji (🏴 + tags + cancel tag)
        elif _CANDIDATE.match(ch) and (kind := _kind(text, i, bool(runs) and runs[-1].end == i)) is not None:
            start = i
            i += 1
            while i < n and _CANDIDATE.match(text[i]) and text[i] not in "\x1b\x9b" and _kind(text, i, True) == kind:
                i += 1
            if kind == "variation_selector" and start > 0 and _is_selector(text[start - 1]):
                start -= 1  # the first selector after the base belongs to the smuggled run
            runs.append(HiddenRun(kind, start, i, _decode(kind, text[start:i])))
        else:
            i += 1
            nxt = _CANDIDATE.search(text, i)
            i = n if nxt is None else nxt.start()
    return _merge(runs)


def _merge(runs: list[HiddenRun]) -> list[HiddenRun]:
    merged: list[HiddenRun] = []
    for run in runs:
        if merged and merged[-1].kind == run.kind and merged[-1].end >= run.start:
            last = merged.pop()
            run = HiddenRun(run.kind, min(last.start, run.start), run.end, last.decoded + run.decoded)
        merged.append(run)
    return merged


MAX_NORMALISE_PASSES = 16


def normalise(text: str, policy: HiddenPolicy) -> Normalised:
    """``text`` with its hostile runs left (REPORT), removed (STRIP) or shown as ``\\u{XXXX}`` (ESCAPE).

    Removing or escaping a run can leave a neighbour out of the context that made it legitimate
    (a joiner between two variation selectors, once they are gone, joins nothing), so STRIP and
    ESCAPE repeat until no hostile run is left. Every pass removes at least one hidden character,
    so this ends; it is bounded at :data:`MAX_NORMALISE_PASSES`, past which what is left is
    stripped or escaped whatever its context."""
    runs = find_hidden(text)
    if not runs or policy is HiddenPolicy.REPORT:
        return Normalised(text, tuple(runs))
    found = tuple(runs)
    for _ in range(MAX_NORMALISE_PASSES):
        text = _apply(text, runs, policy)
        runs = find_hidden(text)
        if not runs:
            return Normalised(text, found)
    return Normalised("".join(_apply(c, [HiddenRun("zero_width", 0, 1, "")], policy) if _is_hidden_char(c) else c
                              for c in text), found)


def _is_hidden_char(char: str) -> bool:
    return bool(find_hidden(char)) or bool(find_hidden("a" + char + "a"))


def _apply(text: str, runs: list[HiddenRun], policy: HiddenPolicy) -> str:
    out: list[str] = []
    pos = 0
    for run in runs:
        out.append(text[pos:run.start])
        if policy is HiddenPolicy.ESCAPE:
            out.append("".join(c if run.kind == "terminal_escape" and c.isprintable() else f"\\u{{{ord(c):04X}}}"
                               for c in text[run.start:run.end]))
        pos = run.end
    out.append(text[pos:])
    return "".join(out)


def hidden_findings(text: str, pointer: str = "", prefix: str = "unicode",
                    runs: list[HiddenRun] | None = None) -> list[Finding]:
    """:func:`find_hidden` as findings (rule ``<prefix>.<kind>``), the decoded hidden text as detail."""
    found = find_hidden(text) if runs is None else runs
    return [Finding(f"{prefix}.{run.kind}", _SEVERITY[run.kind], pointer, excerpt(text, run.start, run.end),
                    excerpt(run.decoded, 0, len(run.decoded), 0) if run.decoded else "")
            for run in found]


def visible_text(text: str, runs: list[HiddenRun] | None = None) -> str:
    """``text`` with hostile runs removed and tag-character runs replaced by the ASCII they spell,
    so pattern rules read what a model would read (a hidden "ignore previous instructions" included).
    ``runs``: :func:`find_hidden` of ``text`` when the caller has it already."""
    runs = find_hidden(text) if runs is None else runs
    if not runs:
        return text
    out: list[str] = []
    pos = 0
    for run in runs:
        out.append(text[pos:run.start])
        out.append(f" {run.decoded} " if run.decoded else "")
        pos = run.end
    out.append(text[pos:])
    return "".join(out)
