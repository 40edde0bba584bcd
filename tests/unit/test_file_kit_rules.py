"""The file kit's allow- and deny-lists: segment-aware globs over canonical paths, deny wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from portcullis.kits._globs import PatternError, check_pattern, denied, leads_to_any, matches_any
from portcullis.kits.files import FileRules


def _segs(path: str) -> tuple[str, ...]:
    return tuple(path.split("/")) if path else ()


@pytest.mark.parametrize(("pattern", "path", "expected"), [
    ("*.txt", "a.txt", True),
    ("*.txt", "notes/a.txt", False),  # '*' never crosses '/'
    ("*", "a/b", False),
    ("**", "", True),  # '**' is zero or more segments: the root too
    ("**", "a/b/c", True),
    ("**/*.md", "a.md", True),
    ("**/*.md", "x/y/a.md", True),
    ("**/*.md", "x/y/a.txt", False),
    ("docs/**", "docs", True),
    ("docs/**", "docs/a/b", True),
    ("docs/**", "docsx/a", False),  # a sibling with the same prefix is not inside
    ("docs/*/index.html", "docs/v1/index.html", True),
    ("docs/*/index.html", "docs/v1/v2/index.html", False),
    ("a?c", "abc", True),
    ("a?c", "a/c", False),  # '?' is one character of a segment, never '/'
    ("a?c", "abbc", False),
    ("[ab].txt", "a.txt", False),  # no character classes: brackets are literal
    ("[ab].txt", "[ab].txt", True),
    ("a.txt", "A.txt", False),  # allow-lists match exactly
    ("日本語/*.txt", "日本語/メモ.txt", True),
    ("**/a/**/b", "x/a/y/z/b", True),
])
def test_allow_patterns_match_whole_segments(pattern: str, path: str, expected: bool) -> None:
    """'*' and '?' stay inside a segment, '**' spans whole segments, everything else is literal."""
    assert matches_any([check_pattern(pattern)], _segs(path)) is expected


@pytest.mark.parametrize(("pattern", "path", "expected"), [
    ("secrets", "secrets/deep/key.pem", True),  # a denied directory hides its subtree
    ("secrets/**", "secrets", True),
    ("*.pem", "keys/a.pem", False),
    ("**/*.pem", "keys/a.pem", True),
    ("**/*.pem", "keys/A.PEM", True),  # deny matches case-folded
    ("résumé.txt", "re\u0301sume\u0301.txt", True),  # and NFC-normalised (NFD spelling of the same name)
    (".env", "app/.env", False),
    ("**/.env", "app/.env", True),
    ("**/.ENV", "app/.env", True),
])
def test_deny_patterns_cover_subtrees_case_and_normalisation(pattern: str, path: str, expected: bool) -> None:
    """A deny rule errs towards refusing: ancestors, case and Unicode normalisation all count."""
    assert denied([check_pattern(pattern)], _segs(path)) is expected


@pytest.mark.parametrize(("pattern", "path", "expected"), [
    ("docs/**", "", True),
    ("docs/**", "docs", True),
    ("docs/*.md", "docs", True),
    ("docs/*.md", "src", False),
    ("**/*.md", "anything/below", True),
    ("a/b/c.txt", "a/b", True),
    ("a/b/c.txt", "a/x", False),
])
def test_a_directory_is_listable_on_the_way_to_an_allowed_file(pattern: str, path: str, expected: bool) -> None:
    """Listing needs the directory to lead to something the read patterns allow."""
    assert leads_to_any([check_pattern(pattern)], _segs(path)) is expected


@pytest.mark.parametrize("pattern", ["", "/abs", "a//b", "a/./b", "../x", "a/..", "a\\b", "x**", "**y/z",
                                     "**/**/**/**", "a\x00"])
def test_malformed_patterns_are_configuration_errors(pattern: str) -> None:
    """Empty, absolute, climbing, backslashed, partial-'**' and over-deep patterns are refused."""
    with pytest.raises(PatternError):
        check_pattern(pattern)


def test_deny_wins_over_read_and_write() -> None:
    """A path both allowed and denied is denied, for reads, writes and listings."""
    rules = FileRules(read=("**",), write=("out/**",), deny=("out/private", "**/*.key"))
    assert rules.may_read(("out", "a.txt")) and rules.may_write(("out", "a.txt"))
    assert not rules.may_read(("out", "private", "a.txt"))
    assert not rules.may_write(("out", "private", "a.txt"))
    assert not rules.may_list(("out", "private"))
    assert not rules.may_read(("x", "id.KEY"))
    assert rules.may_write(("out", "deep", "a.txt")) and not rules.may_write(("a.txt",))


def test_writes_are_refused_unless_allowed_and_limits_must_be_positive() -> None:
    """The default rules read everything and write nothing; zero limits and bad modes are errors."""
    assert not FileRules().may_write(("a.txt",))
    assert FileRules().may_read(("a.txt",))
    for bad in ({"max_read_bytes": 0}, {"max_write_bytes": -1}, {"max_entries": 0}, {"file_mode": 0o4755}):
        with pytest.raises(ValueError, match=r"positive|mode"):
            FileRules(**bad)  # type: ignore[arg-type]


def test_the_docs_example_runs(tmp_path: Path) -> None:
    """The File kit example in docs/kits.md runs as written against a scratch root."""
    text = (Path(__file__).parents[2] / "docs" / "kits.md").read_text(encoding="utf-8")
    example = text.split("## File kit", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "notes").mkdir()
    (tmp_path / "inbox").mkdir()
    (tmp_path / "notes" / "today.md").write_text("today", encoding="utf-8")
    exec(compile(example.replace('"/srv/shared"', repr(str(tmp_path))), "docs/kits.md", "exec"), {})
    assert (tmp_path / "inbox" / "reply.txt").read_text(encoding="utf-8") == "thanks"
