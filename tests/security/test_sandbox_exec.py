"""The code execution kit against hostile code: the real kernel, real bwrap, real sockets.

Processes are expensive on the test machine, so one sandboxed probe script attempts every escape in
the table at once and reports each outcome; the parametrised tests read one row each. The resource
bombs run one process each, with a ticker on the test's event loop proving the caller stays live.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from portcullis.kits.code import CodeKitConfig, CodeResult, CodeRunner
from portcullis.kits.sandbox import Limits, SandboxHost
from portcullis.kits.sandbox.probe import landlock_abi
from tests.ports import free_port
from tests.sandbox_host import EXEC_TESTS_UID, processes_of, sandbox_host

# one worker runs the whole module: the probe runs once, and the leftover scan sees only this module's children
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("security/test_sandbox_exec")]
CANARY_ENV = "PORTCULLIS_SANDBOX_CANARY"
CANARY_VALUE = "canary-7f3e1c9a2b"
REPO = str(Path(__file__).resolve().parents[2])


class Canary:
    """TCP listeners on 127.0.0.1 and ::1 that count every connection they accept."""

    def __init__(self) -> None:
        self.port = free_port()
        self.hits = 0
        self.socks = []
        for family, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.bind((addr, self.port))
            sock.listen(8)
            sock.settimeout(0.2)
            self.socks.append(sock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            for sock in self.socks:
                try:
                    conn, _ = sock.accept()
                except (TimeoutError, OSError):
                    continue
                self.hits += 1
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self.socks:
            sock.close()


PROBE = r"""
import ctypes, json, os, socket
libc = ctypes.CDLL(None, use_errno=True)
out = {}
def attempt(name, fn):
    try:
        r = fn()
        out[name] = "failed" if r is False or (type(r) is int and r < 0) else "ok"
    except Exception:
        out[name] = "failed"
def read(path):
    with open(path, "rb") as f:
        return f.read(1) is not None
def connect(family, addr):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(1)
    s.connect((addr, PORT))
def syscall(nr, *args):
    return libc.syscall(nr, *args)
attempt("read_etc_shadow", lambda: read("/etc/shadow"))
attempt("read_etc_passwd", lambda: read("/etc/passwd"))
attempt("list_root_home", lambda: os.listdir("/root"))
attempt("read_repo", lambda: read(REPO + "/pyproject.toml"))
attempt("read_proc_1_environ_canary", lambda: CANARY.encode() in open("/proc/1/environ", "rb").read())
attempt("env_canary", lambda: CANARY_ENV in os.environ or CANARY in repr(os.environ))
attempt("host_proc_visible", lambda: len([p for p in os.listdir("/proc") if p.isdigit()]) > 5)
attempt("write_usr", lambda: open("/usr/pwned", "w").close())
attempt("write_root_dir", lambda: open("/pwned", "w").close())
attempt("write_dev", lambda: open("/dev/pwned", "w").close())
def fill(directory):
    for i in range(8):
        with open(f"{directory}/fill{i}", "wb") as f:
            f.write(b"x" * (4 << 20))
attempt("fill_tmp_past_its_size", lambda: fill("/tmp"))
attempt("fill_dev_shm_past_its_size", lambda: fill("/dev/shm"))
attempt("af_inet_socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close())
attempt("af_inet6_socket", lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close())
attempt("af_netlink_socket", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close())
attempt("af_packet_socket", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close())
attempt("connect_canary_v4", lambda: connect(socket.AF_INET, "127.0.0.1"))
attempt("connect_canary_v6", lambda: connect(socket.AF_INET6, "::1"))
attempt("ptrace_traceme", lambda: syscall(101, 0, 0, 0, 0))
attempt("ptrace_attach_pid1", lambda: syscall(101, 16, 1, 0, 0))
attempt("unshare_user", lambda: syscall(272, 0x10000000))
attempt("unshare_net", lambda: syscall(272, 0x40000000))
attempt("clone_newns", lambda: syscall(56, 0x00020000 | 17, 0, 0, 0, 0))
attempt("mount_tmpfs", lambda: libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
attempt("setns", lambda: syscall(308, os.open("/proc/self/ns/net", os.O_RDONLY), 0))
attempt("keyctl", lambda: syscall(250, 0, -3, 0, 0, 0))
attempt("bpf", lambda: syscall(321, 0, 0, 0))
attempt("perf_event_open", lambda: syscall(298, 0, 0, -1, -1, 0))
attempt("userfaultfd", lambda: syscall(323, 0))
attempt("io_uring_setup", lambda: syscall(425, 1, 0))
attempt("personality", lambda: syscall(135, 0x0040000))
attempt("kexec_load", lambda: syscall(246, 0, 0, 0, 0))
attempt("init_module", lambda: syscall(175, 0, 0, b""))
attempt("list_root_dir", lambda: os.listdir("/") and True)
import subprocess
attempt("spawn_shell", lambda: subprocess.run(["/bin/sh", "-c", "echo hi"], capture_output=True).stdout == b"hi\n")
attempt("af_unix_socketpair", lambda: [s.close() for s in socket.socketpair()] and True)
attempt("write_scratch", lambda: open("/scratch/probe", "w").write("x") == 1)
attempt("write_tmp", lambda: open("/tmp/probe", "w").write("x") == 1)
attempt("write_dev_null", lambda: open("/dev/null", "w").write("x") == 1)
attempt("write_dev_shm", lambda: open("/dev/shm/probe", "w").write("x") == 1)
print(json.dumps(out))
"""

ESCAPES = ["read_etc_shadow", "read_etc_passwd", "list_root_home", "read_repo", "read_proc_1_environ_canary",
           "env_canary", "host_proc_visible", "write_usr", "write_root_dir", "write_dev",
           "fill_tmp_past_its_size", "fill_dev_shm_past_its_size", "af_inet_socket", "af_inet6_socket",
           "af_netlink_socket", "af_packet_socket", "connect_canary_v4", "connect_canary_v6", "ptrace_traceme",
           "ptrace_attach_pid1",
           "unshare_user", "unshare_net", "clone_newns", "mount_tmpfs", "setns", "keyctl", "bpf", "perf_event_open",
           "userfaultfd", "io_uring_setup", "personality", "kexec_load", "init_module"]
SYSCALL_ROWS = {"ptrace_traceme", "ptrace_attach_pid1", "unshare_user", "unshare_net", "clone_newns", "setns",
                "keyctl", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "personality", "kexec_load",
                "init_module"}
BENIGN = ["spawn_shell", "af_unix_socketpair", "write_scratch", "write_tmp", "write_dev_null", "write_dev_shm"]


@pytest.fixture(scope="module")
def host() -> SandboxHost:
    return sandbox_host(EXEC_TESTS_UID)


@pytest.fixture
def scratch_root() -> Iterator[Path]:
    """A scratch root the unprivileged host id can reach (pytest's own tmp dirs are root-only)."""
    path = Path(tempfile.mkdtemp(prefix="portcullis-sandbox-test-", dir="/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _runner(host: SandboxHost, root: Path, **limits: object) -> CodeRunner:
    lim = Limits(**{"cpu_s": 2, "wall_s": 20.0, "memory_bytes": 256 << 20, "max_processes": 16,
                    "max_output_bytes": 64 << 10, **limits})  # type: ignore[arg-type]
    return CodeRunner(CodeKitConfig(scratch_root=str(root), limits=lim), host)


@pytest.fixture(scope="module")
def probe(host: SandboxHost) -> Iterator[tuple[dict[str, str], int]]:
    """Runs the probe script once, with a canary variable in the gateway's environment and listeners up."""
    canary = Canary()
    os.environ[CANARY_ENV] = CANARY_VALUE
    try:
        source = (f"PORT = {canary.port}\nREPO = {REPO!r}\nCANARY = {CANARY_VALUE!r}\n"
                  f"CANARY_ENV = {CANARY_ENV!r}\n" + PROBE)
        root = Path(tempfile.mkdtemp(prefix="portcullis-sandbox-test-", dir="/tmp"))
        root.chmod(0o711)
        result = asyncio.run(_runner(host, root).run(source, tenant="t"))
    finally:
        shutil.rmtree(root, ignore_errors=True)
        del os.environ[CANARY_ENV]
        canary.close()
    assert result.exit_code == 0, result.stderr
    yield json.loads(result.stdout), canary.hits


@pytest.mark.parametrize("name", ESCAPES)
def test_escape_attempt_fails(probe: tuple[dict[str, str], int], name: str) -> None:
    """Host files, the gateway's environment, the network and the dangerous syscalls are out of reach."""
    if platform.machine() != "x86_64" and name in SYSCALL_ROWS:
        pytest.fail("the probe's raw syscall numbers are x86_64's: port them before trusting this run")
    assert probe[0][name] == "failed"


@pytest.mark.parametrize("name", BENIGN)
def test_benign_operation_works(probe: tuple[dict[str, str], int], name: str) -> None:
    """The confinement leaves ordinary work alone: unix socket pairs, scratch and /tmp writes."""
    assert probe[0][name] == "ok"


def test_landlock_applies_where_the_kernel_has_it(probe: tuple[dict[str, str], int]) -> None:
    """With Landlock, even the sandbox's own root directory cannot be listed (no rule grants it)."""
    assert probe[0]["list_root_dir"] == ("failed" if landlock_abi() > 0 else "ok")


def test_loopback_canary_received_no_connection(probe: tuple[dict[str, str], int]) -> None:
    """The listeners on 127.0.0.1 and ::1 saw zero connections from the sandboxed code."""
    assert probe[1] == 0


async def _with_ticker(coro: object) -> tuple[CodeResult, int]:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.02)
            ticks += 1

    ticker = asyncio.ensure_future(tick())
    try:
        result = await coro  # type: ignore[misc]
        during = ticks
        await asyncio.sleep(0.1)
        if result.duration_s > 1:
            assert during >= 1  # the loop served other tasks while the bomb ran
        return result, ticks - during
    finally:
        ticker.cancel()


BOMBS = [
    ("fork_bomb", "import os\nwhile True:\n    os.fork()\n", {}, "processes"),
    ("thread_bomb", "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(60,)).start()",
     {}, "processes"),
    ("memory_bomb", "x = []\nwhile True:\n    x.append(bytearray(16 << 20))\n", {}, "memory"),
    ("infinite_loop", "while True:\n    pass\n", {"cpu_s": 1}, "cpu"),
    ("sleeper", "import time\ntime.sleep(3600)\n", {"wall_s": 1.5}, "wall"),
    ("silent_sleeper", "import os, time\nos.close(1)\nos.close(2)\ntime.sleep(3600)\n", {"wall_s": 1.5}, "wall"),
    ("orphan", "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(3600)\n", {}, None),
    ("output_flood", "while True:\n    print('A' * 4096)\n", {}, "output"),
]


@pytest.mark.parametrize(("name", "source", "limits", "limit"), BOMBS, ids=[b[0] for b in BOMBS])
async def test_bomb_is_contained(host: SandboxHost, scratch_root: Path, name: str, source: str,
                                 limits: dict[str, object], limit: str | None) -> None:
    """Each bomb is stopped by its own limit, the caller's loop keeps ticking, and nothing is left running.

    ``orphan`` hits no limit: its main process exits at once, and the child it left behind dies with the
    sandbox's pid namespace.
    """
    result, ticks = await _with_ticker(_runner(host, scratch_root, **limits).run(source, tenant="t"))
    assert result.limit == limit, (result.exit_code, result.stderr[-300:])
    assert ticks >= 1  # the caller's event loop is still running its other tasks
    assert len(result.stdout.encode()) <= 64 << 10 and len(result.stderr.encode()) <= 64 << 10
    if limit == "output":
        assert result.stdout_truncated and result.exit_code is None
    if host.host_uid is not None:
        assert processes_of(host.host_uid) == []
    assert list(scratch_root.rglob("*")) == [next(scratch_root.iterdir())]  # only the empty tenant base is left


async def test_scratch_is_per_call_and_per_tenant(host: SandboxHost, scratch_root: Path) -> None:
    """A file written in one call is gone in the next call of the same tenant and never seen by another."""
    runner = _runner(host, scratch_root)
    write = "import os\nopen('/scratch/secret', 'w').write('s')\nprint(sorted(os.listdir('/scratch')))"
    look = "import os\nprint(sorted(os.listdir('/scratch')), sorted(os.listdir('/tmp')))"
    first = await runner.run(write, tenant="acme")
    again, other = await asyncio.gather(runner.run(look, tenant="acme"), runner.run(look, tenant="globex"))
    assert first.stdout.strip() == "['secret']"
    assert again.stdout.strip() == other.stdout.strip() == "[] []"
    assert sorted(p.name for p in scratch_root.iterdir()) == sorted(
        __import__("portcullis.kits.code", fromlist=["tenant_key"]).tenant_key(t) for t in ("acme", "globex"))
    assert not any(p.is_file() for p in scratch_root.rglob("*"))


async def test_first_thousand_primes(host: SandboxHost, scratch_root: Path) -> None:
    """Benign control: the first 1,000 primes are computed within the limits, output intact."""
    source = ("primes = []\nn = 2\nwhile len(primes) < 1000:\n"
              "    if all(n % p for p in primes if p * p <= n):\n        primes.append(n)\n    n += 1\n"
              "print(len(primes), primes[0], primes[-1], sum(primes))\n")
    result = await _runner(host, scratch_root).run(source, tenant="t")
    assert (result.exit_code, result.limit, result.stdout) == (0, None, "1000 2 7919 3682913\n")


async def test_cancelled_call_takes_the_child_down(host: SandboxHost, scratch_root: Path) -> None:
    """A caller that gives up (task cancelled) leaves no process and no scratch directory behind."""
    task = asyncio.ensure_future(_runner(host, scratch_root).run(
        "import os, time\nos.fork()\nprint('up', flush=True)\ntime.sleep(3600)\n", tenant="t"))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):  # the kernel tears the pid namespace down right after bwrap dies
        if host.host_uid is None or not processes_of(host.host_uid):
            break
        await asyncio.sleep(0.05)
    if host.host_uid is not None:
        assert processes_of(host.host_uid) == []
    assert not any(p.is_file() for p in scratch_root.rglob("*"))
