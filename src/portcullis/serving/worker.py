"""One worker of ``portcullis serve --workers N`` (started by :mod:`portcullis.serving.supervisor`).

It serves the supervisor's inherited sockets and writes one byte to its ready pipe once it accepts
connections. It dies with its supervisor (``PR_SET_PDEATHSIG`` on Linux; elsewhere it notices the
parent change). SIGHUP is ignored until the policy reloader installs its handler, so a reload signal
forwarded while the worker is still starting cannot kill it.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sys
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent or parent == 1:  # the supervisor died before the line above
        raise SystemExit(1)


#: a worker accepts on the shared socket once its services are connected, or after this long (a service that
#: never comes up must not keep the worker out: it serves as a single gateway would, answering its readiness)
READY_GATE_S = 60.0


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _die_with_parent()
    spec = json.loads(argv[0])

    from portcullis import logs
    from portcullis.cli.safe_text import lines_safe
    from portcullis.config.loader import load_deployment
    from portcullis.errors import ConfigError
    from portcullis.gateway import build_gateway
    from portcullis.observability.multiprocess import MULTIPROC_ENV
    from portcullis.serving.run import serve_gateway

    logs.configure(str(spec["log_level"]).upper())
    listen = socket.socket(fileno=int(spec["listen_fd"]))
    admin = None if spec["admin_fd"] is None else socket.socket(fileno=int(spec["admin_fd"]))
    ready_fd = int(spec["ready_fd"])
    try:
        deployment = load_deployment(Path(spec["config"]))
        metrics_dir = os.environ.get(MULTIPROC_ENV)  # set by the supervisor: /metrics reports every worker
        gateway = build_gateway(deployment, host=spec["host"], port=int(spec["port"]),
                                admin_sockets=None if admin is None else [admin],
                                metrics_dir=None if not metrics_dir else Path(metrics_dir),
                                ready_gate_s=READY_GATE_S)
    except ConfigError as exc:
        for problem in exc.problems:
            print(lines_safe(str(problem)), file=sys.stderr)
        raise SystemExit(2) from None

    def started() -> None:
        os.write(ready_fd, b"1")
        os.close(ready_fd)

    serve_gateway(gateway, deployment, host=spec["host"], port=int(spec["port"]), sockets=[listen],
                  on_started=started)


if __name__ == "__main__":
    main(sys.argv[1:])
