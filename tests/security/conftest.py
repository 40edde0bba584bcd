"""Fixtures for the security tables: real gateway processes with short, test-sized bounds."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.harness import GatewayProcess, copy_demo


def demo_with(root: Path, **sections: dict[str, Any]) -> Path:
    """The demo deployment with ``sections`` of gateway.yaml replaced or added."""
    copy_demo(root)
    path = root / "gateway.yaml"
    config = yaml.safe_load(path.read_text())
    config.update(sections)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def billing_demo_with(root: Path, **sections: dict[str, Any]) -> Path:
    """:func:`demo_with` without the demo's analytics and files services and what only they serve: for tests of
    the HTTP layer, the audit and billing's tools, where every other stdio service is a child each gateway
    start waits for."""
    demo_with(root, **sections)
    for part in ("tools/analytics", "tools/files", "prompts", "resources"):
        shutil.rmtree(root / part)
    for fixture in ("analytics", "files"):
        (root / "policy" / "fixtures" / f"{fixture}.yaml").unlink()
    path = root / "gateway.yaml"
    config = yaml.safe_load(path.read_text())
    config["services"] = {"billing": config["services"]["billing"]}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return root


@pytest.fixture(scope="module")
def bounded_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """The demo gateway with one-second header and body read timeouts."""
    root = billing_demo_with(tmp_path_factory.mktemp("bounded") / "deployment",
                     limits={"header_timeout_s": 1.0, "body_timeout_s": 1.0})
    with GatewayProcess(root) as gateway:
        yield gateway


def exchange(port: int, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it (or ``timeout``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except OSError:  # the server may answer and close before it has read everything
            pass
        return read_until_closed(sock, timeout=timeout)


def read_until_closed(sock: socket.socket, *, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection; raises TimeoutError past ``timeout``."""
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"connection still open after {timeout} s; got {b''.join(chunks)[:200]!r}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def status_of(response: bytes) -> int | None:
    """The status code of the first response in ``response``, or None if there is none."""
    if not response.startswith(b"HTTP/1.1 "):
        return None
    return int(response[9:12])
