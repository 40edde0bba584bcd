"""TCP ports for servers the tests start as child processes, disjoint between pytest-xdist workers.

A test picks a port, hands its number to a child (gateway, upstream, fixture server) and the child binds it
a moment later. Port 0 from the kernel is free only at the moment it is asked for: with several workers in
parallel, two of them can be handed the same number in that window (or an outgoing connection can take it
as its source port), one child then fails to bind, or worse, a test talks to another worker's gateway.

So each worker takes ports from its own block *below* the kernel's ephemeral range
(``net.ipv4.ip_local_port_range``), which the kernel never hands out for port 0 or as a source port: no two
workers of a run share a port, and no client socket can take one. Inside its block a worker walks from a
random start (so that two test runs on one machine rarely meet) and skips any port that does not bind now
(another program's listener, a socket in TIME_WAIT).
"""

from __future__ import annotations

import os
import random
import re
import socket
from pathlib import Path

LOWEST = 20_000  # below it sit well-known and registered services' defaults more often
BLOCK = 1_000  # ports per worker; a run allocates a few hundred at most per worker


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux default


def _worker_index() -> int:
    """0 for a run without xdist, N for worker ``gwN``."""
    match = re.fullmatch(r"gw(\d+)", os.environ.get("PYTEST_XDIST_WORKER", "gw0"))
    return int(match.group(1)) if match else 0


def _block() -> range | None:
    start = LOWEST + _worker_index() * BLOCK
    return range(start, start + BLOCK) if start + BLOCK <= _ephemeral_start() else None


_BLOCK = _block()
_next = random.SystemRandom().randrange(BLOCK)


def _binds(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1, free now and handed to no other worker of this run."""
    global _next
    if _BLOCK is not None:
        for _ in range(BLOCK):
            port = _BLOCK[_next % BLOCK]
            _next += 1
            if _binds(port):
                return port
    # no block for this worker (a tiny ephemeral range or very many workers), or all of it busy: the kernel's
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
