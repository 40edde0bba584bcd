"""The gateway's side of the witness: ``audit.witness`` POSTs every checkpoint note to it.

The witness is one more exporter behind its own :class:`~portcullis.audit.siem.queue.ExportQueue`
(bounded buffer, retries with capped exponential backoff, counters exported as the
``exporter="audit.witness"`` series of the audit-export metrics), offered checkpoints only,
one per attempt. Nothing on the request path waits for it, and a witness that is down, slow or
refusing never stops the chain or a call: the queue logs and counts it.

Request: ``POST <url>`` with ``Content-Type: text/plain; charset=utf-8``, the body the C2SP
signed note, and ``Authorization: Bearer <token>`` when ``token_ref`` names one (never logged).
2xx is kept; 408, 429, 5xx, timeouts and connection failures are retried; 409 (the witness holds
a newer or different checkpoint: a rollback or a fork) and any other status are not, and a 409
is logged as an error with the witness's reason, escaped.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx2
from pydantic import BaseModel, ConfigDict, Field, model_validator

from portcullis.audit.siem.config import Current, _header_value, _ssl_context, _why
from portcullis.audit.siem.interface import ExportFailed, Record
from portcullis.audit.siem.queue import ExportQueue
from portcullis.audit.siem.webhook import HeaderSource, endpoint, header_now
from portcullis.config.secrets import SECRET_REF_PATTERN
from portcullis.errors import ConfigError, PortcullisError, Problem
from portcullis.text import escape_invisible

log = logging.getLogger("portcullis.audit.witness")

EXPORTER_NAME = "audit.witness"  # a dot: no SIEM exporter can be named so (their names are [a-z0-9_-])
_SECRET_REF = SECRET_REF_PATTERN
_REASON_BYTES = 512


class WitnessConfig(BaseModel):
    """Send every checkpoint to a witness (``portcullis audit witness``) that refuses rollbacks and forks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(pattern=r"^https?://[^\s#]+$", max_length=2048, description="The witness's add-checkpoint "
                     "URL (``https://host:port/add-checkpoint``); https:// unless allow_insecure_http. No "
                     "credentials in it.")
    token_ref: str | None = Field(None, pattern=_SECRET_REF, description="secret:// reference to a bearer token "
                                  "sent as ``Authorization: Bearer …``, for a witness behind a proxy that asks "
                                  "for one.")
    ca_file: str | None = Field(None, description="PEM file of CAs to trust, relative to the deployment "
                                "directory. Default: the system trust store.")
    timeout_s: float = Field(10.0, gt=0, le=300, description="Timeout for each connect, write and read.")
    allow_insecure_http: bool = Field(False, description="Permit an http:// URL (notes are signed: this risks "
                                      "their privacy and the token, not their authenticity). Warns at start.")
    max_pending: int = Field(1000, ge=1, le=100_000, description="Checkpoints buffered while the witness is "
                             "unreachable; more are dropped and counted.")
    max_attempts: int = Field(8, ge=1, le=100, description="Attempts per checkpoint before it is dropped "
                              "and counted.")
    retry_initial_s: float = Field(0.5, ge=0, le=60, description="Backoff after the first failed attempt.")
    retry_max_s: float = Field(30.0, ge=0, le=3600, description="Cap on the exponential backoff.")

    @model_validator(mode="after")
    def _consistent(self) -> WitnessConfig:
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError("retry_max_s must be >= retry_initial_s")
        return self


class WitnessExporter:
    """POSTs the note of each checkpoint record it is given; other records are refused (counted)."""

    def __init__(self, url: str, *, token: HeaderSource = None, timeout_s: float = 10.0,
                 allow_insecure_http: bool = False, ssl_context: ssl.SSLContext | None = None,
                 name: str = EXPORTER_NAME, transport: httpx2.AsyncBaseTransport | None = None) -> None:
        self.name = name
        self.where = endpoint(url, "witness", allow_insecure_http=allow_insecure_http,
                              credentials_hint="use token_ref")
        if self.where.startswith("http:"):
            log.warning("allow_insecure_http: checkpoints go to the witness in cleartext",
                        extra={"fields": {"endpoint": self.where}})
        self._url, self._timeout_s, self._ssl_context, self._transport = url, timeout_s, ssl_context, transport
        self._headers = {"content-type": "text/plain; charset=utf-8"}
        self._token = token  # a getter is read at each send: a rotated token is used without a restart
        self._client: httpx2.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"WitnessExporter(endpoint={self.where!r})"

    def _headers_now(self) -> dict[str, str]:
        token = header_now(self._token)
        if token is None:
            return self._headers
        if " " in token:
            raise ExportFailed("witness token must not contain spaces")
        return {**self._headers, "authorization": f"Bearer {token}"}

    async def send(self, batch: Sequence[Record]) -> int:
        refused = 0
        for record in batch:
            note = record.get("note")
            if record.get("kind") != "checkpoint" or not isinstance(note, str):
                refused += 1
                continue
            status, reason = await self._post(note.encode("utf-8"))
            if 200 <= status < 300:
                continue
            if status == 409:
                log.error("the witness refused a checkpoint: it holds a newer or different one (a rollback or a "
                          "fork of the audit chain)", extra={"fields": {
                              "endpoint": self.where, "size": record.get("size"), "witness_reason": reason}})
            retry = status in (408, 429) or status >= 500
            raise ExportFailed(f"witness {self.where} answered HTTP {status}", permanent=not retry)
        return refused

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.aclose()
            except (httpx2.HTTPError, OSError):
                pass

    async def _post(self, body: bytes) -> tuple[int, str]:
        if self._client is None:
            self._client = httpx2.AsyncClient(timeout=self._timeout_s, follow_redirects=False, trust_env=False,
                                              verify=self._ssl_context or True, transport=self._transport)
        headers = self._headers_now()
        try:
            async with self._client.stream("POST", self._url, content=body, headers=headers) as response:
                answer = bytearray()
                async for chunk in response.aiter_raw():
                    answer += chunk
                    if len(answer) > _REASON_BYTES:
                        break
                text = bytes(answer[:_REASON_BYTES]).decode("utf-8", "replace").strip()
                return response.status_code, escape_invisible(text)
        except httpx2.TimeoutException:
            raise ExportFailed(f"witness {self.where} timed out") from None
        except (httpx2.HTTPError, httpx2.StreamError, OSError) as exc:
            raise ExportFailed(f"witness {self.where} failed: {type(exc).__name__}") from None


def build_witness_queue(config: WitnessConfig, *, resolve_secret: Callable[[str], bytes],
                        base_dir: Path, current: Current | None = None) -> ExportQueue:
    """The witness exporter behind its own queue (enter it with ``async with``); ``ConfigError`` if it
    cannot be built (the message names the reference or the file, never a secret)."""
    try:
        token = None if config.token_ref is None else _header_value(resolve_secret(config.token_ref))
        if token is not None and " " in token:
            raise ValueError("witness token must not contain spaces")
        live = None if current is None or config.token_ref is None else current(config.token_ref)
        exporter = WitnessExporter(config.url, token=live or token, timeout_s=config.timeout_s,
                                   allow_insecure_http=config.allow_insecure_http,
                                   ssl_context=_ssl_context(config.ca_file, base_dir))
    except ConfigError as exc:
        raise ConfigError([Problem(p.path, p.line, f"audit witness: {p.message}") for p in exc.problems]) from None
    except (ValueError, OSError, ssl.SSLError, PortcullisError) as exc:
        raise ConfigError([Problem(base_dir, None, f"audit witness: {_why(exc)}")]) from None
    return ExportQueue([exporter], max_pending=config.max_pending, max_batch=1, max_attempts=config.max_attempts,
                       retry_initial_s=config.retry_initial_s, retry_max_s=config.retry_max_s,
                       send_timeout_s=max(config.timeout_s * 3, 1.0), flush_timeout_s=config.timeout_s)

