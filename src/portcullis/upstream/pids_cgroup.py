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
    """Makes and removes the per-spawn cgroups under ``root`` (named for the gateway and the service).

    A cgroup cannot be removed while a process is in it, and the processes of a stopped sandbox leave
    a moment after bwrap: such a cgroup is kept in a list and removed by a later :meth:`create`,
    which also removes those a gateway that is no longer running left behind (never one of a
    running gateway: it may have just been made for a spawn that has not started yet)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._pending: list[str] = []
        self._sweep_dead()

    def create(self, service: str, max_processes: int) -> str:
        """A new cgroup for one spawn of ``service``; returns its ``cgroup.procs`` path. OSError if not."""
        self._pending = [path for path in self._pending if not _rmdir(path)]
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
        """Remove the cgroup of ``procs`` now, or at a later :meth:`create` if a process is still in it."""
        path = os.path.dirname(procs)
        if not _rmdir(path):
            self._pending.append(path)

    def _sweep_dead(self) -> None:
        try:
            names = os.listdir(self.root)
        except OSError:
            return
        for name in names:
            parts = name.split("-")
            if len(parts) >= 4 and parts[0] == "portcullis" and parts[1].isdigit() and not _alive(int(parts[1])):
                _rmdir(os.path.join(self.root, name))


def _rmdir(path: str) -> bool:
    """Whether the cgroup ``path`` is gone (removed now, or already)."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError:  # EBUSY: a process is still in it
        return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
