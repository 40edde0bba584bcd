"""The console's OpenID Connect client: discovery, the authorization request, the code exchange and the
ID token check.

- Discovery: ``<issuer>/.well-known/openid-configuration``, its ``issuer`` equal to the configured one
  byte for byte, endpoints https (or http to loopback), PKCE ``S256`` offered when the document lists
  methods. Cached for an hour; a failed fetch is an error for this login only.
- Authorization request: ``response_type=code``, a random ``state`` and ``nonce`` (each 256 bits) and a
  PKCE verifier whose S256 challenge is sent. The caller binds state, nonce and verifier to the
  browser's pre-login record (:mod:`~portcullis.console.sessions`), used once.
- Code exchange: one POST to the token endpoint through
  :func:`~portcullis.identity.bounded_http.bounded_request`, the key set fetch's own (https or loopback http,
  TLS verified, no redirects, bounded time and size).
- ID token: verified by :class:`~portcullis.identity.jwt_verify.BearerVerifier` with the identity
  issuer's own key cache and pinned algorithms, audience = the console's ``client_id``; then ``nonce``
  (constant time) and ``azp`` when present; the principal comes from
  :func:`~portcullis.identity.authenticate.principal_from_token`, the bearer tokens' claim mapping.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx2

from portcullis.config.console import ConsoleOidcConfig
from portcullis.errors import PortcullisError
from portcullis.identity.authenticate import principal_from_token
from portcullis.identity.bounded_http import bounded_request, url_allowed
from portcullis.identity.config import ClaimMap
from portcullis.identity.issuers import IssuerConfig
from portcullis.identity.jwks import HttpsFetcher, JwksCache
from portcullis.identity.jwt_verify import BearerVerifier, InvalidToken, VerifiedToken
from portcullis.identity.principal import Principal

MAX_TOKEN_RESPONSE = 64 * 1024
_DISCOVERY_TTL_S = 3600.0
Poster = Callable[[str, dict[str, str]], Awaitable[bytes]]


class LoginFailed(PortcullisError):
    """The login did not complete; ``detail`` is for the operator log, the page shows a fixed text."""

    status, message = 401, "login failed"


class HttpsPoster:
    """One form POST to the token endpoint: :func:`~portcullis.identity.bounded_http.bounded_request` (https or
    loopback http, TLS verified, no redirects, bounded time and size)."""

    def __init__(self, *, timeout_s: float = 10.0, transport: httpx2.AsyncBaseTransport | None = None) -> None:
        self._timeout_s, self._transport = timeout_s, transport

    async def __call__(self, url: str, form: dict[str, str]) -> bytes:
        return await bounded_request("POST", url, what="token endpoint", error=LoginFailed, form=form,
                                     timeout_s=self._timeout_s, max_bytes=MAX_TOKEN_RESPONSE,
                                     transport=self._transport)


def pkce_challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class Started:
    """A started login: where to send the browser, and what to remember (bound to the pre-login id)."""

    url: str
    state: str
    flow: dict[str, str]


class OidcClient:
    """One configured OpenID Provider, for the console (module docstring)."""

    def __init__(self, config: ConsoleOidcConfig, issuer: IssuerConfig, cache: JwksCache, claim_map: ClaimMap, *,
                 client_secret: str | Callable[[], str] | None = None,
                 fetch: Callable[[str], Awaitable[bytes]] | None = None,
                 post: Poster | None = None, clock: Callable[[], float] = time.time) -> None:
        self.config, self._issuer, self._claims = config, issuer, claim_map
        self._secret = client_secret
        self._fetch = fetch or HttpsFetcher()
        self._post = post or HttpsPoster()
        self._clock = clock
        id_token_issuer = issuer.model_copy(update={"audience": config.client_id, "allowed_typ": ("JWT",)})
        self._verifier = BearerVerifier([id_token_issuer], {issuer.name: cache}, clock=clock)
        self._discovery: tuple[float, dict[str, Any]] | None = None

    @property
    def name(self) -> str:
        return self._issuer.name

    async def discover(self) -> dict[str, Any]:
        now = self._clock()
        if self._discovery is not None and now - self._discovery[0] < _DISCOVERY_TTL_S:
            return self._discovery[1]
        url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            doc = json.loads(await self._fetch(url))
        except PortcullisError as exc:
            raise LoginFailed(detail=f"discovery failed: {exc.detail}") from None
        except Exception as exc:
            raise LoginFailed(detail=f"discovery failed: {type(exc).__name__}") from None
        if not isinstance(doc, dict) or doc.get("issuer") != self.config.issuer:
            raise LoginFailed(detail="discovery 'issuer' differs from the configured issuer")
        for name in ("authorization_endpoint", "token_endpoint"):
            if not url_allowed(doc.get(name)):
                raise LoginFailed(detail=f"discovery '{name}' missing or not https")
        methods = doc.get("code_challenge_methods_supported")
        if methods is not None and (not isinstance(methods, list) or "S256" not in methods):
            raise LoginFailed(detail="the provider does not offer PKCE S256")
        self._discovery = (now, doc)
        return doc

    async def start(self) -> Started:
        doc = await self.discover()
        state, nonce, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(48)
        query = urlencode({"response_type": "code", "client_id": self.config.client_id,
                           "redirect_uri": self.config.redirect_url, "scope": " ".join(self.config.scopes),
                           "state": state, "nonce": nonce, "code_challenge": pkce_challenge(verifier),
                           "code_challenge_method": "S256"})
        endpoint = str(doc["authorization_endpoint"])
        return Started(endpoint + ("&" if "?" in endpoint else "?") + query, state,
                       {"nonce": nonce, "verifier": verifier})

    async def finish(self, code: str, flow: dict[str, Any]) -> tuple[Principal, VerifiedToken]:
        """Exchange ``code`` and check the ID token against the remembered ``flow``."""
        nonce, verifier = flow.get("nonce"), flow.get("verifier")
        if not isinstance(nonce, str) or not isinstance(verifier, str):
            raise LoginFailed(detail="malformed login record")
        doc = await self.discover()
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.config.redirect_url,
                "client_id": self.config.client_id, "code_verifier": verifier}
        if self._secret is not None:
            form["client_secret"] = self._secret if isinstance(self._secret, str) else self._secret()
        raw = await self._post(str(doc["token_endpoint"]), form)
        try:
            answer = json.loads(raw)
        except ValueError:
            raise LoginFailed(detail="token response is not JSON") from None
        id_token = answer.get("id_token") if isinstance(answer, dict) else None
        if not isinstance(id_token, str):
            raise LoginFailed(detail="token response has no id_token")
        try:
            verified = await self._verifier.verify(id_token)
        except InvalidToken as exc:
            raise LoginFailed(detail=f"id token refused: {exc.reason_code}") from None
        claims = verified.claims
        sent = claims.get("nonce")
        if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), nonce.encode()):
            raise LoginFailed(detail="id token refused: nonce")
        azp = claims.get("azp")
        if azp is not None and azp != self.config.client_id:
            raise LoginFailed(detail="id token refused: azp")
        try:
            principal = principal_from_token(verified, self._claims, self._issuer.issuer, "bearer",
                                             person=self._issuer.person)
        except InvalidToken as exc:
            raise LoginFailed(detail=f"id token refused: {exc.reason_code}") from None
        return principal, verified
