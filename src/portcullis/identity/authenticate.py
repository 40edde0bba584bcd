"""Authenticate and identify: verified credentials to an actor principal.

Runs in the transport for every request to ``/mcp`` (tools/list included), before the body is
read. In order:

1. a bearer token, if the request has an ``Authorization`` header: verified by
   :class:`~portcullis.identity.jwt_verify.BearerVerifier` (pinned algorithms, issuer, audience,
   times), then the scopes every request needs, then the revocation list (token id, client,
   agent); the principal's fields come only from the verified claims, via the claim map;
2. otherwise a client certificate verified by the TLS handshake, mapped by the ``mtls`` rules;
3. otherwise, only when ``allow_insecure_anonymous`` is set, an anonymous principal (warned);
4. otherwise 401 with a ``WWW-Authenticate`` challenge naming the resource metadata.

Nothing in a principal comes from the request body or from a header a client can set freely.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from portcullis.errors import PortcullisError
from portcullis.identity.certs import CertIdentityMapper
from portcullis.identity.config import ClaimMap
from portcullis.identity.jwt_verify import BearerVerifier, InsufficientScope, InvalidToken, VerifiedToken
from portcullis.identity.principal import Principal
from portcullis.identity.revocation import RevocationList, RevocationUnavailable, Revoked
from portcullis.identity.tls import peer_certificate

log = logging.getLogger("portcullis.identity")

_CACHE_TTL_S = 60.0
_CACHE_ENTRIES = 10_000
ANONYMOUS = Principal(client_id="anonymous", auth_method="dev", issuer="portcullis://anonymous")


class AuthFailure(PortcullisError):
    """401 / 403 / 503 with the challenge the transport sends as ``WWW-Authenticate``."""

    def __init__(self, status: int, error: str, description: str, challenge: str, *, detail: str = "") -> None:
        super().__init__(error, detail=detail)
        self.status, self.error, self.description, self.challenge = status, error, description, challenge


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def principal_from_token(token: VerifiedToken, claim_map: ClaimMap, issuer: str, auth_method: str) -> Principal:
    """Map verified claims to a principal; claims of the wrong type are ignored, never coerced."""
    claims = token.claims

    def pick(name: str | None) -> str | None:
        return _text(claims.get(name)) if name else None

    client_id = next((v for v in (pick(n) for n in claim_map.client_id) if v), None) or token.subject
    roles_claim = claims.get(claim_map.roles) if claim_map.roles else None
    if isinstance(roles_claim, str):
        roles: tuple[str, ...] = tuple(roles_claim.split())
    elif isinstance(roles_claim, list):
        roles = tuple(r for r in roles_claim if isinstance(r, str))
    else:
        roles = ()
    attributes = {attr: v for attr, claim in claim_map.attributes.items() if (v := pick(claim)) is not None}
    return Principal(user_id=pick(claim_map.user_id), agent_id=pick(claim_map.agent_id), client_id=client_id,
                     session_id=pick(claim_map.session_id), source_app=pick(claim_map.source_app),
                     tenant=pick(claim_map.tenant), roles=roles, scopes=token.scopes, attributes=attributes,
                     auth_method=auth_method, issuer=issuer)


class Authenticator:
    def __init__(self, *, verifier: BearerVerifier | None, claim_map: ClaimMap, required_scopes: Sequence[str],
                 revocations: RevocationList, cert_mapper: CertIdentityMapper | None, allow_anonymous: bool,
                 resource_metadata_url: str, issuer_names: Mapping[str, str], dev_issuer_name: str | None) -> None:
        self._verifier = verifier
        self._claims = claim_map
        self._required = tuple(required_scopes)
        self._revocations = revocations
        self._certs = cert_mapper
        self._anonymous = allow_anonymous
        self._metadata = resource_metadata_url
        self._issuers = dict(issuer_names)  # issuer config name -> iss string
        self._dev = dev_issuer_name
        scope = f', scope="{" ".join(self._required)}"' if self._required else ""
        self._bare_challenge = f'Bearer resource_metadata="{self._metadata}"{scope}'
        # Signature checks are the costliest step; a token already verified is not re-verified for up
        # to a minute (never past its own expiry). Bounded: the oldest entries go first when full.
        self._verified: dict[str, tuple[VerifiedToken, float]] = {}

    async def authenticate(self, headers: Mapping[str, str], scope: Mapping[str, Any]) -> Principal:
        authorization = headers.get("authorization")
        if authorization is not None:
            return await self._bearer(authorization)
        if self._certs is not None:
            pem = peer_certificate(scope)
            if pem is not None:
                identity = self._certs.map(pem)
                if identity is None:
                    raise self._invalid("certificate_not_mapped")
                principal = Principal(client_id=identity.client_id, agent_id=identity.agent_id,
                                      tenant=identity.tenant, roles=identity.roles, auth_method="mtls",
                                      issuer="mtls", attributes={"cert_sha256": identity.fingerprint_sha256})
                self._check_revoked(None, principal)
                return principal
        if self._anonymous:
            log.warning("allow_insecure_anonymous: request accepted without credentials")
            return ANONYMOUS
        raise AuthFailure(401, "invalid_token", "Authentication required", self._bare_challenge,
                          detail="no credentials")

    async def _bearer(self, authorization: str) -> Principal:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip() or self._verifier is None:
            raise self._invalid("not_a_bearer_token")
        token = token.strip()
        now = time.time()
        cached = self._verified.get(token)
        try:
            if cached is not None and cached[1] > now:
                verified = cached[0]
            else:
                verified = await self._verifier.verify(token)
                verified.require_scopes(*self._required)
                self._remember(token, verified, now)
        except InvalidToken as exc:
            raise self._invalid(exc.reason_code) from None
        except InsufficientScope as exc:
            needed = " ".join(exc.required_scopes)
            raise AuthFailure(403, "insufficient_scope", "Insufficient scope",
                              f'Bearer error="insufficient_scope", scope="{needed}", '
                              f'resource_metadata="{self._metadata}", error_description="Insufficient scope"',
                              detail="missing scope") from None
        method = "dev" if verified.issuer_name == self._dev else "bearer"
        principal = principal_from_token(verified, self._claims, self._issuers.get(verified.issuer_name, "?"),
                                         method)
        self._check_revoked(verified.jti, principal)
        return principal

    def _remember(self, token: str, verified: VerifiedToken, now: float) -> None:
        """Cache a verified token until it expires, at most ``_CACHE_TTL_S`` (revocation is still per request)."""
        if len(self._verified) >= _CACHE_ENTRIES:
            for key in [k for k, (_, until) in self._verified.items() if until <= now] or [next(iter(self._verified))]:
                del self._verified[key]
        until = min(float(verified.expires_at or now), now + _CACHE_TTL_S)
        self._verified[token] = (verified, until)

    def _check_revoked(self, jti: str | None, principal: Principal) -> None:
        try:
            self._revocations.check(jti=jti, client_id=principal.client_id, agent_id=principal.agent_id)
        except Revoked:
            raise self._invalid("revoked") from None
        except RevocationUnavailable:
            raise AuthFailure(503, "temporarily_unavailable", "Authentication temporarily unavailable",
                              self._bare_challenge, detail="revocation list unavailable") from None

    def _invalid(self, reason: str) -> AuthFailure:
        return AuthFailure(401, "invalid_token", "Authentication required",
                           f'Bearer error="invalid_token", error_description="Authentication required", '
                           f'resource_metadata="{self._metadata}"', detail=reason)
