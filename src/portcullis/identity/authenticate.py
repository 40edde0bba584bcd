"""Authenticate and identify: verified credentials to an actor principal.

Runs in the transport for every request to ``/mcp`` (tools/list included), before the body is
read. In order:

1. a bearer token, if the request has an ``Authorization`` header: verified by
   :class:`~portcullis.identity.jwt_verify.BearerVerifier` (pinned algorithms, issuer, audience,
   times), then the scopes every request needs, then the claim mapping
   (:mod:`~portcullis.identity.claims`: a malformed claim refuses the token), then the revocation
   list (token id, client, agent); the principal's fields come only from the verified claims;
2. otherwise a client certificate verified by the TLS handshake, mapped by the ``mtls`` rules
   (source ``mtls``; never a person);
3. otherwise, only when ``allow_insecure_anonymous`` is set, an anonymous principal (warned;
   source ``anonymous``);
4. otherwise 401 with a ``WWW-Authenticate`` challenge naming the resource metadata.

Every principal names its source (``issuer_name``: the issuer's configured name, ``dev``, ``mtls``
or ``anonymous``) so that caller patterns can be scoped to it. Nothing in a principal comes from
the request body or from a header a client can set freely. Every refusal is an
:class:`AuthFailure` (401 ``invalid_token``, 403, 503), never another exception.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from portcullis.errors import PortcullisError
from portcullis.identity.certs import CertIdentityMapper
from portcullis.identity.claims import ClaimRejected, principal_from_claims
from portcullis.identity.config import ClaimMap
from portcullis.identity.issuers import PersonSignal
from portcullis.identity.jwt_verify import BearerVerifier, InsufficientScope, InvalidToken, VerifiedToken
from portcullis.identity.principal import ANONYMOUS_SOURCE, MTLS_SOURCE, Principal
from portcullis.identity.revocation import RevocationList, RevocationUnavailable, Revoked
from portcullis.identity.tls import peer_certificate

log = logging.getLogger("portcullis.identity")

_CACHE_TTL_S = 60.0
_CACHE_ENTRIES = 10_000
ANONYMOUS = Principal(client_id="anonymous", auth_method="dev", issuer="portcullis://anonymous",
                      issuer_name=ANONYMOUS_SOURCE)


class AuthFailure(PortcullisError):
    """401 / 403 / 503 with the challenge the transport sends as ``WWW-Authenticate``."""

    def __init__(self, status: int, error: str, description: str, challenge: str, *, detail: str = "") -> None:
        super().__init__(error, detail=detail)
        self.status, self.error, self.description, self.challenge = status, error, description, challenge


def principal_from_token(token: VerifiedToken, claim_map: ClaimMap, issuer: str, auth_method: str, *,
                         person: PersonSignal | None = None) -> Principal:
    """Map verified claims to a principal (:mod:`~portcullis.identity.claims`); malformed: :class:`InvalidToken`.

    Every failure is the same 401 ``invalid_token``: the principal's own checks (sizes, types) are
    translated too, so no claim can surface as a server error.
    """
    try:
        return principal_from_claims(token.claims, claim_map, subject=token.subject, issuer=issuer,
                                     issuer_name=token.issuer_name, auth_method=auth_method, person=person,
                                     scopes=token.scopes)
    except ClaimRejected as exc:
        raise InvalidToken(exc.reason) from None
    except ValueError:
        raise InvalidToken("bad_claim") from None


class Authenticator:
    def __init__(self, *, verifier: BearerVerifier | None, claim_map: ClaimMap, required_scopes: Sequence[str],
                 revocations: RevocationList, cert_mapper: CertIdentityMapper | None, allow_anonymous: bool,
                 resource_metadata_url: str, issuer_names: Mapping[str, str], dev_issuer_name: str | None,
                 person_signals: Mapping[str, PersonSignal] | None = None) -> None:
        self._verifier = verifier
        self._claims = claim_map
        self._required = tuple(required_scopes)
        self._revocations = revocations
        self._certs = cert_mapper
        self._anonymous = allow_anonymous
        self._metadata = resource_metadata_url
        self._issuers = dict(issuer_names)  # issuer config name -> iss string
        self._dev = dev_issuer_name
        self._people = dict(person_signals or {})  # issuer config name -> its person signal
        scope = f', scope="{" ".join(self._required)}"' if self._required else ""
        self._bare_challenge = f'Bearer resource_metadata="{self._metadata}"{scope}'
        # Signature checks are the costliest step; a token already verified (and mapped to its
        # principal) is not re-verified for up to a minute (never past its own expiry). Bounded:
        # the oldest entries go first when full.
        self._verified: dict[str, tuple[VerifiedToken, Principal, float]] = {}

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
                                      issuer="mtls", issuer_name=MTLS_SOURCE,
                                      attributes={"cert_sha256": identity.fingerprint_sha256})
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
        if cached is not None and cached[2] > now:
            verified, principal = cached[0], cached[1]
        else:
            try:
                verified = await self._verifier.verify(token)
                verified.require_scopes(*self._required)
                method = "dev" if verified.issuer_name == self._dev else "bearer"
                principal = principal_from_token(verified, self._claims, self._issuers.get(verified.issuer_name, "?"),
                                                 method, person=self._people.get(verified.issuer_name))
            except InvalidToken as exc:
                raise self._invalid(exc.reason_code) from None
            except InsufficientScope as exc:
                needed = " ".join(exc.required_scopes)
                raise AuthFailure(403, "insufficient_scope", "Insufficient scope",
                                  f'Bearer error="insufficient_scope", scope="{needed}", '
                                  f'resource_metadata="{self._metadata}", error_description="Insufficient scope"',
                                  detail="missing scope") from None
            self._remember(token, verified, principal, now)
        self._check_revoked(verified.jti, principal)
        return principal

    def _remember(self, token: str, verified: VerifiedToken, principal: Principal, now: float) -> None:
        """Cache a verified token until it expires, at most ``_CACHE_TTL_S`` (revocation is still per request)."""
        if len(self._verified) >= _CACHE_ENTRIES:
            expired = [k for k, (_, _, until) in self._verified.items() if until <= now]
            for key in expired or [next(iter(self._verified))]:
                del self._verified[key]
        until = min(float(verified.expires_at or now), now + _CACHE_TTL_S)
        self._verified[token] = (verified, principal, until)

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
