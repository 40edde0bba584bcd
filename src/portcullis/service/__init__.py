"""The Portcullis service kit: tool services that accept calls only through the gateway.

Public surface:

- :func:`create_service` / :class:`ServiceApp` — an ``MCPServer`` whose every tool call must
  carry a valid gateway-minted actor token (see :mod:`portcullis.service.kit`).
- :func:`current_principal` / :func:`current_call` — who is acting on the call being served.
- :class:`GatewayTokenVerifier` — the token check itself (see :mod:`portcullis.service.verify`),
  and :class:`ServiceAuthError`, what it raises.
"""

from portcullis.identity.minting import ACTOR_TOKEN_META_KEY
from portcullis.service.kit import ActorTokenGuard, ServiceApp, create_service, current_call, current_principal
from portcullis.service.verify import GatewayTokenVerifier, ReplayCache, ServiceAuthError, VerifiedCall

__all__ = [
    "ACTOR_TOKEN_META_KEY",
    "ActorTokenGuard",
    "GatewayTokenVerifier",
    "ReplayCache",
    "ServiceApp",
    "ServiceAuthError",
    "VerifiedCall",
    "create_service",
    "current_call",
    "current_principal",
]
