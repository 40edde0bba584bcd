"""How a gateway-spawned service learns whom to trust: three environment variables.

The gateway sets them for every stdio service it starts (they are public values):

- ``PORTCULLIS_GATEWAY_JWKS`` — the gateway's public signing keys (a JWKS document, JSON);
- ``PORTCULLIS_GATEWAY_ISSUER`` — the ``iss`` its actor tokens carry;
- ``PORTCULLIS_SERVICE_AUDIENCE`` — this service's own audience (``portcullis-service:<name>``).

A service started without them cannot verify anyone and refuses to start.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping

from portcullis.service.verify import GatewayTokenVerifier

JWKS_ENV = "PORTCULLIS_GATEWAY_JWKS"
ISSUER_ENV = "PORTCULLIS_GATEWAY_ISSUER"
AUDIENCE_ENV = "PORTCULLIS_SERVICE_AUDIENCE"


class MissingGatewayTrust(RuntimeError):
    """The service was started without the gateway's keys; it must not serve."""


def gateway_env(jwks: Mapping[str, object], issuer: str, audience: str) -> dict[str, str]:
    """The variables the gateway sets for one service."""
    return {JWKS_ENV: json.dumps(jwks, separators=(",", ":")), ISSUER_ENV: issuer, AUDIENCE_ENV: audience}


def verifier_from_env(environ: Mapping[str, str] | None = None, *,
                      clock: Callable[[], float] = time.time) -> tuple[GatewayTokenVerifier, str]:
    """A verifier for this service and its audience, from the environment; fails closed."""
    env = os.environ if environ is None else environ
    missing = [name for name in (JWKS_ENV, ISSUER_ENV, AUDIENCE_ENV) if not env.get(name)]
    if missing:
        raise MissingGatewayTrust("not started by a Portcullis gateway: missing " + ", ".join(missing))
    try:
        jwks = json.loads(env[JWKS_ENV])
    except ValueError:
        raise MissingGatewayTrust(f"{JWKS_ENV} is not JSON") from None
    audience = env[AUDIENCE_ENV]
    return GatewayTokenVerifier(jwks, audience=audience, issuer=env[ISSUER_ENV], clock=clock), audience
