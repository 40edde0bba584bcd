"""Templates, static files and the security headers every console response carries.

Jinja2 with autoescape always on (every template, whatever its name). The ``vis`` filter shows
invisible, bidirectional and zero-width characters as visible escapes
(:func:`~portcullis.approvals.model.visible`); use it on every requester- or upstream-controlled
string (autoescape makes markup inert, ``vis`` makes hidden characters visible). ``vis_json``
pretty-prints a value with :func:`~portcullis.approvals.model.visible_json` applied, nothing cut.

Static files are the package's ``static/`` directory, listed once at start, served at
``/console/static/<content hash>/<name>`` with ``Cache-Control: immutable`` (a new file is a new URL);
templates link them with ``static('name')``.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from typing import Any

import jinja2
from starlette.responses import Response

from portcullis.approvals.model import visible, visible_json

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff",
                    "referrer-policy": "no-referrer", "x-frame-options": "DENY",
                    "cross-origin-opener-policy": "same-origin", "cross-origin-resource-policy": "same-origin"}
PAGE_HEADERS = {**SECURITY_HEADERS, "cache-control": "no-store"}
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon", ".txt": "text/plain; charset=utf-8"}


def vis(value: Any) -> str:
    """Any value as text with hidden characters shown (None: empty)."""
    return "" if value is None else visible(value if isinstance(value, str) else str(value))


def vis_json(value: Any) -> str:
    """A JSON value pretty-printed, every string (keys too) with hidden characters shown, nothing cut."""
    return json.dumps(visible_json(value), indent=2, ensure_ascii=False, sort_keys=True, default=str)


class StaticFiles:
    """The package's static files, read once: name -> (hash, bytes, content type)."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[str, bytes, str]] = {}
        root = resources.files("portcullis.console") / "static"
        for entry in root.iterdir():
            suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
            if entry.is_file() and suffix in _TYPES:
                body = entry.read_bytes()
                self.files[entry.name] = (hashlib.sha256(body).hexdigest()[:16], body, _TYPES[suffix])

    def url(self, name: str) -> str:
        return f"/console/static/{self.files[name][0]}/{name}"

    def response(self, digest: str, name: str) -> Response | None:
        entry = self.files.get(name)
        if entry is None or entry[0] != digest:
            return None
        return Response(entry[1], media_type=entry[2], headers={
            **SECURITY_HEADERS, "cache-control": "public, max-age=31536000, immutable"})


class Renderer:
    """Renders the package's templates (autoescaped) into page responses with the console's headers."""

    def __init__(self, static: StaticFiles) -> None:
        self.env = jinja2.Environment(loader=jinja2.PackageLoader("portcullis.console", "templates"),
                                      autoescape=True, undefined=jinja2.StrictUndefined,
                                      trim_blocks=True, lstrip_blocks=True)
        self.env.filters["vis"] = vis
        self.env.filters["vis_json"] = vis_json
        self.env.globals["static"] = static.url

    def page(self, template: str, context: dict[str, Any], *, status: int = 200,
             headers: dict[str, str] | None = None) -> Response:
        body = self.env.get_template(template).render(**context)
        return Response(body, status_code=status, media_type="text/html; charset=utf-8",
                        headers={**PAGE_HEADERS, **(headers or {})})
