"""The Portcullis service kit: tool services that accept calls only through the gateway.

Public surface:

- :func:`create_service` / :class:`ServiceApp` — an ``MCPServer`` whose every tool call must
  carry a valid gateway-minted actor token (see :mod:`portcullis.service.kit`).
- :func:`current_principal` / :func:`current_call` — who is acting on the call being served.
- :class:`GatewayTokenVerifier` — the token check itself (see :mod:`portcullis.service.verify`),
  and :class:`ServiceAuthError`, what it raises.
- :class:`ServicePolicies` — the service's manifest policies, re-checked on every ``tools/call``
  when given to :func:`create_service` (see :mod:`portcullis.service.policy_guard`), and
  :class:`PolicyLoadError`, what loading them raises.

- :mod:`portcullis.service.minimise` — data minimisation: :func:`project` (fields by pointer),
  :func:`aggregate` (groups of at least k rows), :func:`masked` (card, e-mail, phone, IBAN, SSN masks)
  and :func:`declared_output` (a result with an undeclared field is refused).

From the environment the gateway sets (:mod:`portcullis.service.env`): ``service_from_env``,
``verifier_from_env``, ``policies_from_env``.
"""

from portcullis.identity.minting import ACTOR_TOKEN_META_KEY
from portcullis.service.kit import (
    ActorTokenGuard,
    PolicyGuard,
    ServiceApp,
    create_service,
    current_call,
    current_principal,
)
from portcullis.service.minimise import (
    Aggregate,
    Metric,
    MinimisationError,
    aggregate,
    declared_output,
    masked,
    project,
)
from portcullis.service.policy_guard import FORBIDDEN_CODE, PolicyLoadError, ServicePolicies
from portcullis.service.verify import GatewayTokenVerifier, ReplayCache, ServiceAuthError, VerifiedCall

__all__ = [
    "ACTOR_TOKEN_META_KEY",
    "FORBIDDEN_CODE",
    "ActorTokenGuard",
    "Aggregate",
    "GatewayTokenVerifier",
    "Metric",
    "MinimisationError",
    "PolicyGuard",
    "PolicyLoadError",
    "ReplayCache",
    "ServiceApp",
    "ServiceAuthError",
    "ServicePolicies",
    "VerifiedCall",
    "aggregate",
    "create_service",
    "current_call",
    "current_principal",
    "declared_output",
    "masked",
    "project",
]
