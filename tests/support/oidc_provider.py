"""The test OpenID Provider of the console's tests: one strict provider, in-process or as a process.

It does what a real provider does on the authorization code flow with PKCE, strictly, so that a console
that skips a step fails here rather than in production:

- ``/.well-known/openid-configuration`` (discovery) and ``/jwks`` (one ES256 key, made at start);
- ``GET /authorize``: the client and its exact redirect URI must be registered (otherwise an error page,
  never a redirect), ``response_type=code``, ``scope`` with ``openid``, a ``state``, and PKCE with
  ``code_challenge_method=S256`` (``plain`` or none is refused); then a real HTML login form;
- ``POST /login``: a wrong password shows the form again (401); a right one redirects to the redirect URI
  with a one-time ``code``, the ``state`` and ``iss`` (RFC 9207);
- ``POST /token``: the code once, within 60 s, for the same client and redirect URI, and only with the
  ``code_verifier`` whose S256 is the challenge (and the client secret, for a confidential client); the
  answer carries an ID token (ES256, ``aud`` and ``azp`` the client id, the ``nonce`` sent to /authorize,
  the user's claims) and an access token;
- ``GET /_test/events``: what happened (grants, refusals and why), for tests to assert on.

It sets no cookies (the provider and the gateway share the host 127.0.0.1, so its cookies would be the
console's). Configuration: ``{"clients": [{"client_id", "redirect_uris", "client_secret"?}],
"users": {"<login>": {"password", "claims": {...}}}}``; ``sub`` defaults to the login.

In-process: ``Provider(issuer, config).app`` is an ASGI app (tests reach it through an
``httpx2.ASGITransport``); knobs for negative tests: ``claims_override`` (merged into the next ID tokens'
claims, ``None`` drops one), ``sign_with`` (another private key), ``alg`` (the header's algorithm). As a
process (:class:`ProviderProcess` starts one)::

    python -m tests.support.oidc_provider --port 8123 --config provider.json
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx2
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.e2e.harness import REPO, stop_child, wait_port
from tests.ports import free_port

CODE_TTL_S = 60.0
KID = "test-1"
FORM = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Test provider: sign in</title></head>
<body><h1>Test provider</h1><p>Signing in to <b>{client}</b></p>{error}
<form method="post" action="/login">
<input type="hidden" name="request" value="{request}">
<label for="username">Username</label> <input id="username" name="username" autocomplete="username">
<label for="password">Password</label> <input id="password" name="password" type="password">
<button type="submit">Sign in</button>
</form></body></html>
"""
_NO_STORE = {"cache-control": "no-store"}


@dataclass
class Pending:
    client_id: str
    redirect_uri: str
    state: str
    nonce: str | None
    challenge: str
    scope: str


@dataclass
class Code:
    pending: Pending
    user: str
    issued: float


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name, [])
    return values[0] if len(values) == 1 else None  # absent or repeated: not given


class Provider:
    """The provider's state (clients, users, pending logins, codes, events; thread-safe) and its ASGI app."""

    def __init__(self, issuer: str, config: dict[str, Any]) -> None:
        self.issuer = issuer
        self.clients = {c["client_id"]: c for c in config.get("clients", [])}
        self.users: dict[str, dict[str, Any]] = dict(config.get("users", {}))
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.pending: dict[str, Pending] = {}
        self.codes: dict[str, Code] = {}
        self.events: list[dict[str, Any]] = []
        self.token_requests = 0
        self.claims_override: dict[str, Any] = {}
        self.sign_with: Any = None
        self.alg = "ES256"
        self.lock = threading.Lock()
        self.app = Starlette(routes=[
            Route("/.well-known/openid-configuration", lambda _: self._json(200, self.discovery())),
            Route("/jwks", lambda _: self._json(200, self.jwks())),
            Route("/authorize", self._authorize),
            Route("/login", self._login, methods=["POST"]),
            Route("/token", self._token, methods=["POST"]),
            Route("/_test/events", self._events),
        ])

    def add_user(self, login: str, claims: dict[str, Any]) -> str:
        """Register (or replace) a user; their password."""
        password = secrets.token_urlsafe(12)
        with self.lock:
            self.users[login] = {"password": password, "claims": claims}
        return password

    def event(self, kind: str, **detail: Any) -> None:
        with self.lock:
            self.events.append({"event": kind, **detail})

    def discovery(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "authorization_endpoint": self.issuer + "/authorize",
                "token_endpoint": self.issuer + "/token", "jwks_uri": self.issuer + "/jwks",
                "response_types_supported": ["code"], "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"], "code_challenge_methods_supported": ["S256"],
                "grant_types_supported": ["authorization_code"], "scopes_supported": ["openid", "profile"],
                "token_endpoint_auth_methods_supported": ["none", "client_secret_post"]}

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**jwk, "kid": KID, "use": "sig", "alg": "ES256"}]}

    def tokens(self, code: Code) -> dict[str, Any]:
        now = int(time.time())
        user = self.users[code.user]
        claims: dict[str, Any] = {"sub": code.user, **user.get("claims", {}), "iss": self.issuer,
                                  "aud": code.pending.client_id, "azp": code.pending.client_id, "iat": now,
                                  "exp": now + 300, "auth_time": int(code.issued), "jti": secrets.token_hex(8)}
        if code.pending.nonce is not None:
            claims["nonce"] = code.pending.nonce
        claims = {k: v for k, v in {**claims, **self.claims_override}.items() if v is not None}
        key = self.sign_with if self.sign_with is not None else self.key
        id_token = jwt.encode(claims, key, algorithm=self.alg, headers={"kid": KID, "typ": "JWT"})
        access = jwt.encode({**claims, "aud": self.issuer + "/userinfo", "scope": code.pending.scope}, self.key,
                            algorithm="ES256", headers={"kid": KID, "typ": "at+jwt"})
        return {"access_token": access, "token_type": "Bearer", "expires_in": 300, "id_token": id_token,
                "scope": code.pending.scope}

    # the endpoints

    @staticmethod
    def _json(status: int, body: Any) -> Response:
        return JSONResponse(body, status_code=status, headers=_NO_STORE)

    @staticmethod
    def _page(status: int, text: str) -> Response:
        return HTMLResponse(text, status_code=status, headers=_NO_STORE)

    def _error_page(self, reason: str) -> Response:
        self.event("authorize_refused", reason=reason)
        return self._page(400, "<!doctype html><title>error</title><h1>Request refused</h1>"
                               f"<p>{html.escape(reason)}</p>")

    async def _events(self, request: Request) -> Response:
        with self.lock:
            return self._json(200, list(self.events))

    @staticmethod
    async def _form(request: Request) -> dict[str, list[str]]:
        return parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)

    async def _authorize(self, request: Request) -> Response:
        query = parse_qs(request.url.query, keep_blank_values=True)
        client = self.clients.get(_one(query, "client_id") or "")
        redirect_uri = _one(query, "redirect_uri")
        if client is None:
            return self._error_page("unknown client_id")
        if redirect_uri not in client["redirect_uris"]:
            return self._error_page("redirect_uri is not registered for this client")
        state = _one(query, "state")
        problem = None
        if _one(query, "response_type") != "code":
            problem = "response_type must be code"
        elif "openid" not in (_one(query, "scope") or "").split():
            problem = "scope must include openid"
        elif not state:
            problem = "state is required"
        elif _one(query, "code_challenge_method") != "S256" or len(_one(query, "code_challenge") or "") != 43:
            problem = "PKCE with code_challenge_method=S256 is required"
        if problem is not None:
            self.event("authorize_refused", reason=problem)
            params = {"error": "invalid_request", "error_description": problem, "iss": self.issuer}
            if state:
                params["state"] = state
            return RedirectResponse(f"{redirect_uri}?{urlencode(params)}", status_code=302, headers=_NO_STORE)
        login_request = secrets.token_urlsafe(16)
        with self.lock:
            self.pending[login_request] = Pending(client["client_id"], str(redirect_uri), str(state),
                                                  _one(query, "nonce"), str(_one(query, "code_challenge")),
                                                  str(_one(query, "scope")))
        self.event("authorize", client_id=client["client_id"], nonce=_one(query, "nonce"))
        return self._page(200, FORM.format(client=html.escape(client["client_id"]), request=login_request,
                                           error=""))

    async def _login(self, request: Request) -> Response:
        form = await self._form(request)
        login_request = _one(form, "request") or ""
        with self.lock:
            pending = self.pending.get(login_request)
        if pending is None:
            return self._error_page("unknown or used login request")
        login, password = _one(form, "username") or "", _one(form, "password") or ""
        user = self.users.get(login)
        if user is None or not secrets.compare_digest(user["password"].encode(), password.encode()):
            self.event("login_failed", username=login)
            return self._page(401, FORM.format(client=html.escape(pending.client_id), request=login_request,
                                               error='<p role="alert">Wrong username or password.</p>'))
        code = secrets.token_urlsafe(24)
        with self.lock:
            del self.pending[login_request]
            self.codes[code] = Code(pending, login, time.time())
        self.event("login", username=login)
        back = {"code": code, "state": pending.state, "iss": self.issuer}
        return RedirectResponse(f"{pending.redirect_uri}?{urlencode(back)}", status_code=302, headers=_NO_STORE)

    async def _token(self, request: Request) -> Response:
        form = await self._form(request)
        with self.lock:
            self.token_requests += 1

        def refuse(error: str, reason: str) -> Response:
            self.event("token_refused", reason=reason)
            return self._json(400, {"error": error, "error_description": reason})

        if _one(form, "grant_type") != "authorization_code":
            return refuse("unsupported_grant_type", "grant_type must be authorization_code")
        with self.lock:
            code = self.codes.pop(_one(form, "code") or "", None)  # once, whatever happens next
        if code is None:
            return refuse("invalid_grant", "unknown or used code")
        client = self.clients[code.pending.client_id]
        if time.time() - code.issued > CODE_TTL_S:
            return refuse("invalid_grant", "code expired")
        if _one(form, "client_id") != code.pending.client_id:
            return refuse("invalid_client", "client_id does not match the code")
        secret = client.get("client_secret")
        if secret is not None and not secrets.compare_digest(secret.encode(),
                                                             (_one(form, "client_secret") or "").encode()):
            return refuse("invalid_client", "wrong client secret")
        if _one(form, "redirect_uri") != code.pending.redirect_uri:
            return refuse("invalid_grant", "redirect_uri does not match the authorization request")
        verifier = _one(form, "code_verifier") or ""
        if not 43 <= len(verifier) <= 128 or not secrets.compare_digest(s256(verifier), code.pending.challenge):
            return refuse("invalid_grant", "PKCE verification failed")
        self.event("token", username=code.user, client_id=code.pending.client_id)
        return self._json(200, self.tokens(code))


class ProviderProcess:
    """This module as a child process, with users and one registered client."""

    def __init__(self, directory: Path, *, users: dict[str, dict[str, Any]], client_id: str,
                 redirect_uris: list[str], client_secret: str | None = None) -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.passwords = {login: secrets.token_urlsafe(12) for login in users}
        config = {"clients": [{"client_id": client_id, "redirect_uris": redirect_uris,
                               "client_secret": client_secret}],
                  "users": {login: {"password": self.passwords[login], "claims": claims}
                            for login, claims in users.items()}}
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "provider.json").write_text(json.dumps(config))
        self._log = open(directory / f"provider-{self.port}.log", "w")  # closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.support.oidc_provider", "--port", str(self.port),
                                      "--config", str(directory / "provider.json")],
                                     cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_port(self.port, timeout=60)
        except AssertionError:
            self.stop()
            raise

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        every = httpx2.get(f"{self.issuer}/_test/events", timeout=15).json()
        return [e for e in every if kind is None or e["event"] == kind]

    def stop(self) -> None:
        stop_child(self.proc)
        self._log.close()


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args()
    provider = Provider(f"http://{args.host}:{args.port}", json.loads(args.config.read_text()))
    uvicorn.run(provider.app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
