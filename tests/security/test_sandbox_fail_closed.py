"""The sandbox refuses rather than runs unconfined: a missing or failing bwrap means nothing runs."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest

from portcullis.kits.code import CodeKitConfig, CodeRunner
from portcullis.kits.sandbox import (
    Bind,
    Limits,
    SandboxHost,
    SandboxSpec,
    SandboxUnavailable,
    filter_file,
    launch_argv,
    run,
)
from tests.sandbox_host import FAIL_CLOSED_TESTS_UID, sandbox_host

pytestmark = pytest.mark.slow
MARK = "ran-unconfined-7c1d"
SPEC = SandboxSpec(argv=("/usr/bin/python3", "-I", "-S", "-c", f"print({MARK!r})"), limits=Limits(wall_s=20.0))


@pytest.fixture(scope="module")
def host() -> SandboxHost:
    return sandbox_host(FAIL_CLOSED_TESTS_UID)


@pytest.mark.parametrize("bwrap", ["/nonexistent/bwrap", "/usr/bin/false", "/etc/hostname"])
async def test_missing_or_broken_bwrap_refuses(host: SandboxHost, bwrap: str) -> None:
    """No bwrap, a bwrap that exits without running anything, a non-executable file: refused."""
    with pytest.raises(SandboxUnavailable):
        await run(SPEC, dataclasses.replace(host, bwrap=bwrap))


async def test_bwrap_setup_failure_refuses(host: SandboxHost) -> None:
    """The real bwrap failing during setup (here: a bind whose source is missing) is refused, not ignored."""
    spec = dataclasses.replace(SPEC, ro_binds=(Bind("/nonexistent/source", "/data"),))
    with pytest.raises(SandboxUnavailable):
        await run(spec, host)


async def test_unreachable_scratch_root_refuses(host: SandboxHost, tmp_path: Path) -> None:
    """A scratch root the unprivileged host id cannot pass through is refused before anything runs."""
    if os.geteuid() != 0:
        pytest.skip("only meaningful when the tests run as root")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    with pytest.raises(SandboxUnavailable):
        await CodeRunner(CodeKitConfig(scratch_root=str(locked / "scratch")), host).run("print(1)", tenant="t")


async def test_root_without_unprivileged_id_refuses(host: SandboxHost) -> None:
    """A root gateway with no unprivileged host id configured never runs the child as root."""
    if os.geteuid() != 0:
        pytest.skip("only meaningful when the tests run as root")
    with pytest.raises(SandboxUnavailable):
        await run(SPEC, dataclasses.replace(host, host_uid=None))


def test_launch_argv_runs_confined_as_the_unprivileged_id(host: SandboxHost, tmp_path: Path) -> None:
    """The self-contained command line (for stdio spawners) confines the same way: filter, uid, no env."""
    bpf = filter_file(str(tmp_path), "none")
    code = "import os, socket, sys\nprint(os.getuid(), sorted(os.environ), sys.stdin.read())\nsocket.socket(2)"
    spec = dataclasses.replace(SPEC, argv=("/usr/bin/python3", "-I", "-S", "-c", code))
    argv = launch_argv(spec, host, seccomp_file=bpf, as_root=os.geteuid() == 0)
    done = subprocess.run(argv, input=b"hi", capture_output=True, env={"SECRET": "x"}, timeout=30, check=False)
    # bwrap sets PWD, Python's UTF-8 coercion sets LC_CTYPE; nothing of the caller's environment passes
    assert done.stdout.decode() == f"{host.sandbox_uid} ['LC_CTYPE', 'PWD'] hi\n", done.stderr
    assert b"PermissionError" in done.stderr
