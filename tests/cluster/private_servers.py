"""A PostgreSQL and a Redis of a test's own, on free ports in a temporary directory, that the test may stop and
start again (same port, same data). The shared servers on 5432 / 6379 are never touched.

* :class:`PrivateRedis`: ``redis-server`` (optionally with a password) with nothing kept on disk (a restart
  starts empty, as a cache failing over would); :meth:`stop` is SIGTERM.
* :class:`PrivatePostgres`: ``initdb --auth=trust`` into the temporary directory, ``pg_ctl start`` on a free
  loopback port with ``fsync=off`` (data survives a clean stop; speed over durability of the throwaway data);
  :meth:`stop` is ``pg_ctl stop -m fast`` (backends are terminated, clients see their connections broken).
  Run as the ``postgres`` OS user when the tests run as root (PostgreSQL refuses to run as root).

A missing binary skips the test locally and fails it under CI (``CI`` set), saying which and why
(scripts/bootstrap.sh installs both).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.e2e.harness import wait_port
from tests.ports import free_port


def _missing(what: str) -> None:
    reason = f"{what} not found (scripts/bootstrap.sh installs it)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; required under CI")
    pytest.skip(reason)


def _pg_bindir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres: PATH, then ``pg_config --bindir``, then Debian's."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).parent
    candidates = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    for candidate in candidates:
        if candidate and all((Path(candidate) / b).is_file() for b in ("initdb", "pg_ctl", "postgres")):
            return Path(candidate)
    return None


class PrivateRedis:
    def __init__(self, tmp: Path, password: str = "") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            _missing("redis-server")
        self._binary = str(binary)
        self.dir = tmp / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self._password = password
        self.url = f"redis://{':' + password + '@' if password else ''}127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateRedis:
        assert self._proc is None or self._proc.poll() is not None, "already running"
        self._proc = subprocess.Popen(
            [self._binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log"),
             *(("--requirepass", self._password) if self._password else ())],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, timeout=60)
        return self

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


class PrivatePostgres:
    def __init__(self) -> None:
        bindir = _pg_bindir()
        if bindir is None:
            _missing("PostgreSQL server binaries (initdb, pg_ctl, postgres)")
        assert bindir is not None
        self._bin = bindir
        self._as: list[str] = []
        # not under pytest's tmp_path: its parents are root-only, the postgres user could not reach them
        self.root = Path(tempfile.mkdtemp(prefix="portcullis-pg-"))
        self.data = self.root / "data"
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                _missing("the postgres OS user (running as root)")
            self._as = ["runuser", "-u", "postgres", "--"]
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._initdb()

    def _run(self, *args: str, timeout: float = 120) -> None:
        out = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=timeout, check=False)
        if out.returncode != 0:
            raise AssertionError(f"{args[0]} failed ({out.returncode}):\n{out.stdout}{out.stderr}")

    def _initdb(self) -> None:
        self._run(str(self._bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C")

    def start(self) -> PrivatePostgres:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{self.root}' "
                   "-c fsync=off -c full_page_writes=off -c max_connections=60")
        self._run(str(self._bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-o", options,
                  "-w", "-t", "60", "start")
        wait_port(self.port, timeout=60)
        return self

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def stop(self) -> None:
        if self.running():
            self._run(str(self._bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def remove(self) -> None:
        """Stop (if running) and delete the data directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
