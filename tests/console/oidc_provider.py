"""A small OpenID Provider for the console's tests: discovery, JWKS, an authorization endpoint that issues
codes, a token endpoint that checks the PKCE verifier. TEST ONLY (no client authentication beyond the
client id, one user database: whoever fills in the form).

In-process: ``TestProvider(issuer, client_id, redirect_uri).app`` is an ASGI app (tests reach it through an
``httpx2.ASGITransport``). As a process, for the browser tests::

    python -m tests.console.oidc_provider --port 9700 --client-id portcullis-console \\
        --redirect-uri http://127.0.0.1:9464/console/oidc/callback

serves ``http://127.0.0.1:9700`` (issuer); its authorize page has a form (``#op-user``, ``#op-roles``,
button ``#op-login``).

Knobs for negative tests: ``claims_override`` (merged into the next ID tokens' claims), ``sign_with``
(a different private key), ``alg`` (the header's algorithm).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import secrets
import time
from typing import Any
from urllib.parse import urlencode

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from portcullis.identity.minting import jwk_thumbprint, public_jwk


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


class TestProvider:
    __test__ = False  # not a pytest test class

    def __init__(self, issuer: str, client_id: str, redirect_uri: str) -> None:
        self.issuer, self.client_id, self.redirect_uri = issuer, client_id, redirect_uri
        self.key = ec.generate_private_key(ec.SECP256R1())
        jwk = public_jwk(self.key)
        self.kid = jwk_thumbprint(jwk)
        jwk.update(kid=self.kid, use="sig", alg="ES256")
        self.jwks = {"keys": [jwk]}
        self.codes: dict[str, dict[str, Any]] = {}
        self.claims_override: dict[str, Any] = {}
        self.sign_with: ec.EllipticCurvePrivateKey | None = None
        self.alg = "ES256"
        self.token_requests = 0
        self.app = Starlette(routes=[
            Route("/.well-known/openid-configuration", self.discovery),
            Route("/jwks", self.keys),
            Route("/authorize", self.authorize, methods=["GET", "POST"]),
            Route("/token", self.token, methods=["POST"]),
        ])

    async def discovery(self, request: Request) -> Response:
        return JSONResponse({"issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
                             "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks",
                             "response_types_supported": ["code"], "code_challenge_methods_supported": ["S256"],
                             "id_token_signing_alg_values_supported": ["ES256"]})

    async def keys(self, request: Request) -> Response:
        return JSONResponse(self.jwks)

    def _check_authorize(self, params: Any) -> str | None:
        if params.get("client_id") != self.client_id:
            return "unknown client"
        if params.get("redirect_uri") != self.redirect_uri:
            return "redirect_uri not registered"
        if params.get("response_type") != "code":
            return "response_type must be code"
        if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
            return "PKCE S256 required"
        if "openid" not in (params.get("scope") or "").split():
            return "scope openid required"
        return None

    async def authorize(self, request: Request) -> Response:
        params = request.query_params
        problem = self._check_authorize(params)
        if problem is not None:
            return HTMLResponse(f"<p>{html.escape(problem)}</p>", status_code=400)
        if request.method == "GET":
            hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                             for k, v in params.items())
            return HTMLResponse(
                "<!doctype html><title>Test OP</title><main><h1>Test OpenID Provider</h1>"
                f'<form method="post" action="/authorize?{html.escape(urlencode(list(params.items())))}">{hidden}'
                '<p><label for="op-user">User</label> <input id="op-user" name="user" required></p>'
                '<p><label for="op-roles">Roles</label> <input id="op-roles" name="roles"></p>'
                '<button id="op-login" type="submit">Sign in</button></form></main>')
        form = await request.form()
        user = str(form.get("user") or "")
        roles = [r for r in str(form.get("roles") or "").replace(",", " ").split() if r]
        code = secrets.token_urlsafe(24)
        self.codes[code] = {"user": user, "roles": roles, "nonce": params.get("nonce"),
                            "challenge": params["code_challenge"], "redirect_uri": params["redirect_uri"]}
        target = f"{params['redirect_uri']}?{urlencode({'code': code, 'state': params.get('state', '')})}"
        return RedirectResponse(target, status_code=303)

    def id_token(self, user: str, roles: list[str], nonce: str | None) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {"iss": self.issuer, "aud": self.client_id, "sub": user, "iat": now,
                                  "exp": now + 300, "jti": secrets.token_hex(8), "principal_type": "user",
                                  "roles": roles, "azp": self.client_id}
        if nonce is not None:
            claims["nonce"] = nonce
        claims.update(self.claims_override)
        claims = {k: v for k, v in claims.items() if v is not None}
        key = self.sign_with or self.key
        return jwt.encode(claims, key, algorithm=self.alg, headers={"kid": self.kid, "typ": "JWT"})

    async def token(self, request: Request) -> Response:
        self.token_requests += 1
        form = await request.form()
        code = str(form.get("code") or "")
        grant = self.codes.pop(code, None)  # one use
        if (grant is None or form.get("grant_type") != "authorization_code"
                or form.get("client_id") != self.client_id or form.get("redirect_uri") != grant["redirect_uri"]):
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        if _s256(str(form.get("code_verifier") or "")) != grant["challenge"]:
            return JSONResponse({"error": "invalid_grant", "error_description": "PKCE"}, status_code=400)
        return JSONResponse({"access_token": secrets.token_urlsafe(16), "token_type": "Bearer", "expires_in": 300,
                             "id_token": self.id_token(grant["user"], grant["roles"], grant["nonce"])})


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9700)
    parser.add_argument("--client-id", default="portcullis-console")
    parser.add_argument("--redirect-uri", default="http://127.0.0.1:9464/console/oidc/callback")
    args = parser.parse_args()
    provider = TestProvider(f"http://{args.host}:{args.port}", args.client_id, args.redirect_uri)
    print(json.dumps({"issuer": provider.issuer}), flush=True)
    uvicorn.run(provider.app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
