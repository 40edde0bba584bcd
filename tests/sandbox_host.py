"""The sandbox host the sandbox tests use, and the rule that they never skip silently under CI.

Tests run the real bwrap. Without it they fail when ``CI`` is set (``make test`` installs bubblewrap
through scripts/bootstrap.sh) and skip with a loud reason otherwise. The children run as a host id of
their own (not the kit's default; one per test module, whose tests run on one xdist worker), so a scan of
/proc for leftovers cannot see another module's children.
"""

from __future__ import annotations

import dataclasses
import os
import shutil

import pytest

from portcullis.kits.sandbox import SandboxHost, detect_host

EXEC_TESTS_UID = 65531  # in Debian's reserved range, used by nothing else on the test machine
FAIL_CLOSED_TESTS_UID = 65530
CMDLINE_TESTS_UID = 65529


def sandbox_host(uid: int) -> SandboxHost:
    """This machine's host description, or fail (CI) / skip loudly (elsewhere) without bwrap."""
    if shutil.which("bwrap") is None or not os.path.exists("/usr/bin/python3"):
        reason = "SANDBOX TESTS NOT RUN: bwrap or /usr/bin/python3 missing (run scripts/bootstrap.sh)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    host = detect_host(shutil.which("bwrap") or "/usr/bin/bwrap")
    if host.host_uid is None:
        return host
    return dataclasses.replace(host, host_uid=uid, host_gid=uid)


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
