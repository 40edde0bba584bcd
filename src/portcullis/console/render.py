"""Templates, static files and the security headers every console response carries.

Jinja2 with autoescape always on (every template, whatever its name). The ``vis`` filter shows
invisible, bidirectional and zero-width characters as visible escapes
(:func:`~portcullis.approvals.model.visible`); use it on every requester- or upstream-controlled
string (autoescape makes markup inert, ``vis`` makes hidden characters visible). ``value`` shows a
JSON value as nested HTML with ``vis`` applied (``shown_value`` for values the approval service already
made visible: never apply ``vis`` twice, it escapes backslashes); ``vis_json`` is the text form.

Static files are the package's ``static/`` directory, listed once at start, served at
``/console/static/<content hash>/<name>`` with ``Cache-Control: immutable`` (a new file is a new URL);
templates link them with ``static('name')``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup
from starlette.responses import Response

from portcullis.approvals.model import visible, visible_json

# Referrer-Policy same-origin, not no-referrer: under no-referrer a browser sends "Origin: null" on every
# POST, its own origin's included (Fetch, "append a request Origin header"), so the admin listener's Origin
# allow-list and the CSRF check could not tell the console's own forms from an opaque origin's. A referrer
# still never leaves the console's origin.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff",
                    "referrer-policy": "same-origin", "x-frame-options": "DENY",
                    "cross-origin-opener-policy": "same-origin", "cross-origin-resource-policy": "same-origin"}
PAGE_HEADERS = {**SECURITY_HEADERS, "cache-control": "no-store"}
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon", ".txt": "text/plain; charset=utf-8"}


def vis(value: Any) -> str:
    """Any value as text with hidden characters shown (None: empty)."""
    return "" if value is None else visible(value if isinstance(value, str) else str(value))


def vis_json(value: Any) -> str:
    """A JSON value pretty-printed, every string (keys too) with hidden characters shown, nothing cut
    (for text; a string's backslashes then read doubled, as JSON writes them — prefer :func:`value_html`)."""
    return json.dumps(visible_json(value), indent=2, ensure_ascii=False, sort_keys=True, default=str)


def value_html(value: Any, *, raw: bool = True) -> Markup:
    """A JSON value as nested HTML (objects as key/value tables, arrays as numbered lists, strings quoted),
    so the structure comes from the markup, never from the text: a string holding quotes, braces or line
    breaks cannot pose as more keys. ``raw``: apply :func:`vis` to strings and keys here; False for values
    already made visible (the approval service's views). Escaped; nothing cut."""
    text = vis if raw else (lambda v: v if isinstance(v, str) else str(v))
    if isinstance(value, Mapping):
        if not value:
            return Markup('<span class="kw">{}</span>')
        rows = Markup("").join(Markup('<tr><th scope="row" class="mono">{}</th><td>{}{}</td></tr>').format(
            text(k), value_html(v, raw=raw), _when(k, v)) for k, v in value.items())
        return Markup('<table class="kv"><tbody>{}</tbody></table>').format(rows)
    if isinstance(value, list | tuple):
        if not value:
            return Markup('<span class="kw">[]</span>')
        items = Markup("").join(Markup("<li>{}</li>").format(value_html(v, raw=raw)) for v in value)
        return Markup('<ol class="arr" start="0">{}</ol>').format(items)
    if isinstance(value, str):
        return Markup('<span class="str mono">&quot;{}&quot;</span>').format(text(value))
    if value is None or isinstance(value, bool):
        return Markup('<span class="kw">{}</span>').format("null" if value is None else str(value).lower())
    return Markup('<span class="num mono">{}</span>').format(text(value))


def _when(key: object, value: object) -> Markup:
    """After a record's time field (``at``, ``*_at``: UNIX seconds), the same instant in UTC for people."""
    if not (isinstance(key, str) and (key == "at" or key.endswith("_at"))):
        return Markup("")
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e11:
        return Markup("")
    stamp = datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup(' <span class="muted">({})</span>').format(stamp)


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
        self.env.filters["value"] = value_html  # raw values
        self.env.filters["shown_value"] = lambda v: value_html(v, raw=False)  # values already made visible
        self.env.globals["static"] = static.url

    def page(self, template: str, context: dict[str, Any], *, status: int = 200,
             headers: dict[str, str] | None = None) -> Response:
        body = self.env.get_template(template).render(**context)
        return Response(body, status_code=status, media_type="text/html; charset=utf-8",
                        headers={**PAGE_HEADERS, **(headers or {})})
