"""Who is calling: bearer-token verification for the gateway as an OAuth 2.1 resource server.

- :mod:`.issuers` — the trusted issuers (configuration).
- :mod:`.jwks` — each issuer's public keys, fetched from configuration only and cached.
- :mod:`.jwt_verify` — the numbered verification steps, ending in a :class:`VerifiedToken`.
"""

from portcullis.identity.issuers import IssuerConfig
from portcullis.identity.jwks import Fetcher, HttpsFetcher, JwksCache, JwksUnavailable, VerificationKey
from portcullis.identity.jwt_verify import BearerVerifier, InsufficientScope, InvalidToken, VerifiedToken

__all__ = [
    "BearerVerifier",
    "Fetcher",
    "HttpsFetcher",
    "InsufficientScope",
    "InvalidToken",
    "IssuerConfig",
    "JwksCache",
    "JwksUnavailable",
    "VerificationKey",
    "VerifiedToken",
]
