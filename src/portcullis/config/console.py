"""The ``console:`` section of ``gateway.yaml``: the web console on the admin listener (docs/console.md).

Off by default. People log in with OpenID Connect (authorization code flow with PKCE) against an issuer
the deployment already trusts for bearer tokens (``identity.issuers``), so a console user is the same
principal, with the same roles, as the same person's bearer token. ``dev_login`` (a form that mints a
development principal) is allowed only where the deployment already trusts the development issuer
(``identity.allow_insecure_dev_issuer``); :func:`console_problem` is the cross-section check both
``portcullis lint`` and ``serve`` run (through the gateway model's validator).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from portcullis.config.secrets import SECRET_REF_PATTERN
from portcullis.identity.bounded_http import is_loopback_host
from portcullis.identity.config import IdentityConfig

CALLBACK_PATH = "/console/oidc/callback"
_REF = SECRET_REF_PATTERN


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ConsoleOidcConfig(_Model):
    """The console's OpenID Connect client (authorization code flow, PKCE S256, state and nonce)."""

    issuer: str = Field(min_length=1, max_length=2048, pattern=r"^https?://[^\s\x00-\x1f\x7f]+$",
                        description="The OpenID Provider's exact issuer; must equal the 'issuer' of one of "
                        "identity.issuers (whose keys, algorithms, claim mapping and person signal apply). "
                        "Its discovery document is <issuer>/.well-known/openid-configuration.")
    client_id: str = Field(min_length=1, max_length=256, pattern=r"^[\x21-\x7e]+$",
                           description="The console's client id at the provider; ID tokens must name it in "
                           "'aud'.")
    client_secret_ref: str | None = Field(
        None, pattern=_REF, description="secret:// reference to the client secret (a confidential client, "
        "client_secret_post). Unset: a public client (PKCE only).")
    redirect_url: str = Field(pattern=r"^https?://\S+$", description="The callback URL registered at the "
                              "provider: <the admin listener's URL>/console/oidc/callback (https, or http to "
                              "a loopback host).")
    scopes: tuple[str, ...] = Field(("openid", "profile"), min_length=1,
                                    description="Scopes asked for; must include 'openid'.")

    @model_validator(mode="after")
    def _checked(self) -> ConsoleOidcConfig:
        if "openid" not in self.scopes:
            raise ValueError("console.oidc.scopes must include 'openid'")
        for scope in self.scopes:
            if not scope or any(c <= " " or c == "\x7f" or c in '"\\' for c in scope):
                raise ValueError("console.oidc.scopes: each scope is printable ASCII without spaces or quotes")
        for name, url in (("issuer", self.issuer), ("redirect_url", self.redirect_url)):
            parts = urlsplit(url)
            if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback_host(parts.hostname or "")):
                raise ValueError(f"console.oidc.{name} must be https (or http to a loopback host)")
        if urlsplit(self.redirect_url).path != CALLBACK_PATH:
            raise ValueError(f"console.oidc.redirect_url must end in {CALLBACK_PATH}")
        return self


class ConsoleConfig(_Model):
    """The web console for approvers and responders, at ``/console`` on the admin listener."""

    enabled: StrictBool = Field(False, description="Serve the console at /console on the admin listener.")
    oidc: ConsoleOidcConfig | None = Field(None, description="Log in through this OpenID Provider.")
    dev_login: StrictBool = Field(
        False, description="DEVELOPMENT ONLY: a login form that mints a development principal with chosen "
        "claims. Needs identity.allow_insecure_dev_issuer; every page then carries a warning banner.")
    session_ttl_s: int = Field(8 * 3600, ge=60, le=7 * 86_400,
                               description="Absolute lifetime of a console session (from login).")
    idle_timeout_s: int = Field(1800, ge=60, le=86_400,
                                description="A session not used for this long ends (live polling does not "
                                "count as use).")
    login_ttl_s: int = Field(600, ge=60, le=3600, description="How long a started login (state, nonce, PKCE "
                             "verifier) may take to come back from the provider.")

    @model_validator(mode="after")
    def _times(self) -> ConsoleConfig:
        if self.idle_timeout_s > self.session_ttl_s:
            raise ValueError("console.idle_timeout_s must not exceed console.session_ttl_s")
        return self


def console_problem(console: ConsoleConfig, identity: IdentityConfig | None, admin_port: int | None) -> str | None:
    """Why this console configuration cannot run in this deployment; None when it can."""
    if not console.enabled:
        return None
    if console.oidc is None and not console.dev_login:
        return "console.enabled needs a way to log in: console.oidc (or console.dev_login for development)"
    if console.dev_login and (identity is None or not identity.allow_insecure_dev_issuer):
        return ("console.dev_login needs identity.allow_insecure_dev_issuer (the deployment must already trust "
                "the development issuer)")
    if console.oidc is not None:
        issuers = () if identity is None else identity.issuers
        if not any(i.issuer == console.oidc.issuer for i in issuers):
            return "console.oidc.issuer must be the 'issuer' of one of identity.issuers"
    if admin_port is None:
        return "console.enabled needs the admin listener (admin.port is null)"
    return None
