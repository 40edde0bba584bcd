"""Request and response headers for the HTTP kit: pure decisions over names and values.

**Request.** The kit writes ``Host``, ``Connection: close``, ``Accept-Encoding: identity``,
``User-Agent`` and ``Content-Length`` itself. A caller's header is sent only when its name is on
the configured allow-list (:data:`DEFAULT_CALLER_HEADERS` by default) and is dropped otherwise.
Some names can never be allowed (:func:`allowed_names` refuses them at configuration): hop-by-hop
and framing fields, ``Host``, ``Proxy-*``, ``X-Forwarded-*``, ``Forwarded``, ``Via`` and
``X-Real-IP`` — they would let a caller steer a proxy, smuggle a request or forge where it came
from. ``Authorization`` and ``Cookie`` may be allowed explicitly; they are then dropped on a
redirect to another origin (:data:`SENSITIVE`). A name or value that is not a token / visible
ASCII (CR, LF, NUL, non-ASCII) refuses the whole request (``header_invalid``) rather than being
dropped, since it can only be an attack or a bug.

**Response.** A body in a ``Content-Encoding`` other than ``identity`` is refused (the kit never
decompresses, so no compression bomb can grow past the size limit), and a non-empty body must
carry a ``Content-Type`` whose media type is on the allow-list (``type/subtype`` or ``type/*``).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Mapping

from portcullis.kits.http_errors import HttpKitError, HttpKitReason

DEFAULT_CALLER_HEADERS = frozenset({"accept", "accept-language", "content-type", "if-match", "if-none-match",
                                    "if-modified-since", "if-unmodified-since", "cache-control"})
SENSITIVE = frozenset({"authorization", "cookie"})
_NEVER = frozenset({"host", "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade",
                    "content-length", "expect", "accept-encoding", "forwarded", "via", "x-real-ip",
                    "x-client-ip", "true-client-ip", "x-original-url", "x-rewrite-url", "x-http-method-override",
                    "user-agent", "http2-settings"})
_NEVER_PREFIXES = ("proxy-", "x-forwarded-")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\t\x20-\x7e]*")
MAX_HEADER_VALUE = 8192


def _never(name: str) -> bool:
    return name in _NEVER or name.startswith(_NEVER_PREFIXES)


def allowed_names(names: Iterable[str]) -> frozenset[str]:
    """Validate a configured allow-list (lower-cased); raises ``ValueError`` for a forbidden name."""
    lowered = frozenset(name.lower() for name in names)
    for name in lowered:
        if not _TOKEN.fullmatch(name) or _never(name):
            raise ValueError("a header on the allow-list may never be set by a caller")
    return lowered


def valid_value(value: str) -> bool:
    """Visible ASCII, space and tab only, and not too long."""
    return len(value) <= MAX_HEADER_VALUE and _VALUE.fullmatch(value) is not None


def caller_headers(given: Mapping[str, str] | None, allowed: frozenset[str]) -> tuple[tuple[str, str], ...]:
    """The caller's headers that may be sent: validated, lower-cased, the others dropped."""
    kept: list[tuple[str, str]] = []
    for name, value in (given or {}).items():
        if not (isinstance(name, str) and isinstance(value, str) and _TOKEN.fullmatch(name) and valid_value(value)):
            raise HttpKitError(HttpKitReason.HEADER_INVALID)
        lowered = name.lower()
        if lowered in allowed and not _never(lowered):
            kept.append((lowered, value.strip(" \t")))
    return tuple(kept)


def without_sensitive(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """``headers`` minus credentials: what follows a redirect to another origin."""
    return tuple((name, value) for name, value in headers if name not in SENSITIVE)


def allowed_media_types(types: Iterable[str]) -> frozenset[str]:
    """Validate a content-type allow-list: ``type/subtype`` or ``type/*``, lower-cased."""
    lowered = frozenset(value.lower() for value in types)
    for value in lowered:
        kind, _, sub = value.partition("/")
        if not _TOKEN.fullmatch(kind) or not (sub == "*" or _TOKEN.fullmatch(sub)):
            raise ValueError("a content type on the allow-list must be type/subtype or type/*")
    return lowered


def check_response(headers: Mapping[str, str], body: bytes, media_types: frozenset[str]) -> None:
    """Refuse an encoded body, or a non-empty body of a type that is not allowed."""
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise HttpKitError(HttpKitReason.CONTENT_ENCODING_REFUSED)
    if not body:
        return
    media = media_type(headers)
    if media is None or (media not in media_types and f"{media.partition('/')[0]}/*" not in media_types):
        raise HttpKitError(HttpKitReason.CONTENT_TYPE_REFUSED)


def media_type(headers: Mapping[str, str]) -> str | None:
    """The response's ``type/subtype``, lower-cased, or None when absent or malformed."""
    value = headers.get("content-type")
    if value is None:
        return None
    media = value.split(";", 1)[0].strip().lower()
    kind, _, sub = media.partition("/")
    return media if _TOKEN.fullmatch(kind) and _TOKEN.fullmatch(sub) else None


def charset(headers: Mapping[str, str]) -> str | None:
    """The content type's ``charset`` when it names a plain text encoding, else None (read as UTF-8).

    The server names the codec, so only text encodings are honoured: ``punycode``, ``idna`` or
    ``unicode_escape`` would let it pick a slow or escape-interpreting decoder for a whole body.
    """
    for parameter in headers.get("content-type", "").split(";")[1:]:
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset":
            try:
                name = codecs.lookup(value.strip().strip('"')).name
            except (LookupError, ValueError):
                return None
            return name if name in _TEXT_CODECS or name.startswith(_TEXT_CODEC_FAMILIES) else None
    return None


_TEXT_CODECS = frozenset({"utf-8", "utf-8-sig", "ascii", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le",
                          "utf-32-be", "shift_jis", "euc_jp", "iso2022_jp", "gb2312", "gbk", "gb18030", "big5",
                          "euc_kr", "koi8-r", "koi8-u"})
_TEXT_CODEC_FAMILIES = ("iso8859-", "cp125", "mac-")
