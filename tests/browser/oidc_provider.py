"""A small OpenID Provider for the console's browser tests, run as its own process.

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
  answer carries an ID token (ES256, ``aud`` the client id, the ``nonce`` sent to /authorize, the user's
  chosen claims) and an access token;
- ``GET /_test/events``: what happened (grants, refusals and why), for tests to assert on.

It sets no cookies (the provider and the gateway share the host 127.0.0.1, so its cookies would be the
console's). Configuration is a JSON file: ``{"clients": [{"client_id", "redirect_uris", "client_secret"?}],
"users": {"<login>": {"password", "claims": {...}}}}``; ``sub`` defaults to the login.

    python -m tests.browser.oidc_provider --port 8123 --config provider.json
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

CODE_TTL_S = 60.0
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


@dataclass
class _Pending:
    client_id: str
    redirect_uri: str
    state: str
    nonce: str | None
    challenge: str
    scope: str


@dataclass
class _Code:
    pending: _Pending
    user: str
    issued: float


class Provider:
    """The provider's state: clients, users, pending logins, codes, events (thread-safe)."""

    def __init__(self, issuer: str, config: dict[str, Any]) -> None:
        self.issuer = issuer
        self.clients = {c["client_id"]: c for c in config.get("clients", [])}
        self.users: dict[str, dict[str, Any]] = config.get("users", {})
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.pending: dict[str, _Pending] = {}
        self.codes: dict[str, _Code] = {}
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()

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
        return {"keys": [{**jwk, "kid": "test-1", "use": "sig", "alg": "ES256"}]}

    def tokens(self, code: _Code) -> dict[str, Any]:
        now = int(time.time())
        user = self.users[code.user]
        claims: dict[str, Any] = {"sub": code.user, **user.get("claims", {}), "iss": self.issuer,
                                  "aud": code.pending.client_id, "iat": now, "exp": now + 300,
                                  "auth_time": int(code.issued), "jti": secrets.token_hex(8)}
        if code.pending.nonce is not None:
            claims["nonce"] = code.pending.nonce
        id_token = jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": "test-1", "typ": "JWT"})
        access = jwt.encode({**claims, "aud": self.issuer + "/userinfo", "scope": code.pending.scope}, self.key,
                            algorithm="ES256", headers={"kid": "test-1", "typ": "at+jwt"})
        return {"access_token": access, "token_type": "Bearer", "expires_in": 300, "id_token": id_token,
                "scope": code.pending.scope}


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name, [])
    return values[0] if len(values) == 1 else None  # absent or repeated: not given


class _Handler(BaseHTTPRequestHandler):
    provider: Provider

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.send_header("cache-control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, body: Any) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _page(self, status: int, text: str) -> None:
        self._send(status, text.encode(), "text/html; charset=utf-8")

    def _error_page(self, reason: str) -> None:
        self.provider.event("authorize_refused", reason=reason)
        self._page(400, f"<!doctype html><title>error</title><h1>Request refused</h1><p>{html.escape(reason)}</p>")

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/.well-known/openid-configuration":
            self._json(200, self.provider.discovery())
        elif url.path == "/jwks":
            self._json(200, self.provider.jwks())
        elif url.path == "/authorize":
            self._authorize(parse_qs(url.query, keep_blank_values=True))
        elif url.path == "/_test/events":
            with self.provider.lock:
                self._json(200, list(self.provider.events))
        else:
            self._send(404, b"not found", "text/plain")

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"), keep_blank_values=True)
        path = urlsplit(self.path).path
        if path == "/login":
            self._login(form)
        elif path == "/token":
            self._token(form)
        else:
            self._send(404, b"not found", "text/plain")

    def _authorize(self, query: dict[str, list[str]]) -> None:
        provider = self.provider
        client = provider.clients.get(_one(query, "client_id") or "")
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
            provider.event("authorize_refused", reason=problem)
            params = {"error": "invalid_request", "error_description": problem, "iss": provider.issuer}
            if state:
                params["state"] = state
            self._redirect(f"{redirect_uri}?{urlencode(params)}")
            return None
        request = secrets.token_urlsafe(16)
        with provider.lock:
            provider.pending[request] = _Pending(client["client_id"], str(redirect_uri), str(state),
                                                 _one(query, "nonce"), str(_one(query, "code_challenge")),
                                                 str(_one(query, "scope")))
        provider.event("authorize", client_id=client["client_id"], nonce=_one(query, "nonce"))
        self._page(200, FORM.format(client=html.escape(client["client_id"]), request=request, error=""))
        return None

    def _login(self, form: dict[str, list[str]]) -> None:
        provider = self.provider
        request = _one(form, "request") or ""
        with provider.lock:
            pending = provider.pending.get(request)
        if pending is None:
            return self._error_page("unknown or used login request")
        login, password = _one(form, "username") or "", _one(form, "password") or ""
        user = provider.users.get(login)
        if user is None or not secrets.compare_digest(user["password"].encode(), password.encode()):
            provider.event("login_failed", username=login)
            self._page(401, FORM.format(client=html.escape(pending.client_id), request=request,
                                        error='<p role="alert">Wrong username or password.</p>'))
            return None
        code = secrets.token_urlsafe(24)
        with provider.lock:
            del provider.pending[request]
            provider.codes[code] = _Code(pending, login, time.time())
        provider.event("login", username=login)
        back = {"code": code, "state": pending.state, "iss": provider.issuer}
        self._redirect(f"{pending.redirect_uri}?{urlencode(back)}")
        return None

    def _redirect(self, location: str) -> None:
        self._send(302, b"", "text/plain", {"location": location})

    def _token(self, form: dict[str, list[str]]) -> None:
        provider = self.provider

        def refuse(error: str, reason: str) -> None:
            provider.event("token_refused", reason=reason)
            self._json(400, {"error": error, "error_description": reason})

        if _one(form, "grant_type") != "authorization_code":
            return refuse("unsupported_grant_type", "grant_type must be authorization_code")
        with provider.lock:
            code = provider.codes.pop(_one(form, "code") or "", None)  # once, whatever happens next
        if code is None:
            return refuse("invalid_grant", "unknown or used code")
        client = provider.clients[code.pending.client_id]
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
        provider.event("token", username=code.user, client_id=code.pending.client_id)
        self._json(200, provider.tokens(code))
        return None


def serve(port: int, config: dict[str, Any], host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """A provider on ``http://<host>:<port>`` (not yet serving: call ``serve_forever``)."""
    handler = type("Handler", (_Handler,), {"provider": Provider(f"http://{host}:{port}", config)})
    return ThreadingHTTPServer((host, port), handler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args()
    server = serve(args.port, json.loads(args.config.read_text()))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
