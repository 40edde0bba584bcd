"""Cost of one file kit read against a plain ``open`` + ``read`` of the same small file, in microseconds.

Times, best of five repeats of ``--n`` calls each: Python's ``open().read()``, a bare
``os.open`` + ``os.read``, a kit read through ``openat2`` and through the forced ``O_NOFOLLOW``
walk (the root's descriptor held open), and a kit made per call (the root opened each time, as
the demo files service does). The file sits two levels below the root.

Run: ``.venv/bin/python -m bench.file_kit_micro`` (``--n 2000`` for a short run).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path

from portcullis.kits.files import FileKit


def main() -> None:
    """Print the per-call cost of each way of reading the file."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    n = parser.parse_args().n
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "a" / "b").mkdir(parents=True)
        target = root / "a" / "b" / "note.txt"
        target.write_text("a small note of about forty bytes......\n", encoding="utf-8")

        def plain() -> None:
            with open(target, "rb") as handle:
                handle.read()

        def bare() -> None:
            fd = os.open(target, os.O_RDONLY)
            os.read(fd, 1 << 16)
            os.close(fd)

        def per_call() -> None:
            with FileKit(root) as kit:
                kit.read_bytes("a/b/note.txt")

        with FileKit(root, resolver="openat2") as fast, FileKit(root, resolver="walk") as walk:
            cases: list[tuple[str, Callable[[], object]]] = [
                ("open().read()", plain), ("os.open + os.read", bare),
                ("kit read, openat2", lambda: fast.read_bytes("a/b/note.txt")),
                ("kit read, walk", lambda: walk.read_bytes("a/b/note.txt")),
                ("kit made per call + read", per_call)]
            for name, case in cases:
                best = min(timeit.repeat(case, number=n, repeat=5)) / n * 1e6
                print(f"{name:28s} {best:7.2f} us")


if __name__ == "__main__":
    main()
