"""The live view (responders and operators): calls per tool and decision, latency, errors, queue depths,
from what ``/metrics`` serves (:mod:`.live_metrics`); the tables refresh every 5 s by htmx polling.

=====  ==========================  ===============================================================
GET    ``/console/live``           the page
GET    ``/console/live/figures``   the tables fragment the page polls (does not keep a session alive)
=====  ==========================  ===============================================================
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.responses import Response

from portcullis.console import roles
from portcullis.console.live_metrics import live_figures

if TYPE_CHECKING:
    from portcullis.console.app import ConsoleApp, Ctx

log = logging.getLogger("portcullis.console")
ROLE = "responders and operators"


def register(app: ConsoleApp) -> None:
    app.route("GET", "/live", lambda ctx: live(ctx, "live.html"), nav="live")
    app.route("GET", "/live/figures", lambda ctx: live(ctx, "live_figures.html"), touch=False, nav="live")


async def live(ctx: Ctx, template: str) -> Response:
    if not roles.reader(ctx):
        return roles.refused(ctx, ROLE)
    render = ctx.services.metrics
    figures, problem = None, None
    if render is None:
        problem = "metrics are not available here"
    else:
        body, content_type = render()
        if not content_type.startswith("text/plain; version=0.0.4") and not body.startswith(b"# HELP"):
            problem = "metrics are turned off (observability.metrics.enabled)"
        else:
            try:
                figures = live_figures(body.decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                log.warning("console live view: metrics not parsed", extra={"fields": {"error": type(exc).__name__}})
                problem = "the metrics could not be read"
    return ctx.render(template, figures=figures, problem=problem)
