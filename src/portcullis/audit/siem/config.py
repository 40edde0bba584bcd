"""SIEM export configuration, and the one function that turns it into exporters and a queue.

Every model is frozen and refuses unknown keys. Paths (``path``, ``ca_file``) are relative to
the deployment directory. Secrets are ``secret://`` references, resolved by the caller's
``resolve_secret`` when the exporters are built, never stored in the models. Anything that
cannot be built (a missing directory, an unreadable CA file, an unresolvable secret, a plain
``http://`` URL) is a :class:`~portcullis.errors.ConfigError` naming the exporter, never a value.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from portcullis.audit.siem.interface import Exporter
from portcullis.audit.siem.jsonl import JsonlExporter
from portcullis.audit.siem.queue import ExportQueue
from portcullis.audit.siem.syslog import SyslogExporter
from portcullis.audit.siem.webhook import HeaderSource, WebhookExporter
from portcullis.config.secrets import SECRET_REF_PATTERN
from portcullis.errors import ConfigError, PortcullisError, Problem

_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_SECRET_REF = SECRET_REF_PATTERN
Facility = Literal["kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
                   "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4",
                   "local5", "local6", "local7"]
"""The names of :data:`portcullis.audit.siem.syslog.FACILITIES` (a test keeps the two in step)."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class JsonlExportConfig(_Model):
    """Append records to a local JSON-lines file, rotated by size."""

    type: Literal["jsonl"] = Field(description="Selects this exporter.")
    name: str = Field("jsonl", pattern=_NAME, description="Unique exporter name, used in logs and metrics.")
    path: str = Field(min_length=1, description="The file, relative to the deployment directory. Its directory "
                      "must exist; the file is created with mode 0600.")
    max_bytes: int = Field(100 * 1024 * 1024, ge=4096, description="Rotate before the file would grow past this.")
    backups: int = Field(5, ge=0, le=1000, description="Rotated files kept (path.1 is the newest).")
    fsync: bool = Field(True, description="Flush every batch to disk before counting it as sent.")


class SyslogExportConfig(_Model):
    """Send each record as an RFC 5424 syslog message."""

    type: Literal["syslog"] = Field(description="Selects this exporter.")
    name: str = Field("syslog", pattern=_NAME, description="Unique exporter name, used in logs and metrics.")
    host: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:_-]+$",
                      description="Syslog receiver host name or IP address.")
    port: int | None = Field(None, ge=1, le=65535,
                             description="Receiver port. Default: 514 for udp and tcp, 6514 for tls.")
    protocol: Literal["udp", "tcp", "tls"] = Field(
        "tls", description="tls (RFC 5425, verified certificate), tcp (RFC 6587 octet counting) or udp "
        "(RFC 5426). udp and tcp are cleartext and warn for a non-loopback host.")
    facility: Facility = Field("local0", description="Syslog facility name (kern ... local7).")
    hostname: str | None = Field(None, max_length=255, description="HOSTNAME field. Default: this machine's name.")
    ca_file: str | None = Field(None, description="PEM file of CAs to trust for tls, relative to the deployment "
                                "directory. Default: the system trust store.")
    max_datagram: int = Field(8192, ge=480, le=65507, description="udp only: a message longer than this many "
                              "bytes is not sent and is counted as dropped.")
    connect_timeout_s: float = Field(10.0, gt=0, le=300, description="tcp and tls connect timeout.")

    @model_validator(mode="after")
    def _ca_needs_tls(self) -> SyslogExportConfig:
        if self.ca_file is not None and self.protocol != "tls":
            raise ValueError("ca_file needs protocol tls")
        return self


class WebhookExportConfig(_Model):
    """POST batches of records to an HTTPS endpoint, signed with HMAC-SHA256."""

    type: Literal["webhook"] = Field(description="Selects this exporter.")
    name: str = Field("webhook", pattern=_NAME, description="Unique exporter name, used in logs and metrics.")
    url: str = Field(pattern=r"^https?://[^\s#]+$", max_length=2048,
                     description="Endpoint URL; https:// unless allow_insecure_http. No credentials in it.")
    secret_ref: str = Field(pattern=_SECRET_REF, description="secret:// reference to the HMAC-SHA256 key "
                            "(at least 16 bytes) for the X-Portcullis-Signature header.")
    authorization_ref: str | None = Field(None, pattern=_SECRET_REF, description="secret:// reference to an "
                                          "Authorization header value the endpoint requires, if any.")
    ca_file: str | None = Field(None, description="PEM file of CAs to trust, relative to the deployment "
                                "directory. Default: the system trust store.")
    timeout_s: float = Field(10.0, gt=0, le=300, description="Timeout for each connect, write and read.")
    allow_insecure_http: bool = Field(False, description="Permit an http:// URL: records and signatures in "
                                      "cleartext. Warns at every start.")


ExportConfig = Annotated[JsonlExportConfig | SyslogExportConfig | WebhookExportConfig, Field(discriminator="type")]


class SiemExportConfig(_Model):
    """Where audit records are exported, and how hard the queue tries."""

    exporters: tuple[ExportConfig, ...] = Field(min_length=1, description="Destinations; each gets its own buffer.")
    max_pending: int = Field(10_000, ge=1, le=1_000_000, description="Records buffered per exporter; more are "
                             "dropped and counted.")
    max_batch: int = Field(256, ge=1, le=10_000, description="Records sent per attempt.")
    max_attempts: int = Field(8, ge=1, le=100, description="Attempts per batch before it is dropped and counted.")
    retry_initial_s: float = Field(0.5, ge=0, le=60, description="Backoff after the first failed attempt.")
    retry_max_s: float = Field(30.0, ge=0, le=3600, description="Cap on the exponential backoff.")
    send_timeout_s: float = Field(30.0, gt=0, le=600, description="An attempt with no result by then has failed.")
    flush_timeout_s: float = Field(5.0, ge=0, le=600, description="At shutdown, time allowed to drain buffers.")

    @model_validator(mode="after")
    def _consistent(self) -> SiemExportConfig:
        names = [e.name for e in self.exporters]
        if len(set(names)) != len(names):
            raise ValueError("exporter names must be unique (set name: on exporters of the same type)")
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError("retry_max_s must be >= retry_initial_s")
        return self


Current = Callable[[str], Callable[[], str]]
"""A reference's live getter (config/secret_store.py): a header read at each send follows a rotation."""


def build_exporters(configs: Sequence[JsonlExportConfig | SyslogExportConfig | WebhookExportConfig], *,
                    resolve_secret: Callable[[str], bytes], base_dir: Path,
                    current: Current | None = None) -> list[Exporter]:
    """One exporter per config, in order; ``ConfigError`` listing every one that cannot be built."""
    exporters: list[Exporter] = []
    problems: list[Problem] = []
    for config in configs:
        try:
            exporters.append(_build(config, resolve_secret, base_dir, current))
        except ConfigError as exc:  # an unresolvable secret: keep its problem (it names the ref, not the value)
            problems += [Problem(p.path, p.line, f"audit export {config.name!r}: {p.message}") for p in exc.problems]
        except (ValueError, OSError, ssl.SSLError, PortcullisError) as exc:
            problems.append(Problem(base_dir, None, f"audit export {config.name!r}: {_why(exc)}"))
    if problems:
        raise ConfigError(problems)
    return exporters


def build_queue(config: SiemExportConfig, *, resolve_secret: Callable[[str], bytes], base_dir: Path,
                current: Current | None = None) -> ExportQueue:
    """The exporters of ``config`` behind one :class:`ExportQueue` (enter it with ``async with``)."""
    return ExportQueue(build_exporters(config.exporters, resolve_secret=resolve_secret, base_dir=base_dir,
                                       current=current),
                       max_pending=config.max_pending, max_batch=config.max_batch, max_attempts=config.max_attempts,
                       retry_initial_s=config.retry_initial_s, retry_max_s=config.retry_max_s,
                       send_timeout_s=config.send_timeout_s, flush_timeout_s=config.flush_timeout_s)


def _build(config: JsonlExportConfig | SyslogExportConfig | WebhookExportConfig,
           resolve_secret: Callable[[str], bytes], base_dir: Path, current: Current | None) -> Exporter:
    if isinstance(config, JsonlExportConfig):
        return JsonlExporter(base_dir / config.path, max_bytes=config.max_bytes, backups=config.backups,
                             fsync=config.fsync, name=config.name)
    if isinstance(config, SyslogExportConfig):
        return SyslogExporter(config.host, config.port, protocol=config.protocol, facility=config.facility,
                              hostname=config.hostname, ssl_context=_ssl_context(config.ca_file, base_dir),
                              max_datagram=config.max_datagram, connect_timeout_s=config.connect_timeout_s,
                              name=config.name)
    authorization: HeaderSource = None
    if config.authorization_ref is not None:
        authorization = _header_value(resolve_secret(config.authorization_ref))
        if current is not None:
            authorization = current(config.authorization_ref)
    return WebhookExporter(config.url, resolve_secret(config.secret_ref), timeout_s=config.timeout_s,
                           allow_insecure_http=config.allow_insecure_http,
                           ssl_context=_ssl_context(config.ca_file, base_dir), authorization=authorization,
                           name=config.name)


def _ssl_context(ca_file: str | None, base_dir: Path) -> ssl.SSLContext | None:
    if ca_file is None:
        return None
    path = base_dir / ca_file
    if not path.is_file():
        raise ValueError(f"ca_file {ca_file} does not exist")
    try:
        return ssl.create_default_context(cafile=str(path))
    except ssl.SSLError:
        raise ValueError(f"ca_file {ca_file} holds no usable PEM certificate") from None


def _header_value(secret: bytes) -> str:
    """The secret as an HTTP header value; the error never quotes it."""
    if not secret or not all(32 <= b <= 126 for b in secret):
        raise ValueError("authorization secret is not a printable ASCII header value")
    return secret.decode("ascii")


def _why(exc: BaseException) -> str:
    if isinstance(exc, PortcullisError):
        return exc.detail or exc.message
    if isinstance(exc, OSError):
        return f"{type(exc).__name__} ({exc.strerror or 'no detail'})"
    return str(exc)
