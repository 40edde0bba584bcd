"""Syslog export: RFC 5424 messages over UDP (RFC 5426), TCP (RFC 6587) or TLS (RFC 5425).

The message, built by the pure :func:`format_message`::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [portcullis@32473 index="…" request_id="…" hash="…"] BOM{json}

* PRI = facility * 8 + severity. Severity (:func:`severity_for`): ``rejected`` records, denied
  decisions and failed outcomes are *warning*; approval requests and tool errors *notice*;
  allowed decisions, ``ok`` outcomes, signed ``checkpoint`` records and ``spawn`` records of a confined
  child with no ``unsafe_…`` setting *info* (a refused or unsafe spawn is *warning*); a
  ``service_identity`` record (a service (re)connected) is *info*. Anything unrecognised is *warning*.
* TIMESTAMP is the record's ``ts`` in UTC with microseconds (RFC 3339); APP-NAME ``portcullis``;
  MSGID the record kind. Header fields keep only printable ASCII (anything else becomes ``_``)
  and are cut to the RFC's lengths (255, 48, 128, 32); an empty one is the NILVALUE ``-``.
* The SD-PARAM values escape ``"``, ``\\`` and ``]`` as RFC 5424 §6.3.3 requires.
* MSG is a UTF-8 BOM and the record as compact JSON with sorted keys (its canonical form).

Transports:

* ``udp``: one datagram per message. A message longer than ``max_datagram`` bytes is not sent
  (cutting it would break the JSON) and is counted as dropped. UDP has no delivery feedback.
* ``tcp`` / ``tls``: octet-counting framing, ``MSG-LEN SP MSG``, on one long-lived connection.
  Before each batch the connection is checked for a peer close, and any connect or write
  failure closes it and raises a retryable :class:`ExportFailed`; the next attempt reconnects.
  ``tls`` verifies the server certificate and host name (system trust, or ``ssl_context``).
* ``udp`` and ``tcp`` send audit records in cleartext: choosing either for a host that is not
  loopback logs a warning when the exporter is made.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import socket
import ssl
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import anyio
import orjson
from anyio.abc import AsyncResource, ByteStream, ConnectedUDPSocket, SocketAttribute

from portcullis.audit.siem.interface import ExportFailed, Record
from portcullis.identity.bounded_http import is_loopback_host

log = logging.getLogger("portcullis.audit.siem")

SyslogProtocol = Literal["udp", "tcp", "tls"]
FACILITIES: Mapping[str, int] = {
    name: code for code, name in enumerate(
        ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp",
         "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4", "local5", "local6",
         "local7"))
}
WARNING, NOTICE, INFO = 4, 5, 6
APP_NAME = "portcullis"
SD_ID = "portcullis@32473"
BOM = b"\xef\xbb\xbf"
DEFAULT_PORTS: Mapping[str, int] = {"udp": 514, "tcp": 514, "tls": 6514}
_NET_ERRORS = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream)
_PROBE_S = 0.05


# --------------------------------------------------------------------------- formatting (pure)


def severity_for(record: Mapping[str, Any]) -> int:
    """The syslog severity of one record (see the module docstring)."""
    kind, fields = record.get("kind"), record.get("fields")
    fields = fields if isinstance(fields, Mapping) else {}
    if kind == "decision":
        decision = fields.get("decision")
        effect = decision.get("effect") if isinstance(decision, Mapping) else None
        return {"allow": INFO, "require_approval": NOTICE}.get(str(effect), WARNING)
    if kind == "outcome":
        return {"ok": INFO, "tool_error": NOTICE}.get(str(fields.get("outcome")), WARNING)
    if kind in ("checkpoint", "service_identity"):  # a signed checkpoint (audit/note.py), a (re)connect: routine
        return INFO
    if kind == "spawn":  # a confined stdio child starting is routine; refused or unsafe ones are not
        confinement = fields.get("confinement")
        unsafe = confinement.get("unsafe") if isinstance(confinement, Mapping) else None
        return INFO if fields.get("outcome") == "spawning" and unsafe == [] else WARNING
    return WARNING


def header_field(value: str, max_chars: int) -> str:
    """Printable US-ASCII only (RFC 5424 PRINTUSASCII), cut to ``max_chars``; ``-`` when empty."""
    cleaned = "".join(c if 33 <= ord(c) <= 126 else "_" for c in value[:max_chars])
    return cleaned or "-"


def sd_escape(value: str) -> str:
    """An SD-PARAM value with ``\\``, ``"`` and ``]`` escaped (backslash first)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def timestamp(ts: Any) -> str:
    """RFC 3339 UTC with microseconds, or ``-`` if ``ts`` is not a usable time."""
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        return "-"
    try:
        return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except (OverflowError, OSError, ValueError):
        return "-"


def format_message(record: Mapping[str, Any], *, facility: int, hostname: str, procid: str) -> bytes:
    """One RFC 5424 message for ``record``; ``ValueError`` if the record is not JSON."""
    try:
        body = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise ValueError("record is not JSON-serialisable") from exc
    pri = facility * 8 + severity_for(record)
    header = " ".join((f"<{pri}>1", timestamp(record.get("ts")), header_field(hostname, 255),
                       header_field(APP_NAME, 48), header_field(procid, 128),
                       header_field(str(record.get("kind", "")), 32)))
    params = " ".join(f'{name}="{sd_escape(str(record.get(name, "")))}"' for name in ("index", "request_id", "hash"))
    structured = f"[{SD_ID} {params}]".encode("utf-8", errors="replace")
    return header.encode("ascii") + b" " + structured + b" " + BOM + body


def octet_frame(message: bytes) -> bytes:
    """RFC 6587 octet counting: ``MSG-LEN SP MSG``."""
    return b"%d %s" % (len(message), message)


# --------------------------------------------------------------------------- the exporter


class SyslogExporter:
    """Sends each record as one RFC 5424 message to ``host:port``."""

    def __init__(self, host: str, port: int | None = None, *, protocol: SyslogProtocol = "tls",
                 facility: str = "local0", hostname: str | None = None, ssl_context: ssl.SSLContext | None = None,
                 max_datagram: int = 8192, connect_timeout_s: float = 10.0, name: str = "syslog") -> None:
        if protocol not in DEFAULT_PORTS:
            raise ValueError("protocol must be udp, tcp or tls")
        if facility not in FACILITIES:
            raise ValueError(f"unknown syslog facility {facility[:32]!r}")
        if ssl_context is not None and protocol != "tls":
            raise ValueError("an ssl_context needs protocol tls")
        if max_datagram < 1 or connect_timeout_s <= 0:
            raise ValueError("max_datagram must be >= 1 and connect_timeout_s > 0")
        self.name = name
        self.host, self.port, self.protocol = host, port or DEFAULT_PORTS[protocol], protocol
        self._facility = FACILITIES[facility]
        self._hostname = hostname or socket.gethostname()
        self._procid = str(os.getpid())
        self._max_datagram = max_datagram
        self._connect_timeout_s = connect_timeout_s
        if protocol == "tls" and ssl_context is None:
            ssl_context = ssl.create_default_context()  # system trust, host name checked, TLS 1.2 or later
        self._ssl_context = ssl_context
        self._udp: ConnectedUDPSocket | None = None
        self._stream: ByteStream | None = None
        if protocol != "tls" and not is_loopback_host(host):
            log.warning("syslog audit export in cleartext to a non-loopback host; use protocol tls",
                        extra={"fields": {"exporter": name, "host": host, "protocol": protocol}})

    async def send(self, batch: Sequence[Record]) -> int:
        messages: list[bytes] = []
        refused = 0
        for record in batch:
            try:
                messages.append(format_message(record, facility=self._facility, hostname=self._hostname,
                                               procid=self._procid))
            except ValueError:
                refused += 1
        if not messages:
            return refused
        if self.protocol == "udp":
            return refused + await self._send_udp(messages)
        await self._send_stream(b"".join(octet_frame(m) for m in messages))
        return refused

    async def aclose(self) -> None:
        resources: list[AsyncResource | None] = [self._udp, self._stream]
        self._udp = self._stream = None
        with anyio.CancelScope(shield=True):
            for resource in resources:
                if resource is not None:
                    try:
                        await resource.aclose()
                    except _NET_ERRORS:  # closing a broken connection: nothing left to release
                        pass

    # ------------------------------------------------------------------ transports

    async def _send_udp(self, messages: list[bytes]) -> int:
        refused = 0
        try:
            if self._udp is None:
                self._udp = await anyio.create_connected_udp_socket(self.host, self.port)
            for message in messages:
                if len(message) > self._max_datagram:
                    refused += 1
                    continue
                await self._udp.send(message)
        except _NET_ERRORS as exc:
            await self.aclose()
            raise ExportFailed(f"syslog udp send to {self.host}:{self.port} failed: {type(exc).__name__}") from None
        if refused:
            log.warning("syslog message over max_datagram not sent", extra={"fields": {
                "exporter": self.name, "records": refused, "max_datagram": self._max_datagram}})
        return refused

    async def _send_stream(self, data: bytes) -> None:
        try:
            if self._stream is not None and not await _alive(self._stream):
                await self.aclose()
            if self._stream is None:
                self._stream = await self._connect()
            await self._stream.send(data)
        except _NET_ERRORS as exc:
            await self.aclose()
            raise ExportFailed(f"syslog {self.protocol} send to {self.host}:{self.port} failed: "
                               f"{type(exc).__name__}") from None
        except BaseException:  # cancelled mid-write: a half-sent frame must not be continued
            await self.aclose()
            raise

    async def _connect(self) -> ByteStream:
        with anyio.fail_after(self._connect_timeout_s):
            if self._ssl_context is not None:
                return await anyio.connect_tcp(self.host, self.port, ssl_context=self._ssl_context,
                                               tls_hostname=self.host)
            return await anyio.connect_tcp(self.host, self.port)


async def _alive(stream: ByteStream) -> bool:
    """False if the peer has closed the connection (syslog servers never send us anything else)."""
    sock = stream.extra(SocketAttribute.raw_socket, None)  # noqa: S610 - anyio typed attributes, not Django
    if sock is None:  # pragma: no cover - every stream anyio.connect_tcp returns has one
        return True
    try:
        # The event loop wraps its sockets (asyncio's TransportSocket, uvloop's PseudoSocket) without
        # recv(); borrow the descriptor for one non-blocking peek and hand it straight back.
        probe = socket.socket(fileno=sock.fileno())
        try:
            peeked = probe.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        finally:
            probe.detach()
    except (BlockingIOError, InterruptedError):
        return True
    except OSError:
        return False
    if not peeked:
        return False
    # Bytes are waiting: under TLS a session ticket (harmless) or a close_notify. Read them through the stream.
    with anyio.move_on_after(_PROBE_S):
        try:
            await stream.receive()
        except _NET_ERRORS:
            return False
    return True


