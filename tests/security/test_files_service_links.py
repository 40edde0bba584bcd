"""The demo files service cannot be made to read outside its root through links, swapped in or not.

A canary file sits beside the root; symbolic links, a hard link and a swapping thread inside the
root point at it. The service must refuse each and never return the canary's text.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp.server.mcpserver.exceptions import ToolError

from portcullis.demo.services import files

CANARY = "CANARY-outside-the-root-7f3a"
READS = 1000  # per target; bounded, no timing assertions


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
    """A thread that keeps swapping plain.txt for a link to the canary and dir for a link to the outside dir."""
    stop = threading.Event()
    pairs = [(root / "plain.txt", root.parent / "canary.txt"), (root / "dir", root.parent / "outside")]

    def swap() -> None:
        while not stop.is_set():
            for real, target in pairs:
                aside = real.with_name(real.name + ".aside")
                try:
                    os.rename(real, aside)
                    os.symlink(target, real)
                    os.unlink(real)
                    os.rename(aside, real)
                except OSError:
                    pass

    thread = threading.Thread(target=swap, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


@pytest.mark.usefixtures("swapper")
def test_a_file_or_directory_swapped_for_a_link_never_yields_the_canary(root: Path) -> None:
    """Reads racing a swapper return the real text or a refusal, never the canary."""
    outcomes: dict[str, int] = {}
    for _ in range(READS):
        for path in ("plain.txt", "dir/inner.txt"):
            try:
                content = files.read_file(path).content
            except ToolError as refused:
                outcome = str(refused)
            else:
                assert CANARY not in content
                outcome = "read"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert set(outcomes) <= {"read", "symbolic links are not allowed", "not found"}
