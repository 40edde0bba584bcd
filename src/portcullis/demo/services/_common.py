"""Start-up shared by the demo services: trust the gateway that spawned the process, or refuse to run.

The gateway starts each demo service with its public keys, its issuer and the service's audience
in the environment (:mod:`portcullis.service.env`). Without them, or with an audience meant for
another service, a demo service prints one line to stderr and exits with status 2: it never
serves a single call it could not verify.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from portcullis.identity.minting import service_audience
from portcullis.service import GatewayTokenVerifier, ServiceApp, create_service
from portcullis.service.env import AUDIENCE_ENV, MissingGatewayTrust, policies_from_env, verifier_from_env

EXIT_NO_TRUST = 2


def new_service(name: str, verifier: GatewayTokenVerifier, *, instructions: str) -> ServiceApp:
    """An empty service kit app called ``name`` that accepts only tokens for ``service_audience(name)``."""
    return create_service(name, audience=service_audience(name), verifier=verifier, instructions=instructions,
                          policies=policies_from_env(name))


def serve(name: str, build_server: Callable[[GatewayTokenVerifier], ServiceApp]) -> None:
    """Build the service from the gateway's environment and serve it over stdio, or exit 2."""
    try:
        verifier, audience = verifier_from_env()
        if audience != service_audience(name):
            raise MissingGatewayTrust(f"{AUDIENCE_ENV} is {audience!r}, not {service_audience(name)!r}")
        app = build_server(verifier)  # loads the manifest policies this service re-checks
    except (MissingGatewayTrust, ValueError) as exc:  # ValueError: untrusted JWKS, or policies that do not load
        print(f"portcullis demo service {name!r} refuses to start: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_NO_TRUST) from None
    app.run()
