"""Links and images in tool output that could carry data out: find them, and neutralise the risky ones.

A model that renders Markdown or HTML fetches an image as soon as it shows it, and a person clicks
a link; either sends whatever the URL carries to its host. :func:`neutralise_links` finds

* Markdown inline links and images ``[t](url)`` / ``![t](url)``, reference definitions ``[id]: url``,
  autolinks ``<https://…>``;
* HTML ``<a href=…>`` and ``<img src=…>`` (any attribute quoting),

and replaces the URL by ``[LINK REMOVED:<host> rule=output.links]`` when

* it is not ``http(s)``: ``javascript:``, ``data:``, ``vbscript:``, ``file:`` and the rest (always);
* it is an image whose host is not on the allow-list (it loads without a click);
* its host is not on the allow-list and it carries data: a query, a fragment, user info, or a path
  segment that looks like data (long, base64- or hex-like, or holding a marker the filter put
  there in place of a detected value).

URLs are parsed with :mod:`urllib.parse` (``ada-url``, a WHATWG parser, is not installable here),
with the confusions it shares with no browser closed explicitly: tabs and newlines are dropped
first (browsers drop them), a backslash counts as a slash (browsers treat it so in http(s) URLs),
the host is the part after the *last* ``@`` of the authority, lower-cased and IDNA-encoded
(punycode), and a host with any character outside ``[a-z0-9.-]`` is never on the allow-list.
Allow-list entries are a host (exact) or ``*.example.com`` (any subdomain, not the apex).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

RULE_ID = "output.links"
_MD_INLINE = re.compile(r"(!?)\[(?:[^\[\]\\]|\\.){0,1000}\]\(\s*<?([^\s()<>]*(?:\([^\s()<>]*\)[^\s()<>]*)*)>?"
                        r"(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)")
_MD_REFDEF = re.compile(r"^[ ]{0,3}\[(?:[^\[\]\\]|\\.){1,999}\]:[ \t]*<?(\S+?)>?(?=[ \t]|$)", re.MULTILINE)
_AUTOLINK = re.compile(r"<([a-zA-Z][a-zA-Z0-9+.-]{1,31}:[^\s<>]*)>")
_HTML_TAG = re.compile(r"<\s*(a|img|image|iframe|source|video|audio|link|script)\b[^>]*>", re.IGNORECASE)
_HTML_ATTR = re.compile(r"""\b(href|src|srcset|poster|data)\s*=\s*("[^"]*"|'[^']*'|[^\s"'>]+)""", re.IGNORECASE)
_IMAGE_TAGS = frozenset({"img", "image", "iframe", "source", "video", "audio", "script", "link"})
_HOST_OK = re.compile(r"[a-z0-9.-]+")
_DATA_SEGMENT = re.compile(r"[A-Za-z0-9+/=_%-]{16,}")
_MARKER = "[REDACTED:"
_CHEAP = re.compile(r"\]\s*[(:]|<")  # no Markdown link or HTML tag can be where none of these is


@dataclass(frozen=True, slots=True)
class LinkHit:
    """One neutralised URL: its host (IDNA, ``-`` when there is none) and why."""

    host: str
    reason: str  # "scheme", "image", "data"
    image: bool


@dataclass(frozen=True, slots=True)
class LinkResult:
    text: str
    hits: tuple[LinkHit, ...]


def normalise_hosts(hosts: Sequence[str]) -> tuple[str, ...]:
    """Allow-list entries lower-cased and IDNA-encoded (``*.`` prefix kept)."""
    out = []
    for entry in hosts:
        wildcard = entry.startswith("*.")
        host = _idna(entry[2:] if wildcard else entry)
        if host is None:
            raise ValueError(f"allow-list entry {entry!r} is not a host name")
        out.append(("*." + host) if wildcard else host)
    return tuple(out)


def _idna(host: str) -> str | None:
    host = host.strip().rstrip(".").lower()
    try:
        encoded = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        return None
    return encoded if encoded and _HOST_OK.fullmatch(encoded) else None


def host_allowed(host: str | None, allow: Sequence[str]) -> bool:
    if host is None:
        return False
    for entry in allow:
        if entry.startswith("*."):
            if host.endswith(entry[1:]):
                return True
        elif host == entry:
            return True
    return False


def judge(url: str, *, image: bool, allow: Sequence[str]) -> LinkHit | None:
    """Whether ``url`` must be neutralised (a :class:`LinkHit`) or may stay (None). A backslash is read
    both ways — as a browser reads it in an http(s) URL (a slash) and as Markdown does (an escape, so
    ``\\@`` is ``@``) — and either reading that must be neutralised is."""
    if "\\" in url:
        return (_judge(url.replace("\\", "/"), image, allow)
                or _judge(re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", url), image, allow))
    return _judge(url, image, allow)


def _judge(url: str, image: bool, allow: Sequence[str]) -> LinkHit | None:
    cleaned = re.sub(r"[\t\r\n]", "", url).strip()
    if not cleaned or cleaned.startswith("#") or (cleaned.startswith("/") and not cleaned.startswith("//")):
        return None  # a same-document or same-site relative reference: no host to send data to
    if not cleaned.startswith("//") and ":" not in cleaned.split("/", 1)[0]:
        return None  # a relative path
    try:
        parts = urlsplit(cleaned if not cleaned.startswith("//") else "https:" + cleaned)
    except ValueError:
        return LinkHit("-", "scheme", image)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        return LinkHit("-", "scheme", image)
    authority = parts.netloc
    userinfo, _, hostport = authority.rpartition("@")
    host_text = hostport
    if host_text.startswith("["):
        host = None  # an IP-literal: never on the allow-list
    else:
        host = _idna(host_text.rsplit(":", 1)[0] if host_text.count(":") == 1 else host_text)
    shown = host or "-"
    allowed = host_allowed(host, allow)
    if allowed and not userinfo:
        return None
    if image and not allowed:
        return LinkHit(shown, "image", image)
    if userinfo or parts.query or parts.fragment or _data_path(parts.path):
        return LinkHit(shown, "data", image)
    return None


def _data_path(path: str) -> bool:
    if _MARKER in path or "[HASHED:" in path or "[MASKED:" in path:
        return True
    for segment in path.split("/"):
        if len(segment) >= 48:
            return True
        if _DATA_SEGMENT.fullmatch(segment) and any(c.isdigit() for c in segment) and any(
                c.isalpha() for c in segment):
            return True
    return False


def marker(hit: LinkHit) -> str:
    return f"[LINK REMOVED:{hit.host} rule={RULE_ID}]"


def _may_hold_links(text: str) -> bool:
    """Whether ``text`` has a ``<`` or a ``]`` followed (after blanks) by ``(`` or ``:`` — the only
    places a Markdown link or an HTML tag can be (what ``_CHEAP`` matches). ``in`` and ``find`` are
    C-level searches; a regular expression over a JSON text full of ``]`` costs 50x more."""
    if "<" in text:
        return True
    at = text.find("]")
    while at >= 0:
        rest = text[at + 1:at + 65].lstrip()
        if rest[:1] in ("(", ":") and rest:
            return True
        if len(rest) == 0 and at + 65 < len(text):
            return _CHEAP.search(text, at) is not None  # a run of 64+ blanks: let the expression decide
        at = text.find("]", at + 1)
    return False


def neutralise_links(text: str, allow: Sequence[str]) -> LinkResult:
    """``text`` with every risky link or image URL replaced by its marker (see the module doc)."""
    if not _may_hold_links(text):
        return LinkResult(text, ())
    edits: list[tuple[int, int, str]] = []
    hits: list[LinkHit] = []

    def add(start: int, end: int, hit: LinkHit | None) -> None:
        if hit is not None and not any(s < end and start < e for s, e, _ in edits):
            edits.append((start, end, marker(hit)))
            hits.append(hit)

    def consider(start: int, end: int, url: str, image: bool) -> None:
        add(start, end, judge(url, image=image, allow=allow))

    for m in _MD_INLINE.finditer(text):
        consider(m.start(2), m.end(2), m.group(2), m.group(1) == "!")
    for m in _MD_REFDEF.finditer(text):
        consider(m.start(1), m.end(1), m.group(1), False)  # a definition may serve an image: judged as a link
    for m in _AUTOLINK.finditer(text):
        consider(m.start(1), m.end(1), m.group(1), False)
    for tag in _HTML_TAG.finditer(text):
        image = tag.group(1).lower() in _IMAGE_TAGS
        for attr in _HTML_ATTR.finditer(tag.group(0)):
            raw = attr.group(2)
            quoted = raw[:1] in "\"'"
            start = tag.start() + attr.start(2) + (1 if quoted else 0)
            value = raw[1:-1] if quoted else raw
            urls = [u.strip().split(" ")[0] for u in value.split(",")] if attr.group(1).lower() == "srcset" else [value]
            found = [hit for u in urls if (hit := judge(u, image=image, allow=allow)) is not None]
            add(start, start + len(value), found[0] if found else None)
    if not edits:
        return LinkResult(text, ())
    out: list[str] = []
    pos = 0
    for start, end, replacement in sorted(edits):
        out.append(text[pos:start])
        out.append(replacement)
        pos = end
    out.append(text[pos:])
    return LinkResult("".join(out), tuple(hits))
