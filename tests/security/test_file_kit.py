"""The file kit confines reads, writes and listings to its root, through both resolvers.

Every test runs twice: with ``openat2`` (this kernel has it) and with the ``O_NOFOLLOW`` component
walk forced, the path a kernel without ``openat2`` takes. Canary files sit outside the root; no
hostile path, link, hard link or race may ever return their text or change them.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from portcullis.kits._openat import openat2_available
from portcullis.kits.files import FileKit, FileKitError, FileRefused, FileRules, FileUnavailable
from tests.security.link_swapper import swapping

CANARY = "CANARY-file-kit-outside-4c1e"
TABLE = Path(__file__).parent / "data" / "path_traversal.jsonl"
ROWS: list[dict[str, Any]] = [json.loads(line) for line in TABLE.read_text(encoding="utf-8").splitlines()]
HOSTILE = [row["path"] for row in ROWS if row["expect"] == "refuse"]
LEGITIMATE = [row for row in ROWS if row["expect"] == "accept" and row["canonical"] != "." and
              len(row["canonical"]) < 200]
RESOLVERS = ["openat2", "walk"]
SWAP_READS = 1000  # rounds per resolver (two reads each), more only until a link was met; bounded
MAX_SWAP_READS = 20_000


REQUIRED_CLASSES = {"dotdot", "percent-single", "percent-double", "percent-overlong-utf8", "nfkc-lookalike",
                    "backslash", "null-byte", "absolute", "home", "scheme-drive-unc", "control", "invisible"}


def test_the_shared_table_covers_every_encoding_trick_the_kit_must_refuse() -> None:
    """The traversal table the kit is run over has rows for each class of trick the issue names."""
    classes = {row["class"] for row in ROWS if row["expect"] == "refuse"}
    assert classes >= REQUIRED_CLASSES


def test_this_kernel_has_openat2_so_both_resolvers_are_exercised() -> None:
    """The machine the suite runs on has openat2 (Linux 5.6+); 'auto' picks it."""
    assert openat2_available()


@pytest.fixture(params=RESOLVERS)
def resolver(request: pytest.FixtureRequest) -> str:
    """Each resolver in turn: the kernel's openat2, then the forced component walk."""
    return str(request.param)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root three levels deep with a file and a directory; canaries beside it and at the top."""
    root = tmp_path / "a" / "b" / "root"
    (root / "dir").mkdir(parents=True)
    (root / "plain.txt").write_text("plain\n", encoding="utf-8")
    (root / "dir" / "inner.txt").write_text("inner\n", encoding="utf-8")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "inner.txt").write_text(CANARY, encoding="utf-8")
    for canary in (tmp_path / "canary.txt", tmp_path / "a" / "b" / "canary.txt", tmp_path / "etc" / "passwd"):
        canary.parent.mkdir(parents=True, exist_ok=True)
        canary.write_text(CANARY, encoding="utf-8")
    return root


@pytest.fixture
def kit(root: Path, resolver: str) -> Iterator[FileKit]:
    """A kit over ``root`` that may read everything and write everything, using ``resolver``."""
    with FileKit(root, FileRules(write=("**",), max_read_bytes=64, max_write_bytes=64), resolver=resolver) as kit:
        assert kit.resolver == resolver
        yield kit


def _refused(kit: FileKit, path: str, reason: str, root: Path) -> None:
    with pytest.raises(FileKitError) as caught:
        kit.read_bytes(path)
    assert caught.value.reason == reason
    assert str(root) not in str(caught.value) and len(str(caught.value)) < 60


@pytest.mark.parametrize("path", HOSTILE, ids=range(len(HOSTILE)))
def test_every_traversal_row_is_refused_by_read_list_and_write(kit: FileKit, root: Path, path: str) -> None:
    """Each hostile row of the shared traversal table is refused before the file system; no canary is read."""
    for attempt in (kit.read_bytes, kit.list_dir, lambda p: kit.write_bytes(p, CANARY.encode())):
        with pytest.raises(FileRefused) as caught:
            attempt(path)
        assert caught.value.reason == "bad_path"
        assert str(root) not in str(caught.value)
    assert (root.parent / "canary.txt").read_text(encoding="utf-8") == CANARY


def test_every_generated_traversal_combination_is_refused(kit: FileKit, root: Path) -> None:
    """The 480 unit x separator x depth combinations of the path table are all refused as paths."""
    from tests.security.test_path_traversal import COMBINED

    for path in COMBINED:
        with pytest.raises(FileRefused):
            kit.read_bytes(path)
    assert (root.parent / "canary.txt").read_text(encoding="utf-8") == CANARY


@pytest.mark.parametrize("row", LEGITIMATE, ids=lambda row: row["canonical"][:30])
def test_legitimate_names_are_read_and_written_at_their_canonical_path(kit: FileKit, root: Path,
                                                                     row: dict[str, Any]) -> None:
    """Unicode names, inner '..', '100%', '~' inside names: read and written where the canonical path says."""
    target = root / row["canonical"]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("ok", encoding="utf-8")
    assert kit.read_text(row["path"]) == "ok"
    assert kit.write_text(row["path"], "new") == row["canonical"]
    assert target.read_text(encoding="utf-8") == "new"


def test_nfc_and_nfd_spellings_are_distinct_names_and_both_work(kit: FileKit, root: Path) -> None:
    """Linux stores names as bytes: the NFC and NFD spellings are two files, each read as written."""
    nfc, nfd = unicodedata.normalize("NFC", "café.txt"), unicodedata.normalize("NFD", "café.txt")
    kit.write_text(nfc, "composed")
    kit.write_text(nfd, "decomposed")
    assert (kit.read_text(nfc), kit.read_text(nfd)) == ("composed", "decomposed")
    names = [e.name for e in kit.list_dir(".").entries]
    assert nfc in names and nfd in names
    kit.write_text("日本語/😀.txt".replace("日本語/", ""), "emoji")
    assert kit.read_text("a/../😀.txt") == "emoji"


@pytest.mark.parametrize(("path", "target"), [("link.txt", "../../canary.txt"), ("inroot.txt", "plain.txt"),
                                              ("abs.txt", "/etc/hostname"), ("proc", "/proc/self/root")])
def test_a_symbolic_link_anywhere_is_refused(kit: FileKit, root: Path, path: str, target: str) -> None:
    """A link to outside, to inside, absolute or to a magic link: refused, never followed, for read and list."""
    (root / path).symlink_to(target)
    _refused(kit, path, "link", root)
    _refused(kit, f"{path}/x", "link", root)
    with pytest.raises(FileRefused, match="symbolic links"):
        kit.list_dir(path)
    assert path not in [e.name for e in kit.list_dir(".").entries]


def test_a_linked_directory_in_the_middle_is_refused(kit: FileKit, root: Path, tmp_path: Path) -> None:
    """A directory link one level down refuses the whole path, even when its target is inside the root."""
    (root / "dir" / "up").symlink_to(tmp_path / "outside", target_is_directory=True)
    (root / "dir" / "side").symlink_to(root / "dir", target_is_directory=True)
    _refused(kit, "dir/up/inner.txt", "link", root)
    _refused(kit, "dir/side/inner.txt", "link", root)


def test_a_hard_link_to_an_outside_file_is_refused_and_unlisted(kit: FileKit, root: Path) -> None:
    """A file with two links may be the outside file itself: it is refused and not listed."""
    os.link(root.parent / "canary.txt", root / "hard.txt")
    _refused(kit, "hard.txt", "hard_link", root)
    assert "hard.txt" not in [e.name for e in kit.list_dir(".").entries]


def test_non_regular_files_are_refused_without_blocking(kit: FileKit, root: Path) -> None:
    """A FIFO with no writer, a socket and a character device are refused at once (O_NONBLOCK, then fstat)."""
    os.mkfifo(root / "pipe")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "sock"))
        os.mknod(root / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        for name in ("pipe", "sock", "null", "dir", "."):
            with pytest.raises(FileRefused) as caught:
                kit.read_bytes(name)
            assert caught.value.reason in ("not_regular", "bad_path")
        assert [e.name for e in kit.list_dir(".").entries] == ["dir", "plain.txt"]


def test_size_limits_bound_reads_and_writes(kit: FileKit, root: Path) -> None:
    """A file over the read limit and data over the write limit are refused; at the limit they pass."""
    (root / "big.txt").write_bytes(b"x" * 65)
    (root / "edge.txt").write_bytes(b"x" * 64)
    _refused(kit, "big.txt", "too_large", root)
    assert kit.read_bytes("edge.txt") == b"x" * 64
    with pytest.raises(FileRefused, match="file too large"):
        kit.write_bytes("new.txt", b"y" * 65)
    assert not (root / "new.txt").exists()


def test_errors_say_what_is_missing_without_the_root(kit: FileKit, root: Path) -> None:
    """Missing files, files in place of directories and non-text are fixed short refusals."""
    (root / "bin").write_bytes(b"\xff\xfe")
    for path, reason in [("nope", "not_found"), ("plain.txt/x", "not_directory"), ("", "bad_path")]:
        _refused(kit, path, reason, root)
    with pytest.raises(FileRefused, match="not valid UTF-8"):
        kit.read_text("bin")
    with pytest.raises(FileUnavailable) as caught:
        kit.list_dir("nope")
    assert caught.value.reason == "not_found"


def test_writes_are_atomic_refuse_links_and_respect_replace(kit: FileKit, root: Path, tmp_path: Path) -> None:
    """A write replaces the name whole; a link target is refused; replace=False keeps an existing file."""
    (root / "out.txt").symlink_to(tmp_path / "canary.txt")
    with pytest.raises(FileRefused, match="symbolic links"):
        kit.write_text("out.txt", "overwrite")
    with pytest.raises(FileRefused, match="symbolic links"):
        kit.write_text("out.txt/x", "through")
    with pytest.raises(FileRefused, match="already exists"):
        kit.write_text("plain.txt", "again", replace=False)
    assert kit.write_text("fresh.txt", "one", replace=False) == "fresh.txt"
    kit.write_text("plain.txt", "two")
    assert (root / "plain.txt").read_text(encoding="utf-8") == "two"
    assert (tmp_path / "canary.txt").read_text(encoding="utf-8") == CANARY
    assert sorted(p.name for p in root.iterdir()) == ["dir", "fresh.txt", "out.txt", "plain.txt"]  # no temp left
    with pytest.raises(FileUnavailable, match="not found"):
        kit.write_text("missing-dir/x.txt", "no parent is made")


def test_rules_refuse_before_the_file_system(root: Path, resolver: str) -> None:
    """Reads outside the allow-list, denied paths and unallowed writes are refused; listings hide them."""
    (root / "dir" / "x.key").write_text("k", encoding="utf-8")
    rules = FileRules(read=("**/*.txt",), write=("dir/*.txt",), deny=("dir/inner.txt",))
    with FileKit(root, rules, resolver=resolver) as kit:  # type: ignore[arg-type]
        assert kit.read_text("plain.txt") == "plain\n"
        for path in ("dir/x.key", "dir/inner.txt", "DIR/INNER.TXT"):
            with pytest.raises(FileKitError) as caught:
                kit.read_bytes(path)
            assert caught.value.reason in ("not_allowed", "not_found")
        assert [e.name for e in kit.list_dir("dir").entries] == []
        with pytest.raises(FileRefused, match="not allowed"):
            kit.write_text("plain.txt", "x")
        with pytest.raises(FileRefused, match="not allowed"):
            kit.write_text("dir/inner.txt", "x")
        assert kit.write_text("dir/new.txt", "x") == "dir/new.txt"


def test_the_kit_fails_closed_without_a_root(tmp_path: Path, resolver: str) -> None:
    """A missing root, a file as root and a closed kit are 'file root unavailable', never a fallback."""
    for bad in (tmp_path / "missing", Path(__file__)):
        with pytest.raises(FileUnavailable, match=r"^file root unavailable$"):
            FileKit(bad, resolver=resolver)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="resolver"):
        FileKit(tmp_path, resolver="realpath")  # type: ignore[arg-type]
    kit = FileKit(tmp_path, resolver=resolver)  # type: ignore[arg-type]
    kit.close()
    kit.close()
    with pytest.raises(FileUnavailable, match=r"^file root unavailable$"):
        kit.read_bytes("x")


def test_closing_while_other_threads_read_never_resolves_elsewhere(root: Path, resolver: str) -> None:
    """Reads racing close() return the file or 'file root unavailable'; the root closes after the last one."""
    kit = FileKit(root, resolver=resolver)  # type: ignore[arg-type]
    outcomes: set[str] = set()

    def reader() -> None:
        for _ in range(300):
            try:
                outcomes.add(kit.read_text("plain.txt"))
            except FileKitError as refused:
                outcomes.add(refused.reason)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    kit.read_text("plain.txt")
    kit.close()
    for thread in threads:
        thread.join(timeout=60)
    assert outcomes <= {"plain\n", "unavailable"}
    assert kit._root == -1
    with pytest.raises(FileUnavailable):
        kit.list_dir(".")


def test_a_kernel_without_openat2_gets_the_walk_and_a_forced_openat2_is_refused(root: Path, tmp_path: Path) -> None:
    """Under a seccomp filter that answers openat2 with ENOSYS, 'auto' walks and still refuses links."""
    (root / "link.txt").symlink_to(tmp_path / "canary.txt")
    (root / "out").symlink_to(tmp_path / "outside", target_is_directory=True)
    ran = subprocess.run([sys.executable, "-m", "tests.security.no_openat2", str(root)], capture_output=True,
                         text=True, timeout=120, check=True, cwd=Path(__file__).parents[2])
    assert json.loads(ran.stdout) == {"openat2_available": False, "forced_openat2": "unavailable", "auto": "walk",
                                      "read": "inner\n", "link.txt": "link", "out/inner.txt": "link"}


@pytest.fixture
def swapper(root: Path, tmp_path: Path) -> Iterator[None]:
    """plain.txt keeps being swapped for a link to a canary, dir for a link to the outside dir."""
    with swapping([(root / "plain.txt", tmp_path / "canary.txt"), (root / "dir", tmp_path / "outside")]):
        yield


@pytest.mark.usefixtures("swapper")
def test_reads_racing_a_link_swapper_never_return_the_canary(kit: FileKit) -> None:
    """Every read returns the real text or a refusal (link, not found), never the canary; links were met."""
    reasons: set[str] = set()
    for rounds in range(MAX_SWAP_READS):
        if rounds >= SWAP_READS and {"read", "link"} <= reasons:
            break
        for path in ("plain.txt", "dir/inner.txt"):
            try:
                assert CANARY not in kit.read_text(path)
                reasons.add("read")
            except FileKitError as refused:
                reasons.add(refused.reason)
    # not_directory: the walk met the link as ENOTDIR and, asking afterwards, found the real dir back
    assert {"read", "link"} <= reasons <= {"read", "link", "not_found", "not_directory"}


@pytest.mark.usefixtures("swapper")
def test_writes_racing_a_link_swapper_never_touch_the_canary(kit: FileKit, tmp_path: Path) -> None:
    """A write racing a swap replaces the name or is refused; the outside files keep their text."""
    for index in range(200):
        try:
            kit.write_text("dir/inner.txt", f"w{index}")
        except FileKitError as refused:
            assert refused.reason in ("link", "not_found", "not_directory")
    assert (tmp_path / "canary.txt").read_text(encoding="utf-8") == CANARY
    assert (tmp_path / "outside" / "inner.txt").read_text(encoding="utf-8") == CANARY
