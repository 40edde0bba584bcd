"""The console's ASGI app: routing, the session and CSRF checks every page gets, error pages.

Pages register routes on a :class:`ConsoleApp` (``app.route("GET", r"/approvals/(?P<id>apr_[0-9a-f]{32})",
handler)``; patterns are full matches of the path after ``/console``). A handler receives a
:class:`Ctx` and returns a Starlette ``Response`` (usually ``ctx.render("page.html", ...)``).

Before a handler runs:

- only GET, HEAD and POST exist (405 otherwise);
- every POST passes :func:`~portcullis.console.csrf.check_request` (Origin / Sec-Fetch-Site same-origin,
  the synchronizer token of the session, or of the pre-login record on login forms), else a 403 page and
  nothing happens;
- a route with ``auth=True`` (the default) needs a live session whose credential is not revoked:
  without one a GET is redirected to the login page (htmx requests get ``HX-Redirect``), a POST is 403;
- the session store down is the login page with that error and no way in (503; fail closed).

A page's navigation lists only the sections the person may open (:func:`~portcullis.console.roles.nav`,
the predicates the pages themselves check); each page still checks its role.

Every response carries the CSP and the other headers of :mod:`~portcullis.console.render`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from portcullis.console import roles
from portcullis.console.csrf import TOKEN_FIELD, CsrfRefused, check_request
from portcullis.console.render import SECURITY_HEADERS, Renderer, StaticFiles
from portcullis.console.services import ConsoleServices
from portcullis.console.sessions import LOGIN_COOKIE, SESSION_COOKIE, PreLogin, Session, Sessions
from portcullis.console.store import ConsoleStoreUnavailable
from portcullis.identity.principal import Principal
from portcullis.identity.revocation import RevocationUnavailable, Revoked

log = logging.getLogger("portcullis.console")

MAX_FORM_BYTES = 65_536
PREFIX = "/console"
Handler = Callable[["Ctx"], Awaitable[Response]]
Scope = MutableMapping[str, Any]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    auth: bool = True
    touch: bool = True  # False for polling fragments: they do not keep an idle session alive
    nav: str | None = None  # which roles.SECTIONS entry is current on this page


@dataclass(slots=True)
class Ctx:
    """What a handler gets: the request, its path parameters, the session, the parsed form (POST)."""

    request: Request
    params: dict[str, str]
    app: ConsoleApp
    session: Session | None = None
    pre_login: PreLogin | None = None
    form: dict[str, str] = field(default_factory=dict)
    nav: str | None = None
    set_cookies: list[tuple[str, str, int | None, str]] = field(default_factory=list)

    @property
    def principal(self) -> Principal:
        assert self.session is not None, "only routes with auth=True have a principal"
        return self.session.principal

    @property
    def services(self) -> ConsoleServices:
        return self.app.services

    @property
    def htmx(self) -> bool:
        return self.request.headers.get("hx-request") == "true"

    def context(self, **values: Any) -> dict[str, Any]:
        csrf = self.session.csrf if self.session else self.pre_login.csrf if self.pre_login else ""
        return {"principal": self.session.principal if self.session else None, "csrf_token": csrf,
                "dev_banner": self.app.dev_login, "nav": roles.nav(self), "current": self.nav, **values}

    def render(self, template: str, *, status: int = 200, **values: Any) -> Response:
        return self.app.renderer.page(template, self.context(status=status, **values), status=status)

    def redirect(self, path: str) -> Response:
        return RedirectResponse(path, status_code=303, headers=dict(SECURITY_HEADERS))


class ConsoleApp:
    """ASGI handler for ``/console…`` on the admin listener."""

    def __init__(self, sessions: Sessions, services: ConsoleServices, *, dev_login: bool) -> None:
        self.sessions, self.services, self.dev_login = sessions, services, dev_login
        self.static = StaticFiles()
        self.renderer = Renderer(self.static)
        self._routes: list[Route] = []

    def route(self, method: str, pattern: str, handler: Handler, *, auth: bool = True, touch: bool = True,
              nav: str | None = None) -> None:
        """Register ``handler`` for ``method`` (GET or POST) on ``/console`` + ``pattern`` (a full match)."""
        if method not in ("GET", "POST"):
            raise ValueError("console routes are GET or POST")
        self._routes.append(Route(method, re.compile(pattern), handler, auth, touch, nav))

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
                       send: Callable[[MutableMapping[str, Any]], Awaitable[None]]) -> None:
        request = Request(scope, receive)
        response = await self._answer(request)
        await response(scope, receive, send)

    async def _answer(self, request: Request) -> Response:
        path = request.url.path
        if path in (PREFIX, PREFIX + "/"):
            return RedirectResponse("/console/approvals", status_code=303, headers=dict(SECURITY_HEADERS))
        rest = path[len(PREFIX):]
        method = "GET" if request.method == "HEAD" else request.method
        if rest.startswith("/static/"):
            parts = rest.split("/")
            found = self.static.response(parts[2], parts[3]) if len(parts) == 4 and method == "GET" else None
            return found or self._error(request, 404, "Not found")
        matched = [(r, m) for r in self._routes if (m := r.pattern.fullmatch(rest)) is not None]
        if not matched:
            return self._error(request, 404, "Not found")
        chosen = next(((r, m) for r, m in matched if r.method == method), None)
        if chosen is None:
            return self._error(request, 405, "Method not allowed")
        route, match = chosen
        ctx = Ctx(request, {k: v for k, v in match.groupdict().items() if v is not None}, self, nav=route.nav)
        try:
            return await self._run(route, ctx)
        except ConsoleStoreUnavailable as exc:
            log.error("console session store unavailable", extra={"fields": {"detail": exc.detail}})
            return self.renderer.page("login.html", Ctx(request, {}, self).context(
                status=503, oidc=False, dev_login=False, store_down=True,
                error="The console's session store is unavailable, so nobody can log in or stay logged in. Try "
                      "again when it is back (operators: see the gateway log)."), status=503)
        except RevocationUnavailable:
            return self._error(request, 503, "The revocation list is unavailable; the console refuses every "
                               "session until it is back.")

    async def _run(self, route: Route, ctx: Ctx) -> Response:
        request = ctx.request
        if route.auth:
            ctx.session = await self.sessions.load(request.cookies.get(SESSION_COOKIE), touch=route.touch)
            if ctx.session is not None and not self._live_credential(ctx.session):
                await self.sessions.end(request.cookies.get(SESSION_COOKIE))
                ctx.session = None
        else:
            ctx.pre_login = await self.sessions.find_pre_login(request.cookies.get(LOGIN_COOKIE))
        if route.auth and ctx.session is None:
            # before the CSRF check: without a session nothing can change, and an expired session's form
            # deserves "log in again", not "reload the page"
            if request.method == "POST":
                return self._error(request, 403, "Your session has ended. Log in again.")
            if ctx.htmx:
                return Response(status_code=401, headers={**SECURITY_HEADERS, "hx-redirect": "/console/login"})
            return ctx.redirect("/console/login")
        if ctx.request.method == "POST":
            expected = ctx.session.csrf if ctx.session else ctx.pre_login.csrf if ctx.pre_login else None
            body = await _read_form(request)
            if body is None:
                return self._error(request, 413, "Form too large")
            ctx.form = body
            try:
                check_request(request, expected, body.get(TOKEN_FIELD))
            except CsrfRefused as exc:
                log.warning("console request refused: CSRF", extra={"fields": {"reason": exc.detail}})
                return self._error(request, 403, "This form could not be accepted (its security token is missing "
                                   "or stale, or it came from another site). Reload the page and try again.")
        return await route.handler(ctx)

    def _live_credential(self, session: Session) -> bool:
        principal = session.principal
        try:
            self.services.revocations.check(jti=session.jti, client_id=principal.client_id,
                                            agent_id=principal.agent_id)
        except Revoked:
            log.warning("console session ended: credential revoked")
            return False
        return True

    def _error(self, request: Request, status: int, message: str) -> Response:
        ctx = Ctx(request, {}, self)
        return self.renderer.page("error.html", ctx.context(status=status, message=message), status=status)


async def _read_form(request: Request) -> dict[str, str] | None:
    """The urlencoded form body (last value of a repeated name); None when larger than the bound."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return {}
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=64))
    except (UnicodeDecodeError, ValueError):
        return {}
