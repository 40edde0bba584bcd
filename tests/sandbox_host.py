"""The sandbox host the sandbox tests use, and the rule that they never skip silently under CI.

Tests run the real bwrap. Without it they fail when ``CI`` is set (``make test`` installs bubblewrap
through scripts/bootstrap.sh) and skip with a loud reason otherwise. The children run as a host id of
their own (not the kit's default), so a scan of /proc for leftovers cannot see another test's children.
"""

from __future__ import annotations

import dataclasses
import os
import shutil

import pytest

from portcullis.kits.sandbox import SandboxHost, detect_host

TEST_HOST_UID = 65531  # in Debian's reserved range, used by nothing else on the test machine


def sandbox_host() -> SandboxHost:
    """This machine's host description, or fail (CI) / skip loudly (elsewhere) without bwrap."""
    if shutil.which("bwrap") is None or not os.path.exists("/usr/bin/python3"):
        reason = "SANDBOX TESTS NOT RUN: bwrap or /usr/bin/python3 missing (run scripts/bootstrap.sh)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    host = detect_host(shutil.which("bwrap") or "/usr/bin/bwrap")
    if host.host_uid is None:
        return host
    return dataclasses.replace(host, host_uid=TEST_HOST_UID, host_gid=TEST_HOST_UID)


def processes_of(uid: int) -> list[int]:
    """Pids of running processes whose real uid is ``uid``.

    Zombies are left out: bwrap's pid-namespace init can linger as one until the host's pid 1 reaps it;
    it holds no memory and runs nothing.
    """
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", encoding="ascii", errors="replace") as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
        except OSError:
            continue
        dead = fields.get("State", "").strip().startswith(("Z", "X"))
        if int(fields.get("Uid", "-1 ").split()[0]) == uid and not dead:
            pids.append(int(entry))
    return pids
