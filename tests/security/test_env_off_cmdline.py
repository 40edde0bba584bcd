"""No environment value of a child (a resolved secret, say) is ever on a command line.

``/proc/<pid>/cmdline`` (and so ``ps``) shows every local user every process's arguments, for as long
as the process lives; ``/proc/<pid>/environ`` is open to its own user only. A real stdio child is
started through the gateway's own spawn path (:class:`~portcullis.upstream.sdk_client.SdkConnector`),
confined by the real bwrap and unconfined (``unsafe_no_sandbox``), with an environment of hostile
canary values, one from a ``secret://env/`` reference, and a Vault token in the gateway's own
environment. While it runs, the command line of every process of its tree (bwrap, its pid-1 init, the
child) is read, and every command line the gateway handed to ``execve`` is recorded (an ``env -i
K=V`` wrapper is replaced by the child at once, so only the launch shows it). No canary is on any,
and the child holds exactly its declared environment. The sandbox kit's ``run`` and the code
execution kit keep the same rule: their child reads its sandbox's command line at ``/proc/1``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from portcullis.config.model import StdioService
from portcullis.kits.code import CodeKitConfig, CodeRunner
from portcullis.kits.sandbox import Limits, SandboxHost, SandboxSpec, run
from portcullis.upstream.sdk_client import SdkConnector
from tests.e2e.harness import REPO
from tests.sandbox_host import CMDLINE_TESTS_UID, sandbox_host

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("security/test_env_off_cmdline")]
TOKEN = secrets.token_hex(8)  # in every canary: what is looked for on the command lines
SOURCE_VAR = "PORTCULLIS_TEST_CMDLINE_SOURCE"  # the gateway's variable a secret://env/ reference reads
# name -> (declared value, the value the child must hold): hostile shapes for a command line
CANARIES = {
    "API_KEY": (f"secret://env/{SOURCE_VAR}", f"resolved-secret-{TOKEN}-a"),
    "PLAIN": (f"plain-{TOKEN}-b", f"plain-{TOKEN}-b"),
    "SPACED": (f"two words\nand a line {TOKEN}-c", f"two words\nand a line {TOKEN}-c"),
    "OPTION_LIKE": (f"--bind / /escape-{TOKEN}-d", f"--bind / /escape-{TOKEN}-d"),
    "ASSIGNMENT": (f"X=Y={TOKEN}-e", f"X=Y={TOKEN}-e"),
    "UNICODE": (f"\u043a\u043b\u044e\u0447-{TOKEN}-f", f"\u043a\u043b\u044e\u0447-{TOKEN}-f"),
}
GATEWAY_ONLY = {"VAULT_TOKEN": f"hvs.gateway-token-{TOKEN}-g", SOURCE_VAR: CANARIES["API_KEY"][1]}
DECLARED = {name: child for name, (_, child) in CANARIES.items()}
MODES = {"confined": {}, "unconfined": {"unsafe_no_sandbox": True}}


@dataclass
class Seen:
    """What one running stdio child's spawn looked like from outside."""

    started: list[tuple[list[str], dict[str, str] | None]] = field(default_factory=list)  # argv, env per execve
    cmdlines: dict[int, bytes] = field(default_factory=dict)  # every process of the child's tree
    child_environ: dict[str, str] = field(default_factory=dict)


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text(errors="replace")
            except OSError:
                continue
            children.setdefault(int(stat.rpartition(")")[2].split()[1]), []).append(int(entry))
    found, todo = [], list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, ())
    return found


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(os.fsdecode(item).partition("=")[::2] for item in raw.split(b"\0") if item)


def _observe(mode: str) -> Seen:
    cfg = StdioService.model_validate({
        "transport": "stdio", "command": sys.executable, "args": ["-m", "tests.secrets.env_service"],
        "cwd": str(REPO), "timeout_s": 30, "connect_timeout_s": 60, "sandbox": MODES[mode],
        "env": {name: declared for name, (declared, _) in CANARIES.items()}})
    child_argv = os.fsencode("\0".join([sys.executable, "-m", "tests.secrets.env_service"])) + b"\0"
    seen = Seen()
    real_init = subprocess.Popen.__init__

    def spy(self: Any, args: Any, *rest: Any, **kw: Any) -> None:  # every process the gateway starts
        seen.started.append(([os.fsdecode(a) for a in args], kw.get("env")))
        real_init(self, args, *rest, **kw)

    async def connect() -> None:
        connector = SdkConnector("svc", cfg, os.environ)
        with anyio.fail_after(120):
            async with connector.open() as connection:
                await connection.list_tools()  # the child is up and serving: its tree is complete
                for pid in _descendants(os.getpid()):
                    try:
                        seen.cmdlines[pid] = Path(f"/proc/{pid}/cmdline").read_bytes()
                    except OSError:
                        continue
                    if seen.cmdlines[pid] == child_argv:
                        seen.child_environ = _environ(pid)

    with pytest.MonkeyPatch.context() as patch:
        for name, value in GATEWAY_ONLY.items():
            patch.setenv(name, value)
        patch.setattr(subprocess.Popen, "__init__", spy)
        anyio.run(connect)
    return seen


@pytest.fixture(scope="module", params=list(MODES))
def seen(request: pytest.FixtureRequest) -> Seen:
    """One real stdio child per mode, observed while it runs (bwrap missing fails: it is never skipped)."""
    return _observe(request.param)


@pytest.mark.parametrize("name", [*CANARIES, *GATEWAY_ONLY])
def test_no_value_is_on_a_command_line_of_the_child_or_its_launchers(seen: Seen, name: str) -> None:
    """Neither a declared value nor a gateway secret is on any command line the gateway started or that runs."""
    canary = os.fsencode({**DECLARED, **GATEWAY_ONLY}[name])
    assert seen.started and seen.cmdlines
    for argv, _env in seen.started:
        assert canary not in os.fsencode("\0".join(argv)), argv[0]
    for pid, cmdline in seen.cmdlines.items():
        assert canary not in cmdline, (pid, cmdline.split(b"\0")[0])
    assert TOKEN.encode() not in b"".join(seen.cmdlines.values())


def test_the_child_holds_exactly_its_declared_environment(seen: Seen) -> None:
    """The declared values, resolved, and nothing else: no gateway variable, no PWD, no bwrap addition."""
    assert seen.child_environ == DECLARED


def test_the_launcher_gets_no_more_than_the_child(seen: Seen) -> None:
    """The process the gateway starts holds the child's own environment (unconfined) or none at all (bwrap:
    it runs outside the sandbox, where a declared LD_PRELOAD must not reach it)."""
    argv, env = seen.started[-1]  # the spawn itself (before it, libseccomp's loader may run ldconfig)
    assert argv[0] in (sys.executable, "/usr/bin/bwrap", "/bin/sh")
    assert env == (DECLARED if argv[0] == sys.executable else {})


# the sandbox kit's own runner and the code-execution kit: pid 1 of the sandbox is bwrap's init, a copy of bwrap
READ_SANDBOX = ("import sys\nsys.stdout.write(' '.join(open(p, 'rb').read().hex() "
                "for p in ('/proc/1/cmdline', '/proc/self/environ')))\n")


@pytest.fixture(scope="module")
def host() -> SandboxHost:
    return sandbox_host(CMDLINE_TESTS_UID)


def _sandbox_view(stdout: str) -> tuple[bytes, dict[str, str]]:
    """What the child read: its sandbox's command line (bwrap's) and its own environment."""
    cmdline, environ = (bytes.fromhex(part) for part in stdout.split())
    return cmdline, dict(os.fsdecode(item).partition("=")[::2] for item in environ.split(b"\0") if item)


async def test_a_sandboxed_run_keeps_its_environment_off_bwraps_command_line(host: SandboxHost) -> None:
    """``run(spec)``: the child sees its values, and bwrap's command line (its own /proc/1) holds none."""
    spec = SandboxSpec(argv=("/usr/bin/python3", "-I", "-S", "-c", READ_SANDBOX),
                       env=tuple((name, value) for name, value in DECLARED.items()), limits=Limits(wall_s=30.0))
    with pytest.MonkeyPatch.context() as patch:
        for name, value in GATEWAY_ONLY.items():
            patch.setenv(name, value)
        result = await run(spec, host)
    assert result.exit_code == 0, result.stderr
    cmdline, environ = _sandbox_view(result.stdout.decode())
    assert cmdline.startswith(os.fsencode(host.bwrap) + b"\0--args\0")
    assert TOKEN.encode() not in cmdline
    assert environ == {**DECLARED, "PWD": "/tmp"}  # bwrap sets PWD to where it starts the child


async def test_the_code_kit_child_gets_exactly_its_declared_environment(host: SandboxHost) -> None:
    """The code-execution kit: HOME and PYTHONDONTWRITEBYTECODE (and bwrap's PWD), none on a command line."""
    root = Path(tempfile.mkdtemp(prefix="portcullis-cmdline-test-", dir="/tmp"))  # reachable by the host id
    root.chmod(0o711)
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in GATEWAY_ONLY.items():
                patch.setenv(name, value)
            runner = CodeRunner(CodeKitConfig(scratch_root=str(root), limits=Limits(wall_s=30.0)), host)
            result = await runner.run(READ_SANDBOX, tenant="t")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert result.exit_code == 0, result.stderr
    cmdline, environ = _sandbox_view(result.stdout)
    assert environ == {"PYTHONDONTWRITEBYTECODE": "1", "HOME": "/scratch", "PWD": "/scratch"}
    assert b"PYTHONDONTWRITEBYTECODE" not in cmdline and b"--setenv" not in cmdline
