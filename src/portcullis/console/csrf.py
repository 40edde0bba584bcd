"""CSRF protection for every console state change (every POST).

Two independent checks, both must pass:

1. The request comes from the console's own origin: ``Sec-Fetch-Site`` (when the browser sends it) is
   ``same-origin``, and ``Origin`` (when sent) equals the request's own scheme and Host. A POST with
   neither header is refused (every browser that can run the console sends at least one).
2. The synchronizer token: the session's (or, on the login forms, the pre-login record's) random token,
   sent as the form field ``csrf_token`` or the header ``X-CSRF-Token`` (htmx, set by console.js from
   the ``csrf-token`` meta tag), compared in constant time.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request

from portcullis.errors import PortcullisError

TOKEN_FIELD = "csrf_token"  # noqa: S105 (a form field name)
TOKEN_HEADER = "x-csrf-token"  # noqa: S105 (a header name)


class CsrfRefused(PortcullisError):
    status, message = 403, "request refused"


def check_request(request: Request, expected: str | None, form_token: str | None) -> None:
    """Raise :class:`CsrfRefused` unless the request is same-origin and carries ``expected``."""
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if site is None and origin is None:
        raise CsrfRefused(detail="no Origin or Sec-Fetch-Site")
    if site is not None and site != "same-origin":
        raise CsrfRefused(detail="Sec-Fetch-Site not same-origin")
    if origin is not None:
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        if origin != own:
            raise CsrfRefused(detail="Origin is not the console's")
    sent = request.headers.get(TOKEN_HEADER) or form_token
    if not expected or not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfRefused(detail="missing or wrong CSRF token")
