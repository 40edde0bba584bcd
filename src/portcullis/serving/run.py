"""One gateway process serving HTTP: binds its own sockets (``portcullis serve``) or serves sockets a
supervisor bound (a worker of ``portcullis serve --workers N``, :mod:`portcullis.serving.worker`).

Both paths build the gateway and the uvicorn server the same way; only where the sockets come from and
whether the process reports itself started (to its supervisor) differ.
"""

from __future__ import annotations

import gc
import socket
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from portcullis.config.loader import Deployment
from portcullis.gateway import Gateway
from portcullis.identity.tls import uvicorn_kwargs


class _Server(uvicorn.Server):
    """uvicorn's server that calls ``on_started`` once it accepts connections (the gateway's lifespan,
    which starts the background tasks and the admin listener, has run by then)."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None] | None) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self._on_started is not None:
            self._on_started()


def server_config(gateway: Gateway, deployment: Deployment, host: str, port: int) -> uvicorn.Config:
    """The MCP listener's uvicorn configuration (host and port are ignored when sockets are given)."""
    listen = deployment.gateway.listen
    transport: dict[str, Any] = uvicorn_kwargs(listen.tls) if listen.tls else {"http": HttpToolsProtocol}
    transport["http"] = gateway.http_protocol(transport["http"])  # header, timeout and per-client bounds
    # proxy_headers off: X-Forwarded-* from a client must never change what the gateway believes;
    # ws off: no request is ever upgraded away from the guarded HTTP protocol
    return uvicorn.Config(gateway.app, host=host, port=port, log_level="warning", access_log=False,
                          lifespan="on", loop="uvloop", timeout_graceful_shutdown=5, proxy_headers=False,
                          server_header=False, date_header=False, ws="none", **transport)


def serve_gateway(gateway: Gateway, deployment: Deployment, *, host: str, port: int,
                  sockets: list[socket.socket] | None = None, on_started: Callable[[], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM (graceful: open calls finish, then the background tasks stop)."""
    server = _Server(server_config(gateway, deployment, host, port), on_started)
    # Everything loaded so far (modules, configuration, compiled policy) lives as long as the process:
    # freezing it keeps the garbage collector's full passes from scanning it again and again, so a
    # request that allocates many objects cannot trigger a pass that stalls the loop (BENCHMARKS.md).
    gc.freeze()
    server.run(sockets=sockets)
    if not server.started:  # as uvicorn.run: a failed start (lifespan, bind) is exit status 3
        raise SystemExit(3)
