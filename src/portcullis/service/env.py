"""How a gateway-spawned service learns whom to trust and which policies to enforce: the environment.

The gateway sets these for every stdio service it starts (they are public values):

- ``PORTCULLIS_GATEWAY_JWKS`` — the gateway's public signing keys (a JWKS document, JSON);
- ``PORTCULLIS_GATEWAY_ISSUER`` — the ``iss`` its actor tokens carry;
- ``PORTCULLIS_SERVICE_AUDIENCE`` — this service's own audience (``portcullis-service:<name>``);
- ``PORTCULLIS_POLICY_ROOT`` — the deployment directory, absolute: the service re-checks every
  ``tools/call`` against its manifests' policies (:mod:`portcullis.service.policy_guard`);
- ``PORTCULLIS_ENVIRONMENT`` — the gateway environment the calls are made in;
- ``PORTCULLIS_POLICY_ENFORCE=1`` — policy is expected. The gateway sets it last, over anything
  the operator put in the service's ``env``, so a configured ``0`` cannot switch the check off
  behind the gateway's back (the service refuses to start on the contradiction instead).

A service started without the first three cannot verify anyone and refuses to start.

Policy is on unless switched off out loud. :func:`policies_from_env`, by
``PORTCULLIS_POLICY_ENFORCE``:

- unset or ``1``: ``PORTCULLIS_POLICY_ROOT`` (absolute) and ``PORTCULLIS_ENVIRONMENT`` must both
  be set and the policies must load, or the service refuses to start;
- ``0``: no policy at the service, only the gateway's. Allowed only without
  ``PORTCULLIS_POLICY_ROOT``, and a warning is logged at every start;
- anything else: refuses to start.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from portcullis.identity.minting import service_audience
from portcullis.service.kit import ServiceApp, create_service
from portcullis.service.policy_guard import ServicePolicies
from portcullis.service.verify import GatewayTokenVerifier

logger = logging.getLogger("portcullis.service")

JWKS_ENV = "PORTCULLIS_GATEWAY_JWKS"
ISSUER_ENV = "PORTCULLIS_GATEWAY_ISSUER"
AUDIENCE_ENV = "PORTCULLIS_SERVICE_AUDIENCE"
POLICY_ROOT_ENV = "PORTCULLIS_POLICY_ROOT"
ENVIRONMENT_ENV = "PORTCULLIS_ENVIRONMENT"
POLICY_ENFORCE_ENV = "PORTCULLIS_POLICY_ENFORCE"


class MissingGatewayTrust(RuntimeError):
    """The service was started without the gateway's keys; it must not serve."""


class MissingServicePolicy(MissingGatewayTrust):
    """The service is expected to enforce policy but was not told where it is; it must not serve."""


def gateway_env(jwks: Mapping[str, object], issuer: str, audience: str, *,
                policy_root: Path | str | None = None, environment: str | None = None) -> dict[str, str]:
    """The variables the gateway sets for one service; with ``policy_root`` (the deployment
    directory) and ``environment``, also those that make the service enforce its policies."""
    env = {JWKS_ENV: json.dumps(jwks, separators=(",", ":")), ISSUER_ENV: issuer, AUDIENCE_ENV: audience}
    if (policy_root is None) != (environment is None):
        raise ValueError("give both policy_root and environment, or neither")
    if policy_root is not None and environment is not None:
        if not environment:
            raise ValueError("environment must be a non-empty name")
        # absolute: the child may run in another working directory (the service's cwd:)
        env |= {POLICY_ROOT_ENV: str(Path(policy_root).resolve()), ENVIRONMENT_ENV: environment,
                POLICY_ENFORCE_ENV: "1"}
    return env


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


def policies_from_env(service: str, environ: Mapping[str, str] | None = None) -> ServicePolicies | None:
    """The policies of ``service`` named by the environment, or None where switched off out loud.

    Raises :class:`MissingServicePolicy` when policy is expected but not configured, and
    :class:`~portcullis.service.policy_guard.PolicyLoadError` (a ValueError) when it does not load.
    """
    env = os.environ if environ is None else environ
    enforce, root = env.get(POLICY_ENFORCE_ENV, "1"), env.get(POLICY_ROOT_ENV)
    if enforce not in ("0", "1"):
        raise MissingServicePolicy(f"{POLICY_ENFORCE_ENV} must be 1 or 0")
    if enforce == "0":
        if root:
            raise MissingServicePolicy(f"{POLICY_ENFORCE_ENV} is 0 but {POLICY_ROOT_ENV} is set: refusing to guess")
        logger.warning("UNSAFE: this service does not check tool policies; only the gateway does",
                       extra={"fields": {"service": service, "env": f"{POLICY_ENFORCE_ENV}=0"}})
        return None
    environment = env.get(ENVIRONMENT_ENV)
    if not root or not environment:
        missing = [name for name, value in ((POLICY_ROOT_ENV, root), (ENVIRONMENT_ENV, environment)) if not value]
        raise MissingServicePolicy(f"policy enforcement is expected: missing {', '.join(missing)} "
                                   f"(set {POLICY_ENFORCE_ENV}=0 to run without it)")
    if not Path(root).is_absolute():
        raise MissingServicePolicy(f"{POLICY_ROOT_ENV} must be an absolute path")
    return ServicePolicies.load(Path(root), service, environment=environment)


def service_from_env(name: str, environ: Mapping[str, str] | None = None, *,
                     clock: Callable[[], float] = time.time, **mcpserver_kwargs: Any) -> ServiceApp:
    """A kit service ``name`` trusting the gateway and enforcing the policies the environment names.

    Raises :class:`MissingGatewayTrust` (or its :class:`MissingServicePolicy`) or ValueError:
    a service that cannot verify calls, or cannot check them when told to, must not start.
    """
    verifier, audience = verifier_from_env(environ, clock=clock)
    if audience != service_audience(name):
        raise MissingGatewayTrust(f"{AUDIENCE_ENV} is {audience!r}, not {service_audience(name)!r}")
    policies = policies_from_env(name, environ)
    return create_service(name, audience=audience, verifier=verifier, policies=policies, clock=clock,
                          **mcpserver_kwargs)
