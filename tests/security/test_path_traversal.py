"""Path traversal: one canonicalisation decides ``within_root`` for the gateway, the service kit and the demo files.

The hostile table (``data/path_traversal.jsonl``) is our own, derived from the traversal classes of
PayloadsAllTheThings' "Directory Traversal" page and intruder lists (plain, absolute, backslash,
single/double/overlong/nibble/%u percent encodings, NUL and control characters, invisible and
lookalike Unicode, Windows best-fit characters, non-recursive stripping, schemes, drives, UNC,
home, device names, length) plus the legitimate paths that must keep working. Generated
combinations of traversal units and separators add depth; hypothesis checks the properties.
"""

from __future__ import annotations

import itertools
import json
import posixpath
import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from mcp.server.mcpserver.exceptions import ToolError

from portcullis.cli.main import demo_deployment
from portcullis.config.loader import load_deployment
from portcullis.demo.services import files
from portcullis.identity.principal import Principal
from portcullis.policy import PolicyEngine, path_within_root
from portcullis.policy.paths import PathRefused, canonical_path, canonical_segments, is_within_root
from portcullis.service import ServicePolicies

ROWS: list[dict[str, Any]] = [
    json.loads(line) for line in (Path(__file__).parent / "data" / "path_traversal.jsonl").read_text().splitlines()
]
HOSTILE = [row for row in ROWS if row["expect"] == "refuse"]
LEGITIMATE = [row for row in ROWS if row["expect"] == "accept"]
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
STAFF = Principal(client_id="console", auth_method="bearer", issuer="https://idp.example", issuer_name="dev",
                  user_id="alice", roles=("employee",))
ENGINE = PolicyEngine.from_deployment(load_deployment(demo_deployment()), environment="production")
KIT = ServicePolicies.load(demo_deployment(), "files", environment="production")


def _id(row: dict[str, Any]) -> str:
    return f"{row['class']}:{row['path'][:40].encode('unicode_escape').decode('ascii')}"


# Traversal units and separators, in every spelling the classes above use, combined at depth 1-4.
UNITS = ["..", "%2e%2e", "%2E%2E", "%252e%252e", "%c0%ae%c0%ae", "%u002e%u002e", "\uff0e\uff0e", "\u2025",
         "....", "..;", ".. ", "%%32%65%%32%65"]
SEPARATORS = ["/", "\\", "%2f", "%5c", "%252f", "%c0%af", "\u2215", "\uff0f", "//", "/./"]
COMBINED = [(unit + sep) * depth + "etc/passwd" for unit, sep, depth in
            itertools.product(UNITS, SEPARATORS, range(1, 5))]


def test_the_table_covers_every_class_with_many_rows() -> None:
    """The committed table is broad: at least 200 hostile rows over at least 20 classes."""
    assert len(HOSTILE) >= 200
    assert len({row["class"] for row in HOSTILE}) >= 20
    assert len(COMBINED) == 480


@pytest.mark.parametrize("row", HOSTILE, ids=_id)
def test_canonicaliser_refuses_every_hostile_row(row: dict[str, Any]) -> None:
    """Every encoded, absolute, lookalike or escaping path is refused by the one canonicaliser."""
    with pytest.raises(PathRefused):
        canonical_segments(row["path"])
    assert not is_within_root(row["path"])
    assert not path_within_root("/srv/files", row["path"])


@pytest.mark.parametrize("path", COMBINED)
def test_canonicaliser_refuses_every_combined_traversal(path: str) -> None:
    """Any traversal unit joined by any separator spelling, at any depth, is refused."""
    assert not is_within_root(path)


@pytest.mark.parametrize("row", LEGITIMATE, ids=_id)
def test_canonicaliser_accepts_legitimate_paths_in_canonical_form(row: dict[str, Any]) -> None:
    """Paths that stay inside the root, Unicode names and inner '..' included, are accepted."""
    assert canonical_path(row["path"]) == row["canonical"]
    assert path_within_root("/srv/files", row["path"])


def _gateway_and_kit(path: str) -> tuple[str, str]:
    arguments = {"path": path}
    gateway = ENGINE.decide("files.read_file", STAFF, arguments, now=NOW)
    kit = KIT.check("read_file", STAFF, arguments, NOW)
    return gateway.effect, kit.effect


@pytest.mark.parametrize("row", HOSTILE, ids=_id)
def test_gateway_policy_and_service_kit_recheck_both_deny_hostile_rows(row: dict[str, Any]) -> None:
    """The demo read_file policy denies every hostile row at the gateway and again in the service kit."""
    assert _gateway_and_kit(row["path"]) == ("deny", "deny")
    decision = ENGINE.decide("files.read_file", STAFF, {"path": row["path"]}, now=NOW)
    assert "files.read_file/constraint/path/within_root" in decision.rule_ids


@pytest.mark.parametrize("row", LEGITIMATE, ids=_id)
def test_gateway_policy_and_service_kit_recheck_both_allow_legitimate_rows(row: dict[str, Any]) -> None:
    """A legitimate path is allowed by the gateway's policy and by the kit's re-check alike."""
    assert _gateway_and_kit(row["path"]) == ("allow", "allow")


@pytest.mark.parametrize("row", HOSTILE, ids=_id)
def test_demo_file_service_refuses_every_hostile_row(row: dict[str, Any]) -> None:
    """The files service refuses the same rows before touching the filesystem, with a short message."""
    with pytest.raises(ToolError) as refused:
        files._parts(row["path"])
    assert len(str(refused.value)) < 60


@pytest.mark.parametrize("row", LEGITIMATE, ids=_id)
def test_demo_file_service_opens_the_canonical_segments(row: dict[str, Any]) -> None:
    """The files service walks exactly the canonical segments the gateway judged."""
    assert ("/".join(files._parts(row["path"])) or ".") == row["canonical"]


# ----------------------------------------------------------------------------- properties

NAME_CHARS = st.characters(codec="utf-8", exclude_characters="/")
TOKENS = st.one_of(st.sampled_from(["..", ".", "", "a", "b", "notes", "résumé", "日本語"]),
                   st.text(NAME_CHARS, min_size=1, max_size=6))


def _accepted_invariants(path: str, segments: tuple[str, ...]) -> None:
    root = "/srv/files"
    joined = posixpath.normpath(posixpath.join(root, *segments))
    assert joined.split("/")[:3] == root.split("/")
    for segment in segments:
        assert segment not in ("", ".", "..") and "/" not in segment and "\\" not in segment
        assert unicodedata.normalize("NFKC", segment) not in (".", "..")
        assert "/" not in unicodedata.normalize("NFKC", segment)
    canonical = canonical_path(path)
    assert unquote(canonical) == canonical  # nothing left for a percent-decoder to change
    assert canonical_path(canonical) == canonical  # canonicalising is idempotent


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=80))
@example("notes/../notes/a.txt")
@example("%2e%2e/x")
def test_any_accepted_text_lies_under_the_root_with_nothing_left_to_decode(path: str) -> None:
    """Whatever text is accepted canonicalises under the root, without '..', escapes or separators."""
    try:
        segments = canonical_segments(path)
    except PathRefused:
        return
    _accepted_invariants(path, segments)


@settings(max_examples=400, deadline=None)
@given(st.lists(TOKENS, min_size=1, max_size=12))
def test_segments_follow_the_stack_model(tokens: list[str]) -> None:
    """'..' pops, '.' and '' vanish, and popping past the root refuses: a stack over the segments."""
    path = "/".join(tokens)
    stack: list[str] = []
    underflow = False
    for token in tokens:
        if token == "..":
            underflow = underflow or not stack
            if stack:
                stack.pop()
        elif token not in ("", "."):
            stack.append(token)
    try:
        segments = canonical_segments(path)
    except PathRefused:
        return  # refused for its characters or its escape: never a wrong acceptance
    assert not underflow
    assert segments == tuple(stack)
    assert posixpath.normpath(path) == (canonical_path(path))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "..", "."]), min_size=1, max_size=10),
       st.sampled_from(["%2e", "%2f", "%252e", "%c0%ae", "\uff0e", "\u2215", "\\"]))
def test_encoding_any_dot_or_slash_of_a_path_is_refused(tokens: list[str], spelling: str) -> None:
    """Replacing a dot or slash by any encoded or lookalike spelling makes the path refused."""
    path = "/".join(tokens)
    target = "." if spelling in ("%2e", "%252e", "%c0%ae", "\uff0e") else "/"
    if target not in path:
        return
    assert not is_within_root(path.replace(target, spelling, 1))


def test_fuzz_target_holds_on_its_seed_corpus() -> None:
    """The coverage-guided fuzz target's seeds (a few per class of the table) all satisfy its properties."""
    from tests.fuzz.targets.paths import fuzz_one

    seeds = sorted((Path(__file__).parents[1] / "fuzz" / "corpus" / "paths").iterdir())
    assert len(seeds) >= 40
    for seed in seeds:
        fuzz_one(seed.read_bytes())
