"""A pids cgroup per confined stdio child, for a gateway running as root.

``RLIMIT_NPROC`` never binds a process whose real user is root on the host, and a child of a root
gateway is root on the host even inside its user namespace (that is how an unprivileged user
namespace maps ids). So for a root gateway, the child's process count is bounded by a ``pids``
cgroup made for that spawn: :meth:`PidsCgroups.create` makes it with ``pids.max`` set, the launcher
writes its own pid to the returned ``cgroup.procs`` before it execs bwrap (so everything the child
forks is counted from its first instruction), and :meth:`PidsCgroups.remove` removes it after
the child is gone. No writable pids hierarchy: :func:`find_pids_root` says so and the spawn is
refused (fail closed).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os

log = logging.getLogger("portcullis.upstream")

_SERIAL = itertools.count(1)  # process-wide: every sandbox of this gateway process names its cgroups apart
# cgroup v1's pids hierarchy, and the v2 unified hierarchy (when its root delegates pids)
_CANDIDATES = ("/sys/fs/cgroup/pids", "/sys/fs/cgroup")


def find_pids_root(candidates: tuple[str, ...] = _CANDIDATES) -> str | None:
    """The first writable hierarchy where a child cgroup gets a ``pids.max``, else None."""
    for root in candidates:
        if not os.access(root, os.W_OK):
            continue
        if os.path.exists(os.path.join(root, "tasks")):  # v1: a hierarchy of its own
            return root if os.path.basename(root) == "pids" else None
        try:
            with open(os.path.join(root, "cgroup.subtree_control"), encoding="ascii") as fh:
                if "pids" in fh.read().split():
                    return root
        except OSError:
            continue
    return None


class PidsCgroups:
    """Makes and removes the per-spawn cgroups under ``root`` (named for the gateway and the service)."""

    def __init__(self, root: str) -> None:
        self.root = root

    def create(self, service: str, max_processes: int) -> str:
        """A new cgroup for one spawn of ``service``; returns its ``cgroup.procs`` path. OSError if not."""
        path = os.path.join(self.root, f"portcullis-{os.getpid()}-{service}-{next(_SERIAL)}")
        os.mkdir(path, 0o755)
        try:
            with open(os.path.join(path, "pids.max"), "w", encoding="ascii") as fh:
                fh.write(str(max_processes))
        except OSError:
            self.remove(path)
            raise
        return os.path.join(path, "cgroup.procs")

    def remove(self, procs: str) -> None:
        """Remove the cgroup of ``procs`` (left in place, and logged, if a process is still in it)."""
        with contextlib.suppress(FileNotFoundError):
            try:
                os.rmdir(os.path.dirname(procs))
            except OSError as exc:
                log.warning("a sandbox's pids cgroup could not be removed", extra={"fields": {
                    "error": type(exc).__name__}})
