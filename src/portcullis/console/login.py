"""Login and logout pages: OpenID Connect (code flow with PKCE) and the development login.

=====  ==========================  ===========================================================
GET    ``/console/login``          the login page (sets the pre-login cookie and its CSRF token)
GET    ``/console/login/oidc``     starts an OIDC login: 303 to the provider's authorization endpoint
GET    ``/console/oidc/callback``  the provider's redirect: code exchange, ID token check, new session
POST   ``/console/login/dev``      development login (only with ``console.dev_login``)
POST   ``/console/logout``         ends the session
=====  ==========================  ===========================================================

The callback answers a small page that moves on to ``/console/approvals`` by a same-origin meta refresh:
the session cookie is SameSite=Strict, and a browser does not send it on the redirect chain that began
at the provider (a cross-site navigation).
"""

from __future__ import annotations

import logging
import re

from starlette.responses import RedirectResponse, Response

from portcullis.console.app import Ctx
from portcullis.console.oidc import LoginFailed, OidcClient
from portcullis.console.render import PAGE_HEADERS
from portcullis.console.sessions import LOGIN_COOKIE, SESSION_COOKIE
from portcullis.identity.claims import ClaimRejected, principal_from_claims
from portcullis.identity.config import ClaimMap
from portcullis.identity.dev_issuer import DEV_ISSUER, PERSON_CLAIM, PERSON_VALUE
from portcullis.identity.issuers import PersonSignal
from portcullis.identity.principal import Principal
from portcullis.identity.revocation import Revoked

log = logging.getLogger("portcullis.console")

HOME = "/console/approvals"
DEV_CLIENT = "portcullis-console-dev"
_ROLES = re.compile(r"[\s,]+")
LOGIN_FAILED = "The login did not complete. Start again; if it keeps failing, ask an operator to check the gateway log."


def set_cookie(response: Response, name: str, value: str, max_age: int | None, same_site: str) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", secure=True, httponly=True,
                        samesite=same_site)  # type: ignore[arg-type]


def clear_cookie(response: Response, name: str, same_site: str) -> None:
    response.delete_cookie(name, path="/", secure=True, httponly=True, samesite=same_site)  # type: ignore[arg-type]


class LoginPages:
    def __init__(self, oidc: OidcClient | None, *, dev_login: bool, claim_map: ClaimMap) -> None:
        self._oidc, self._dev, self._claims = oidc, dev_login, claim_map

    def register(self, app: object) -> None:
        from portcullis.console.app import ConsoleApp
        assert isinstance(app, ConsoleApp)
        app.route("GET", "/login", self.page, auth=False)
        app.route("GET", "/login/oidc", self.start, auth=False)
        app.route("GET", "/oidc/callback", self.callback, auth=False)
        app.route("POST", "/login/dev", self.dev, auth=False)
        app.route("POST", "/logout", self.logout)

    async def page(self, ctx: Ctx, *, error: str | None = None, status: int = 200) -> Response:
        pre_id, ctx.pre_login = await ctx.app.sessions.pre_login(ctx.request.cookies.get(LOGIN_COOKIE))
        response = ctx.render("login.html", status=status, error=error, oidc=self._oidc is not None,
                              oidc_name=self._oidc.name if self._oidc else "", dev_login=self._dev)
        set_cookie(response, LOGIN_COOKIE, pre_id, int(ctx.app.sessions.login_ttl_s), "lax")
        return response

    async def start(self, ctx: Ctx) -> Response:
        """A link, not a form: the CSP's ``form-action 'self'`` also governs where a form's redirect may go,
        and the provider is another origin. Starting a login changes nothing but this browser's pre-login
        record (a started login is useless without the person authenticating at the provider)."""
        if self._oidc is None:
            return await self.page(ctx, error="OpenID Connect login is not configured.", status=404)
        pre_id, ctx.pre_login = await ctx.app.sessions.pre_login(ctx.request.cookies.get(LOGIN_COOKIE))
        try:
            started = await self._oidc.start()
        except LoginFailed as exc:
            log.warning("console login could not start", extra={"fields": {"reason": exc.detail}})
            return await self.page(ctx, error=LOGIN_FAILED, status=502)
        await ctx.app.sessions.start_flow(pre_id, started.state, started.flow)
        response = RedirectResponse(started.url, status_code=303, headers=dict(PAGE_HEADERS))
        set_cookie(response, LOGIN_COOKIE, pre_id, int(ctx.app.sessions.login_ttl_s), "lax")
        return response

    async def callback(self, ctx: Ctx) -> Response:
        query = ctx.request.query_params
        pre_id = ctx.request.cookies.get(LOGIN_COOKIE)
        flow = await ctx.app.sessions.take_flow(pre_id, query.get("state"))  # once, and only for this browser
        if self._oidc is None or flow is None:
            log.warning("console login refused: unknown, replayed or foreign state")
            return await self.page(ctx, error=LOGIN_FAILED, status=400)
        code = query.get("code")
        if query.get("error") is not None or not code or len(code) > 2048:
            log.warning("console login refused by the provider or without a code")
            return await self.page(ctx, error=LOGIN_FAILED, status=400)
        try:
            principal, verified = await self._oidc.finish(code, flow)
            ctx.app.services.revocations.check(jti=verified.jti, client_id=principal.client_id,
                                               agent_id=principal.agent_id)
        except LoginFailed as exc:
            log.warning("console login refused", extra={"fields": {"reason": exc.detail}})
            return await self.page(ctx, error=LOGIN_FAILED, status=401)
        except Revoked:
            log.warning("console login refused: revoked credential")
            return await self.page(ctx, error=LOGIN_FAILED, status=401)
        return await self._logged_in(ctx, principal, dev=False, jti=verified.jti)

    async def dev(self, ctx: Ctx) -> Response:
        if not self._dev:
            return await self.page(ctx, error="Development login is not enabled.", status=404)
        user = ctx.form.get("user", "").strip()
        roles = [r for r in _ROLES.split(ctx.form.get("roles", "")) if r]
        tenant = ctx.form.get("tenant", "").strip() or None
        claims = {"sub": user, "client_id": DEV_CLIENT, PERSON_CLAIM: PERSON_VALUE,
                  **({"roles": roles} if roles else {}), **({"tenant": tenant} if tenant else {})}
        try:
            if not user:
                raise ValueError("user")
            principal = principal_from_claims(claims, self._claims, subject=user, issuer=DEV_ISSUER,
                                              issuer_name="dev", auth_method="dev",
                                              person=PersonSignal(claim=PERSON_CLAIM, equals=PERSON_VALUE),
                                              scopes=())
            ctx.app.services.revocations.check(jti=None, client_id=principal.client_id, agent_id=None)
        except (ClaimRejected, ValueError):
            return await self.page(ctx, error="Those claims are not valid (user id, roles, tenant).", status=400)
        except Revoked:
            return await self.page(ctx, error=LOGIN_FAILED, status=401)
        log.warning("console development login", extra={"fields": {"user": user}})
        return await self._logged_in(ctx, principal, dev=True, jti=None)

    async def _logged_in(self, ctx: Ctx, principal: Principal, *, dev: bool, jti: str | None) -> Response:
        cookies = ctx.request.cookies
        session_id, _ = await ctx.app.sessions.create(
            principal, dev=dev, jti=jti, replacing=(cookies.get(LOGIN_COOKIE), cookies.get(SESSION_COOKIE)))
        # the token id, so that one person's session can be ended at once (``portcullis token revoke --jti``)
        log.info("console login", extra={"fields": {"user": principal.user_id, "issuer": principal.issuer_name,
                                                    "jti": jti}})
        response = ctx.app.renderer.page("continue.html", {"target": HOME}, headers=PAGE_HEADERS)
        set_cookie(response, SESSION_COOKIE, session_id, None, "strict")
        clear_cookie(response, LOGIN_COOKIE, "lax")
        return response

    async def logout(self, ctx: Ctx) -> Response:
        await ctx.app.sessions.end(ctx.request.cookies.get(SESSION_COOKIE))
        response = ctx.redirect("/console/login")
        clear_cookie(response, SESSION_COOKIE, "strict")
        return response
