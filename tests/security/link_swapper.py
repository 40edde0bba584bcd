"""A thread that keeps swapping files and directories for symbolic links, for the file race tests.

Each round moves the real entry aside, puts a link to an outside target in its place, yields the
GIL for a moment so readers meet the link, then puts the real entry back and yields again: about
half of the reads race a link. The yields are not timing assertions; a slow machine only changes
how many rounds happen.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

HOLD_S = 0.0002  # how long each state is held before the next swap (a GIL yield, not a deadline)


@contextmanager
def swapping(pairs: Sequence[tuple[Path, Path]]) -> Iterator[None]:
    """While inside, each ``(real, outside)`` pair keeps having ``real`` replaced by a link to ``outside``."""
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            for real, outside in pairs:
                aside = real.with_name(real.name + ".aside")
                try:
                    os.rename(real, aside)
                    os.symlink(outside, real)
                    time.sleep(HOLD_S)
                    os.unlink(real)
                    os.rename(aside, real)
                except OSError:
                    pass
                time.sleep(HOLD_S)

    thread = threading.Thread(target=swap, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)
