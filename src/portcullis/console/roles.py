"""Who may see which console page: the admin roles the JSON admin APIs use, nothing new.

=============  ===========================================  ==========================================
page           allowed                                      the same as
=============  ===========================================  ==========================================
Audit          ``admin.responders`` or ``admin.operators``  responders investigate (incidents, kill
                                                            switches), operators read the trail to
                                                            judge a policy change (``policy diff``)
Kill switches  ``admin.responders``                         ``/kill-switches``
Alerts         ``admin.responders``                         (alerts lead to containment)
Policy         ``admin.operators``                          ``/policy``
Live           ``admin.responders`` or ``admin.operators``  ``/metrics`` readers
=============  ===========================================  ==========================================

A person without the role gets a 403 page that names the role and shows nothing else, for a GET and for
a POST (nothing is changed); an empty list admits nobody, as in the APIs. The match is
:func:`~portcullis.policy.native.caller_matches`, the APIs' own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.responses import Response

from portcullis.policy.native import caller_matches

if TYPE_CHECKING:
    from portcullis.console.app import Ctx


def responder(ctx: Ctx) -> bool:
    return caller_matches(ctx.services.responders, ctx.principal)


def operator(ctx: Ctx) -> bool:
    return caller_matches(ctx.services.operators, ctx.principal)


def reader(ctx: Ctx) -> bool:
    """Audit and live view: responders and operators."""
    return responder(ctx) or operator(ctx)


def refused(ctx: Ctx, role: str) -> Response:
    """The 403 page: the role it takes, nothing of the page."""
    return ctx.render("error.html", status=403, message=f"This page is for {role} only "
                      "(the same people the gateway's admin API allows).")
