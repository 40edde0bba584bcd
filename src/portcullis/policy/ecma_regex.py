"""ECMA-262 regular expressions for manifest patterns, matched in linear time.

JSON Schema says a ``pattern`` is an ECMA-262 regular expression with Unicode support (the ``u``
flag), and a manifest's authors write them for JavaScript-speaking clients too. Python's ``re``
differs in ways that matter for a security check: ``$`` also matches before a final newline,
``\\d`` and ``\\w`` are Unicode-wide, ``\\s`` is another set, ``\\Z``, ``(?i)`` and possessive
quantifiers are accepted. And a backtracking engine lets one hostile argument stall the event
loop on a pattern such as ``^(a+)+$``.

So every manifest pattern (``input_schema``/``output_schema`` ``pattern`` and ``patternProperties``,
and ``policy.constraints[].pattern``) goes through :func:`compile_pattern`, once per manifest load:

1. The pattern must compile as ECMA-262 with the ``u`` flag in ``regress`` (a Rust ECMA-262
   engine): that is the syntax check, so Python-only syntax (``(?i)``, ``(?P<n>…)``, ``\\Z``,
   ``\\A``, ``a++``, ``a{,3}``) and u-mode early errors (``\\-`` outside a class, a lone ``{``)
   are refused.
2. It is translated, construct by construct, into an equivalent RE2 pattern with the ECMA meaning
   spelled out: ``^``/``$`` are start/end of the text only, ``.`` excludes the four line
   terminators, ``\\d``/``\\w``/``\\b`` are ASCII, ``\\s`` is ECMA's WhiteSpace and LineTerminator
   set, escapes become code points. Captures are dropped (only match or no match is needed).
3. Constructs RE2 cannot run in linear time -- lookahead, lookbehind, backreferences -- and those
   without an exact RE2 equivalent (``\\p{Script_Extensions=…}``, most binary properties, lone
   surrogates, counted repetition above 1000) are refused with :class:`PatternError`. Refusing
   is the point: a pattern the gateway cannot evaluate exactly and in linear time never loads.
4. RE2 compiles the translation; matching a value is then linear in its length.

A string that cannot be encoded as UTF-8 (a lone surrogate) matches nothing.
"""

from __future__ import annotations

import functools

import regress
from re2 import Options  # type: ignore[import-untyped]  # google-re2 ships no type information
from re2 import _re2 as _engine  # its pybind11 core: no per-call wrapper cost

MAX_REPEAT = 1000  # RE2's limit on a counted repetition
_OPTIONS = Options()
_OPTIONS.log_errors = False
_OPTIONS.never_capture = True
_UNANCHORED = _engine.RE2.Anchor.UNANCHORED
_BOTH = _engine.RE2.Anchor.ANCHOR_BOTH

_SYNTAX = frozenset("^$\\.*+?()[]{}|/")
_CONTROL = {"f": 0x0C, "n": 0x0A, "r": 0x0D, "t": 0x09, "v": 0x0B}
_DIGITS = ((0x30, 0x39),)
_WORD = ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A))
_SPACE = ((0x09, 0x0D), (0x20, 0x20), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A), (0x2028, 0x2029),
          (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000), (0xFEFF, 0xFEFF))
_LINE_TERMINATORS = ((0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029))
_ALL = ((0, 0x10FFFF),)
# General_Category values (ECMA long and short names) that RE2 knows by their short name.
_CATEGORIES = {
    "Other": "C", "Control": "Cc", "Format": "Cf", "Private_Use": "Co", "Surrogate": "Cs",
    "Letter": "L", "Lowercase_Letter": "Ll", "Modifier_Letter": "Lm", "Other_Letter": "Lo",
    "Titlecase_Letter": "Lt", "Uppercase_Letter": "Lu", "Mark": "M", "Spacing_Mark": "Mc",
    "Enclosing_Mark": "Me", "Nonspacing_Mark": "Mn", "Number": "N", "Decimal_Number": "Nd",
    "Letter_Number": "Nl", "Other_Number": "No", "Punctuation": "P", "Connector_Punctuation": "Pc",
    "Dash_Punctuation": "Pd", "Close_Punctuation": "Pe", "Final_Punctuation": "Pf",
    "Initial_Punctuation": "Pi", "Other_Punctuation": "Po", "Open_Punctuation": "Ps", "Symbol": "S",
    "Currency_Symbol": "Sc", "Modifier_Symbol": "Sk", "Math_Symbol": "Sm", "Other_Symbol": "So",
    "Separator": "Z", "Line_Separator": "Zl", "Paragraph_Separator": "Zp", "Space_Separator": "Zs",
}
_CATEGORIES |= {short: short for short in list(_CATEGORIES.values())}
_CATEGORIES |= {"digit": "Nd", "punct": "P", "Combining_Mark": "M"}
_BINARY = {"Any": _ALL, "ASCII": ((0, 0x7F),), "ASCII_Hex_Digit": ((0x30, 0x39), (0x41, 0x46), (0x61, 0x66))}


class PatternError(ValueError):
    """The pattern is not ECMA-262, or cannot be evaluated exactly in linear time; the message says why."""


class EcmaPattern:
    """A compiled manifest pattern: :meth:`search` (JSON Schema) and :meth:`fullmatch` (policy constraints)."""

    __slots__ = ("_compiled", "source", "translated")

    def __init__(self, source: str, translated: str) -> None:
        compiled = _engine.RE2(translated.encode("utf-8"), _OPTIONS)
        if not compiled.ok():
            error = compiled.error()
            raise PatternError(error.decode("utf-8", "replace") if isinstance(error, bytes) else str(error))
        self.source = source
        self.translated = translated
        self._compiled = compiled

    def search(self, text: str) -> bool:
        """True if the pattern matches somewhere in ``text`` (JSON Schema ``pattern`` semantics)."""
        return self._match(_UNANCHORED, text)

    def fullmatch(self, text: str) -> bool:
        """True if the pattern matches the whole of ``text``."""
        return self._match(_BOTH, text)

    def _match(self, anchor: object, text: str) -> bool:
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: no ECMA pattern we run can see it
            return False
        return bool(self._compiled.Match(anchor, data, 0, len(data))[0][0] >= 0)

    def __repr__(self) -> str:
        return f"EcmaPattern({self.source!r})"


@functools.lru_cache(maxsize=4096)
def compile_pattern(source: str) -> EcmaPattern:
    """``source`` compiled with ECMA-262 ``u`` semantics (steps in the module doc); raises :class:`PatternError`."""
    return EcmaPattern(source, translate(source))


def translate(source: str) -> str:
    """The RE2 pattern equivalent to the ECMA-262 (``u`` flag) pattern ``source``; raises :class:`PatternError`."""
    if not isinstance(source, str):
        raise PatternError("a pattern must be a string")
    try:
        regress.Regex(source, "u")
    except regress.RegressError as exc:
        raise PatternError(f"not an ECMA-262 regular expression: {exc}") from None
    except (ValueError, TypeError) as exc:  # e.g. a lone surrogate the binding cannot pass on
        raise PatternError(f"not an ECMA-262 regular expression: {exc}") from None
    return _Translator(source).pattern()


# ----------------------------------------------------------------------------- translation


def _code(value: int) -> str:
    return f"\\x{{{value:X}}}"


def _ranges(ranges: tuple[tuple[int, int], ...] | list[tuple[int, int]]) -> str:
    return "".join(_code(lo) if lo == hi else f"{_code(lo)}-{_code(hi)}" for lo, hi in ranges)


def _complement(ranges: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    result, start = [], 0
    for lo, hi in sorted(ranges):
        if lo > start:
            result.append((start, lo - 1))
        start = max(start, hi + 1)
    if start <= 0x10FFFF:
        result.append((start, 0x10FFFF))
    return tuple(result)


class _Translator:
    """A recursive-descent walk over a pattern ``regress`` accepted, emitting RE2 syntax."""

    def __init__(self, source: str) -> None:
        self.src = source
        self.pos = 0

    def pattern(self) -> str:
        out = self.disjunction()
        if self.pos != len(self.src):
            raise PatternError(f"unexpected {self.src[self.pos]!r} at {self.pos}")
        return out

    # -- helpers

    def peek(self, offset: int = 0) -> str:
        index = self.pos + offset
        return self.src[index] if index < len(self.src) else ""

    def take(self) -> str:
        if self.pos >= len(self.src):
            raise PatternError("unexpected end of pattern")
        char = self.src[self.pos]
        self.pos += 1
        return char

    def expect(self, char: str) -> None:
        if self.take() != char:
            raise PatternError(f"expected {char!r} at {self.pos - 1}")

    def unsupported(self, what: str) -> PatternError:
        return PatternError(f"{what}: not supported in manifest patterns (no exact linear-time equivalent)")

    # -- structure

    def disjunction(self) -> str:
        parts = [self.alternative()]
        while self.peek() == "|":
            self.pos += 1
            parts.append(self.alternative())
        return "|".join(parts)

    def alternative(self) -> str:
        out = []
        while self.peek() not in ("", "|", ")"):
            out.append(self.term())
        return "".join(out)

    def term(self) -> str:
        char = self.peek()
        if char == "^":
            self.pos += 1
            return "\\A"
        if char == "$":
            self.pos += 1
            return "\\z"
        if char == "\\" and self.peek(1) in ("b", "B"):
            self.pos += 2
            return "\\" + self.src[self.pos - 1]  # ASCII word boundary in both without the i flag
        if char == "(" and self.peek(1) == "?" and (self.peek(2) in ("=", "!") or
                                                   (self.peek(2) == "<" and self.peek(3) in ("=", "!"))):
            raise self.unsupported("lookahead and lookbehind")
        return self.atom() + self.quantifier()

    def quantifier(self) -> str:
        char = self.peek()
        if char in ("*", "+", "?"):
            self.pos += 1
            out = char
        elif char == "{":
            self.pos += 1
            low = self.number()
            high: int | None = low
            if self.peek() == ",":
                self.pos += 1
                high = self.number() if self.peek() != "}" else None
            self.expect("}")
            if low > MAX_REPEAT or (high is not None and high > MAX_REPEAT):
                raise PatternError(f"counted repetition above {MAX_REPEAT} is not supported")
            out = f"{{{low}}}" if high == low else f"{{{low},}}" if high is None else f"{{{low},{high}}}"
        else:
            return ""
        if self.peek() == "?":
            self.pos += 1
            out += "?"
        return out

    def number(self) -> int:
        start = self.pos
        while self.peek().isascii() and self.peek().isdigit():
            self.pos += 1
        if start == self.pos:
            raise PatternError(f"expected a number at {start}")
        return int(self.src[start:self.pos])

    def atom(self) -> str:
        char = self.take()
        if char == ".":
            return f"[^{_ranges(_LINE_TERMINATORS)}]"
        if char == "(":
            if self.peek() == "?":
                if self.peek(1) == ":":
                    self.pos += 2
                elif self.peek(1) == "<":
                    self.pos += 2
                    while self.take() != ">":
                        pass
                else:
                    raise self.unsupported("this group modifier")
            inner = self.disjunction()
            self.expect(")")
            return f"(?:{inner})"
        if char == "[":
            return self.character_class()
        if char == "\\":
            return self.atom_escape()
        if char in _SYNTAX - {"/"}:
            raise PatternError(f"unexpected {char!r} at {self.pos - 1}")
        return _code(ord(char))

    # -- escapes

    def atom_escape(self) -> str:
        char = self.peek()
        if char.isascii() and char.isdigit() and char != "0":
            raise self.unsupported("a backreference")
        if char == "k":
            raise self.unsupported("a backreference")
        ranges = self.class_escape_ranges()
        if ranges is not None:
            return ranges
        return _code(self.character_escape())

    def class_escape_ranges(self) -> str | None:
        """``\\d \\D \\w \\W \\s \\S \\p{…} \\P{…}`` (the backslash already read) as an RE2 class, else None."""
        char = self.peek()
        sets = {"d": _DIGITS, "w": _WORD, "s": _SPACE}
        if char.lower() in sets:
            self.pos += 1
            ranges = sets[char.lower()]
            return f"[{_ranges(ranges if char.islower() else _complement(ranges))}]"
        if char in ("p", "P"):
            self.pos += 1
            return self.property(negated=char == "P")
        return None

    def property(self, *, negated: bool) -> str:
        self.expect("{")
        end = self.src.find("}", self.pos)
        if end < 0:
            raise PatternError("unterminated property escape")
        body, self.pos = self.src[self.pos:end], end + 1
        name, _, value = body.partition("=")
        if not value:
            name, value = "General_Category", name
        binary = _BINARY.get(value) if name == "General_Category" else None
        if binary is not None:
            ranges = _complement(binary) if negated else binary
            if not ranges:
                raise self.unsupported(f"the property escape \\P{{{body}}} (it matches nothing)")
            return f"[{_ranges(ranges)}]"
        if name in ("General_Category", "gc") and value in _CATEGORIES:
            token = _CATEGORIES[value]
        elif name in ("Script", "sc") and value.isascii() and value.replace("_", "").isalpha():
            token = value  # RE2 knows scripts by their long names; compiling refuses the rest
        else:
            raise self.unsupported(f"the property escape \\p{{{body}}}")
        return ("\\P{%s}" if negated else "\\p{%s}") % token

    def character_escape(self) -> int:
        """One character escape (the backslash already read) as a code point."""
        char = self.take()
        if char in _CONTROL:
            return _CONTROL[char]
        if char == "c":
            return ord(self.take()) % 32
        if char == "0":
            return 0
        if char == "x":
            return int(self.take() + self.take(), 16)
        if char == "u":
            if self.peek() == "{":
                self.pos += 1
                end = self.src.index("}", self.pos)
                value, self.pos = int(self.src[self.pos:end], 16), end + 1
            else:
                value = self.hex4()
                if 0xD800 <= value <= 0xDBFF and self.src.startswith("\\u", self.pos):
                    saved = self.pos
                    self.pos += 2
                    low = self.hex4()
                    if 0xDC00 <= low <= 0xDFFF:
                        return 0x10000 + ((value - 0xD800) << 10) + (low - 0xDC00)
                    self.pos = saved
            if 0xD800 <= value <= 0xDFFF:
                raise self.unsupported("a lone surrogate")
            return value
        if char in _SYNTAX or char == "-":
            return ord(char)
        raise PatternError(f"unknown escape \\{char}")

    def hex4(self) -> int:
        digits = self.src[self.pos:self.pos + 4]
        self.pos += 4
        return int(digits, 16)

    # -- classes

    def character_class(self) -> str:
        negated = self.peek() == "^"
        if negated:
            self.pos += 1
        items: list[str] = []
        while self.peek() != "]":
            low = self.class_atom()
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.pos += 1
                high = self.class_atom()
                if not isinstance(low, int) or not isinstance(high, int):
                    raise PatternError("a class escape cannot bound a range")
                items.append(f"{_code(low)}-{_code(high)}")
            else:
                items.append(_code(low) if isinstance(low, int) else low)
        self.expect("]")
        if not items:  # [] matches nothing, [^] any character
            return f"[{_ranges(_ALL)}]" if negated else "[^" + _ranges(_ALL) + "]"
        return ("[^" if negated else "[") + "".join(items) + "]"

    def class_atom(self) -> int | str:
        """A code point, or the inside of an RE2 class for a class escape."""
        char = self.take()
        if char != "\\":
            return ord(char)
        if self.peek() == "b":
            self.pos += 1
            return 0x08
        escape = self.class_escape_ranges()
        if escape is not None:
            return escape[1:-1] if not escape.startswith("\\") else escape
        return self.character_escape()
