"""Properties of the content scanners over generated text (hypothesis): what must hold for any input."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portcullis.content.injection import scan_result, scan_value, wrap
from portcullis.content.poisoning import scan_definition
from portcullis.content.unicode_safety import HiddenPolicy, find_hidden, normalise

RELAXED = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Text that mixes ordinary characters with everything the hidden-character rules care about.
_TRICKY = st.sampled_from(["\u200b", "\u200c", "\u200d", "\u2060", "\u202e", "\u2066", "\u2069", "\ufeff", "\x1b",
                           "\x1b[31m", "\x1b]8;;x\x07", "\x9b", "\x00", "\x7f", "\ufe0f", "\ufe0e", "\U000e0100",
                           "\U000e0041", "\U000e007f", "\U0001f3f4", "\U0001f468", "\u0915", "\u094d", "\u0645",
                           "\u0e01", "\u1820", "\u180e", "\u0301", "\t", "\n", " ", "a", "ignore", "葛",
                           "\x1b[31m\ufe0f", "\u2764\ufe0f"])
TEXT = st.lists(st.one_of(_TRICKY, st.text(max_size=4)), max_size=40).map("".join)


@RELAXED
@given(text=TEXT)
def test_stripped_and_escaped_text_has_nothing_hidden_left(text: str) -> None:
    """After STRIP or ESCAPE no hostile run remains; REPORT never changes the text."""
    assert find_hidden(normalise(text, HiddenPolicy.STRIP).text) == []
    assert find_hidden(normalise(text, HiddenPolicy.ESCAPE).text) == []
    assert normalise(text, HiddenPolicy.REPORT).text == text


@RELAXED
@given(text=TEXT)
def test_runs_are_ordered_disjoint_and_inside_the_text(text: str) -> None:
    """Runs come in order, do not overlap, and lie within the text."""
    end = 0
    for run in find_hidden(text):
        assert end <= run.start < run.end <= len(text)
        end = run.end


@RELAXED
@given(text=TEXT)
def test_scanners_never_raise_and_excerpts_are_visible(text: str) -> None:
    """Any text yields findings (or none) without an exception; no excerpt carries a raw hidden character."""
    for finding in [*scan_result(text), *scan_definition({"name": "t", "description": text, "inputSchema": {
            "type": "object", "properties": {text[:20] or "p": {"type": "string", "default": text}}}})]:
        assert find_hidden(finding.excerpt) == [] and "\x1b" not in finding.excerpt


@RELAXED
@given(value=st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), TEXT),
                          lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                          max_leaves=20))
def test_scan_value_points_into_the_value(value: object) -> None:
    """Every finding's pointer is "" or resolves to a string or key in the value."""
    for finding in scan_value(value):
        if not finding.pointer:
            continue
        node: object = value
        for token in finding.pointer.split("/")[1:]:
            key = token.replace("~1", "/").replace("~0", "~")
            node = node[int(key)] if isinstance(node, list) else node[key]  # type: ignore[index]
        assert isinstance(node, str | int | bool | float | type(None) | list | dict)


@RELAXED
@given(text=TEXT)
def test_wrapped_text_is_inside_one_envelope(text: str) -> None:
    """The payload sits between the only opening and the only closing line of its boundary."""
    wrapped = wrap(text, source=json.dumps(text)[:30])
    boundary = wrapped.split("boundary=", 1)[1][:32]
    assert wrapped.count(boundary) == 2
    assert wrapped.endswith(f"<<<END-UNTRUSTED-DATA boundary={boundary}>>>")
    assert f"\n{text}\n<<<END-UNTRUSTED-DATA boundary={boundary}>>>" in wrapped
