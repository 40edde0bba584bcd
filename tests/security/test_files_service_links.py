"""The demo files service cannot be made to read outside its root through links, swapped in or not.

A canary file sits beside the root; symbolic links, a hard link and a swapping thread inside the
root point at it. The service must refuse each and never return the canary's text.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp.server.mcpserver.exceptions import ToolError

from portcullis.demo.services import files
from tests.security.link_swapper import swapping

CANARY = "CANARY-outside-the-root-7f3a"
LINK = "symbolic links are not allowed"
READS = 1000  # rounds (two reads each), more only until a link was met; bounded
MAX_READS = 20_000


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A root with one ordinary file and directory; a canary file and directory beside it."""
    root = tmp_path / "root"
    (root / "dir").mkdir(parents=True)
    (root / "plain.txt").write_text("plain\n", encoding="utf-8")
    (root / "dir" / "inner.txt").write_text("inner\n", encoding="utf-8")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "inner.txt").write_text(CANARY, encoding="utf-8")
    (tmp_path / "canary.txt").write_text(CANARY, encoding="utf-8")
    monkeypatch.setenv(files.ROOT_ENV, str(root))
    return root


def test_a_symbolic_link_to_a_file_outside_is_refused(root: Path) -> None:
    """A link inside the root to the canary is refused, not followed."""
    (root / "link.txt").symlink_to(root.parent / "canary.txt")
    with pytest.raises(ToolError, match=r"^symbolic links are not allowed$"):
        files.read_file("link.txt")


def test_a_symbolic_link_to_a_directory_outside_is_refused(root: Path) -> None:
    """A directory link inside the root is refused for reads and listings alike."""
    (root / "out").symlink_to(root.parent / "outside", target_is_directory=True)
    with pytest.raises(ToolError, match=r"^symbolic links are not allowed$"):
        files.read_file("out/inner.txt")
    with pytest.raises(ToolError, match=r"^symbolic links are not allowed$"):
        files.list_dir("out")


def test_a_hard_link_to_a_file_outside_is_refused(root: Path) -> None:
    """A hard link is indistinguishable from the outside file it names, so a file with two links is refused."""
    os.link(root.parent / "canary.txt", root / "hard.txt")
    with pytest.raises(ToolError, match=r"^hard-linked files are not allowed$"):
        files.read_file("hard.txt")
    assert "hard.txt" not in [e.name for e in files.list_dir(".").entries]


@pytest.fixture
def swapper(root: Path) -> Iterator[None]:
    """plain.txt keeps being swapped for a link to the canary, dir for a link to the outside dir."""
    with swapping([(root / "plain.txt", root.parent / "canary.txt"), (root / "dir", root.parent / "outside")]):
        yield


@pytest.mark.usefixtures("swapper")
def test_a_file_or_directory_swapped_for_a_link_never_yields_the_canary(root: Path) -> None:
    """Reads racing a swapper return the real text or a refusal, never the canary."""
    outcomes: set[str] = set()
    for rounds in range(MAX_READS):
        if rounds >= READS and {"read", LINK} <= outcomes:
            break
        for path in ("plain.txt", "dir/inner.txt"):
            try:
                content = files.read_file(path).content
            except ToolError as refused:
                outcomes.add(str(refused))
            else:
                assert CANARY not in content
                outcomes.add("read")
    assert {"read", LINK} <= outcomes <= {"read", LINK, "not found", "not a directory"}
