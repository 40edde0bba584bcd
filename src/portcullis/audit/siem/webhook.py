"""HTTPS webhook export: each batch is one signed POST of a JSON array.

Request: ``POST <url>`` with ``Content-Type: application/json``, the body a JSON array of
records (compact, sorted keys), and

* ``X-Portcullis-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(key, "<t>." + body)>``
* ``X-Portcullis-Batch-Id: <32 hex>`` — derived from the body, so a retried batch keeps its id
  and a receiver can de-duplicate on it.

Receivers check the header with :func:`verify_signature`. Answers: 2xx is delivered; 408, 429
and 5xx (and timeouts and connection failures) are retried; any other status (3xx — redirects
are not followed — and 4xx) is a permanent failure and the batch is dropped.

Refused when the exporter is made: a URL that is not ``https://`` (unless
``allow_insecure_http``, which logs a warning), a URL with credentials in it (they would end up
in logs; use ``authorization``), and an HMAC key shorter than 16 bytes. Logs name only the
URL's scheme, host and port: webhook paths often embed a token. The key is never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import ssl
import time
from collections.abc import Callable, Sequence

import httpx2
import orjson

from portcullis.audit.siem.interface import ExportFailed, Record

log = logging.getLogger("portcullis.audit.siem")

SIGNATURE_HEADER = "X-Portcullis-Signature"
BATCH_ID_HEADER = "X-Portcullis-Batch-Id"
MIN_KEY_BYTES = 16
MAX_SIGNATURE_HEADER_CHARS = 1024
_DRAIN_BYTES = 65_536  # read this much of an answer so the connection can be reused; ignore the rest


def signature_header(key: bytes, body: bytes, t: int) -> str:
    """The ``X-Portcullis-Signature`` value for ``body`` signed at Unix time ``t``."""
    return f"t={t},v1={_mac(key, body, t)}"


def verify_signature(key: bytes, header: str, body: bytes, now: float, tolerance_s: float = 300) -> bool:
    """Whether ``header`` is a valid signature of ``body`` by ``key``, made within ``tolerance_s`` of ``now``."""
    # 1. Parse: exactly one t=, at least one v1= (several allow a receiver-side key overlap), nothing else.
    if len(header) > MAX_SIGNATURE_HEADER_CHARS:
        return False
    stamps: list[str] = []
    macs: list[str] = []
    for part in header.split(","):
        label, sep, value = part.strip().partition("=")
        if not sep or not value:
            return False
        if label == "t":
            stamps.append(value)
        elif label == "v1":
            macs.append(value.lower())
        else:
            return False
    if len(stamps) != 1 or not macs or not stamps[0].isascii() or not stamps[0].isdigit():
        return False
    t = int(stamps[0])
    # 2. Freshness: a captured request replays only within the tolerance window, in either direction.
    if abs(now - t) > tolerance_s:
        return False
    # 3. Recompute and 4. compare in constant time.
    expected = _mac(key, body, t)
    return any(hmac.compare_digest(expected, mac) for mac in macs if mac.isascii())


def _mac(key: bytes, body: bytes, t: int) -> str:
    return hmac.new(key, f"{t}.".encode("ascii") + body, hashlib.sha256).hexdigest()


def _item(record: Record) -> bytes | None:
    """One record of the array, or None if it is not JSON (refused, counted as dropped)."""
    try:
        return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return None


def endpoint(url: str, what: str, *, allow_insecure_http: bool, credentials_hint: str) -> str:
    """``scheme://host:port`` of ``url`` (what logs may name: paths often embed a token); ValueError
    for a URL that is not ``https://`` (or ``http://`` with ``allow_insecure_http``) or holds credentials."""
    try:
        parsed = httpx2.URL(url)
    except httpx2.InvalidURL:
        raise ValueError(f"{what} url is not a valid URL") from None
    if parsed.scheme not in ("https", "http") or not parsed.host:
        raise ValueError(f"{what} url must be https://host/...")
    if parsed.userinfo:
        raise ValueError(f"{what} url must not hold credentials; {credentials_hint}")
    if parsed.scheme == "http" and not allow_insecure_http:
        raise ValueError(f"{what} url must be https:// (allow_insecure_http permits http://)")
    return f"{parsed.scheme}://{parsed.host}:{parsed.port or (443 if parsed.scheme == 'https' else 80)}"


HeaderSource = str | Callable[[], str] | None
"""A header value, or a getter read at each send (a secret that may rotate)."""


def header_now(source: HeaderSource) -> str | None:
    """The header value for this send; a rotated value that is no header value fails it, unquoted."""
    if source is None or isinstance(source, str):
        return source
    value = source()
    if not value or not all(32 <= ord(c) <= 126 for c in value):
        raise ExportFailed("authorization secret is not a printable ASCII header value")
    return value


class WebhookExporter:
    """POSTs each batch to ``url``, signed with ``key`` (the resolved ``secret://`` bytes)."""

    def __init__(self, url: str, key: bytes, *, timeout_s: float = 10.0, allow_insecure_http: bool = False,
                 ssl_context: ssl.SSLContext | None = None, authorization: HeaderSource = None,
                 name: str = "webhook", clock: Callable[[], float] = time.time,
                 transport: httpx2.AsyncBaseTransport | None = None) -> None:
        self.where = endpoint(url, "webhook", allow_insecure_http=allow_insecure_http,
                              credentials_hint="use an authorization secret")
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"webhook HMAC key must be at least {MIN_KEY_BYTES} bytes")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.name = name
        if self.where.startswith("http:"):
            log.warning("allow_insecure_http: audit records and their signatures go to the webhook in cleartext",
                        extra={"fields": {"exporter": name, "endpoint": self.where}})
        self._url, self._key, self._authorization = url, key, authorization
        self._timeout_s, self._clock = timeout_s, clock
        self._ssl_context, self._transport = ssl_context, transport
        self._client: httpx2.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"WebhookExporter(name={self.name!r}, endpoint={self.where!r})"

    async def send(self, batch: Sequence[Record]) -> int:
        items = [item for item in map(_item, batch) if item is not None]
        refused = len(batch) - len(items)
        if not items:
            return refused
        body = b"[" + b",".join(items) + b"]"
        headers = {"content-type": "application/json",
                   SIGNATURE_HEADER: signature_header(self._key, body, int(self._clock())),
                   BATCH_ID_HEADER: hashlib.sha256(body).hexdigest()[:32]}
        if (authorization := header_now(self._authorization)) is not None:
            headers["authorization"] = authorization
        status = await self._post(body, headers)
        if 200 <= status < 300:
            return refused
        retry = status in (408, 429) or status >= 500
        raise ExportFailed(f"webhook {self.where} answered HTTP {status}", permanent=not retry)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.aclose()
            except (httpx2.HTTPError, OSError):  # closing a broken pool: nothing left to release
                pass

    async def _post(self, body: bytes, headers: dict[str, str]) -> int:
        if self._client is None:
            self._client = httpx2.AsyncClient(timeout=self._timeout_s, follow_redirects=False,
                                              verify=self._ssl_context or True, transport=self._transport)
        try:
            async with self._client.stream("POST", self._url, content=body, headers=headers) as response:
                drained = 0
                async for chunk in response.aiter_raw():
                    drained += len(chunk)
                    if drained > _DRAIN_BYTES:
                        break
                return response.status_code
        except httpx2.TimeoutException:
            raise ExportFailed(f"webhook {self.where} timed out") from None
        except (httpx2.HTTPError, httpx2.StreamError, OSError) as exc:
            raise ExportFailed(f"webhook {self.where} failed: {type(exc).__name__}") from None
