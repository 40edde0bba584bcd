"""A stdio service the gateway spawns cannot leave its sandbox, and the gateway keeps serving meanwhile.

One gateway, two services from ``tests.security.sandbox_probe_stdio``: ``probe`` tries, one call
at a time, to read a host canary file outside its view, write outside its writable path, connect
to a loopback canary listener, read the gateway's canary environment variable, fork past its
process limit and allocate past its memory limit; ``calm`` must answer throughout. Every attempt
fails or is contained (the listener sees zero connections), the benign controls work (its
writable path, its declared variable), and each spawn left a ``spawn`` record in a chain that
verifies. The real kernel, the real bwrap: nothing is mocked.
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from tests.e2e.audit_load import STORE_FILE, read_chain
from tests.e2e.harness import REPO, GatewayProcess, manifest_from_live, run_cli, write_deployment
from tests.ports import free_port
from tests.security.sandbox_probe_stdio import TOOL

CANARY_TEXT = "host-canary-7f3a9c"
ENV_CANARY = "PORTCULLIS_TEST_GATEWAY_CANARY"
ENV_CANARY_VALUE = "gateway-only-5e1d"


class Listener:
    """A loopback TCP listener that counts the connections it accepts (it must see none)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.sock = socket.create_server(("127.0.0.1", self.port))
        self.accepted = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@dataclass
class Setup:
    gateway: GatewayProcess
    base: Path
    listener: Listener


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("stdio-sandbox")
    (base / "host-canary.txt").write_text(CANARY_TEXT)
    (base / "out").mkdir()
    def service() -> dict[str, object]:  # a fresh value each time: YAML anchors are refused
        return {"transport": "stdio", "command": sys.executable, "args": ["-m", "tests.security.sandbox_probe_stdio"],
                "cwd": str(REPO), "timeout_s": 30}

    gateway = {"version": 1, "identity": {"allow_insecure_dev_issuer": True}, "services": {
        "probe": {**service(), "env_passthrough": ["PORTCULLIS_TEST_DECLARED"], "sandbox": {
            "writable_paths": [str(base / "out")], "max_processes": 32, "memory_mb": 512}},
        "calm": service()}}
    root = write_deployment(base / "deployment", gateway, [manifest_from_live("probe", TOOL),
                                                           manifest_from_live("calm", TOOL)])
    done = run_cli("pin", str(root))
    assert done.returncode == 0, done.stdout + done.stderr
    listener = Listener()
    env = {ENV_CANARY: ENV_CANARY_VALUE, "PORTCULLIS_TEST_DECLARED": "declared-value"}
    try:
        with GatewayProcess(root, env=env) as process:
            yield Setup(process, base, listener)
    finally:
        listener.close()


def _probe(setup: Setup, service: str, action: str, target: str = "") -> str:
    async def run() -> str:
        async with setup.gateway.client() as client:
            result = await client.call_tool(f"{service}.probe", {"action": action, "target": target})
        return str(result.content[0].text)

    return anyio.run(run)


@pytest.mark.parametrize(("action", "target", "expected"), [
    ("read", "{base}/host-canary.txt", "denied:FileNotFoundError"),  # outside the view: not there at all
    ("read", "/etc/hostname", "denied:FileNotFoundError"),  # no /etc
    ("read", "/root/.ssh/id_rsa", "denied:FileNotFoundError"),
    # beside its writable path (under the host's /tmp), or in a directory the view only passes through: it
    # lands in the sandbox's own throw-away file system (or is refused), never on the host (checked below)
    ("write", "{base}/escaped.txt", "written|denied:OSError"),
    ("write", "/root/escaped-from-sandbox.txt", "written|denied:OSError"),
    ("write", "{repo}/tests/escaped-from-sandbox.txt", "denied:OSError"),  # its cwd is read-only
    ("write", "{venv}/escaped-from-sandbox.txt", "denied:OSError"),  # the interpreter is read-only
    ("connect", "{port}", "denied:PermissionError"),  # the seccomp filter: AF_UNIX sockets only
    ("env", ENV_CANARY, "absent"),  # the gateway's own environment never reaches the child
    ("env", "PATH", "absent"),
    ("memory", "1024", "denied:MemoryError"),  # past memory_mb 512
])
def test_an_escape_attempt_fails(setup: Setup, action: str, target: str, expected: str) -> None:
    """Each attempt to reach past the view, the network or the environment is refused in the sandbox."""
    target = target.format(base=setup.base, repo=REPO, venv=Path(sys.prefix), port=setup.listener.port)
    assert _probe(setup, "probe", action, target) in expected.split("|")
    for host_path in (setup.base / "escaped.txt", REPO / "tests" / "escaped-from-sandbox.txt",
                      Path("/root/escaped-from-sandbox.txt"), Path(sys.prefix) / "escaped-from-sandbox.txt"):
        assert not host_path.exists()


def test_the_benign_controls_work(setup: Setup) -> None:
    """The writable path is written on the host, the declared variable arrives, /tmp is private."""
    assert _probe(setup, "probe", "write", str(setup.base / "out" / "ok.txt")) == "written"
    assert (setup.base / "out" / "ok.txt").read_text() == "written from the sandbox\n"
    assert _probe(setup, "probe", "env", "PORTCULLIS_TEST_DECLARED") == "present"
    assert _probe(setup, "probe", "write", "/tmp/sandbox-private.txt") == "written"
    assert not Path("/tmp/sandbox-private.txt").exists()


def test_a_fork_bomb_is_contained_and_the_gateway_keeps_serving(setup: Setup) -> None:
    """Forking past max_processes fails inside the sandbox; both services still answer."""
    answer = _probe(setup, "probe", "fork", "400")
    assert answer.startswith("forked ") and "denied" in answer, answer
    assert int(answer.split()[1]) < 32
    assert _probe(setup, "calm", "ok") == "ok"
    assert _probe(setup, "probe", "ok") == "ok"


def test_the_loopback_canary_saw_no_connection(setup: Setup) -> None:
    """After every attempt above (and a direct one here), the host's loopback listener was never reached."""
    assert _probe(setup, "probe", "connect", str(setup.listener.port)).startswith("denied:")
    assert setup.listener.accepted == 0


def test_each_spawn_is_recorded_and_the_chain_verifies(setup: Setup) -> None:
    """Each service's spawn left a record naming its confinement; `portcullis audit verify` passes."""
    records = anyio.run(read_chain, setup.gateway.state_dir / STORE_FILE)
    spawns = {r.fields["service"]: r.fields for r in records if r.kind == "spawn"}
    assert set(spawns) == {"probe", "calm"}
    probe = spawns["probe"]
    assert probe["outcome"] == "spawning" and probe["launcher"] == "command"
    assert probe["confinement"]["backend"] == "bubblewrap" and probe["confinement"]["network"] == "none"
    assert {"path": str(setup.base / "out"), "mode": "rw", "origin": "declared"} in probe["confinement"]["view"]
    assert probe["confinement"]["limits"]["max_processes"] == 32
    assert "PORTCULLIS_TEST_DECLARED" in probe["env_names"] and ENV_CANARY not in probe["env_names"]
    assert "declared-value" not in str(probe)
    done = run_cli("audit", "verify", "--store", str(setup.gateway.state_dir / STORE_FILE), "--public-key",
                   str(setup.gateway.state_dir / "audit-signing.pub.pem"))
    assert done.returncode == 0, done.stdout + done.stderr
