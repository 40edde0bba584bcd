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

The navigation is :data:`SECTIONS` filtered by :func:`nav`: each entry names the predicate its landing page
checks (the same function object, not a second copy), so the menu offers exactly the pages that will not
refuse; a page still checks its role itself, so a URL typed by hand is refused as before.

Roles are decided on every request from the session's principal (its claims as the identity provider gave
them at login, held until the session ends) and the running ``admin.responders`` / ``admin.operators``,
never remembered in the session: changed lists apply to the next page, a change of a person's groups at the
provider at their next login; revoking the credential ends the session on its next request (:mod:`.app`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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
    """Audit, the live view and the Containment section (whose parts then check their own role):
    responders and operators."""
    return responder(ctx) or operator(ctx)


def everyone(ctx: Ctx) -> bool:
    """Approvals: every logged-in person (the queue shows only what :meth:`may_approve` lets them decide)."""
    return True


@dataclass(frozen=True, slots=True)
class Section:
    """One navigation entry and the predicate its landing page checks."""

    key: str
    label: str
    href: str
    admits: Callable[[Ctx], bool]


SECTIONS = (Section("approvals", "Approvals", "/console/approvals", everyone),
            Section("audit", "Audit", "/console/audit", reader),
            Section("containment", "Containment", "/console/containment", reader),
            Section("live", "Live", "/console/live", reader))


def nav(ctx: Ctx) -> list[Section]:
    """The sections this session's person may open (none without a session)."""
    return [s for s in SECTIONS if s.admits(ctx)] if ctx.session is not None else []


def refused(ctx: Ctx, role: str) -> Response:
    """The 403 page: the role it takes, nothing of the page."""
    return ctx.render("error.html", status=403, message=f"This page is for {role} only "
                      "(the same people the gateway's admin API allows).")
