"""Syslog export: RFC 5424 messages, checked by real UDP, TCP and TLS receivers on loopback."""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from anyio.abc import ByteStream, SocketAttribute
from anyio.streams.tls import TLSListener

from portcullis.audit.record import GENESIS_HASH, make_record
from portcullis.audit.siem import ExportFailed, ExportQueue, SyslogExporter, format_message
from portcullis.audit.siem.syslog import FACILITIES, header_field, sd_escape, severity_for
from tests.pki import Pki, make_pki

BOM = b"\xef\xbb\xbf"
HEADER = re.compile(rb"^<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) ")


def make_records(n: int, *, kind: str = "decision", fields: dict[str, Any] | None = None,
                 request_id: str = "req") -> list[dict[str, Any]]:
    out, prev = [], GENESIS_HASH
    for i in range(n):
        record = make_record(i, 1_800_000_000.123456 + i, f"{request_id}-{i}", kind,
                             fields if fields is not None else {"decision": {"effect": "allow"}}, prev)
        out.append(record.to_json())
        prev = record.hash
    return out


def parse_sd(data: bytes) -> tuple[str, dict[str, str], bytes]:
    """One SD-ELEMENT at the start of ``data``: (SD-ID, unescaped params, the rest), per RFC 5424 §6.3."""
    text = data.decode("utf-8")
    assert text[0] == "["
    sd_id, _, text = text[1:].partition(" ")
    params: dict[str, str] = {}
    while True:
        name, eq, text = text.partition("=")
        assert eq and text[0] == '"' and re.fullmatch(r"[!#-~]{1,32}", name) and "]" not in name
        value, i = [], 1
        while text[i] != '"':
            if text[i] == "\\" and text[i + 1] in '"\\]':
                value.append(text[i + 1])
                i += 2
                continue
            assert text[i] != "]", "unescaped ] inside a PARAM-VALUE"
            value.append(text[i])
            i += 1
        params[name] = "".join(value)
        text = text[i + 1:]
        if text[0] == "]":
            return sd_id, params, text[1:].encode("utf-8")
        assert text[0] == " "
        text = text[1:]


def parse_message(message: bytes) -> dict[str, Any]:
    """A full RFC 5424 message as this exporter writes it, checked field by field."""
    header = HEADER.match(message)
    assert header is not None, message[:120]
    pri, ts, host, app, procid, msgid = header.groups()
    sd_id, params, rest = parse_sd(message[header.end():])
    assert rest.startswith(b" " + BOM)
    for field, limit in ((host, 255), (app, 48), (procid, 128), (msgid, 32)):
        assert 1 <= len(field) <= limit and all(33 <= b <= 126 for b in field)
    return {"pri": int(pri), "ts": ts.decode(), "host": host.decode(), "app": app.decode(),
            "procid": procid.decode(), "msgid": msgid.decode(), "sd_id": sd_id, "params": params,
            "record": orjson.loads(rest[4:])}


def parse_frames(buffer: bytes) -> tuple[list[bytes], bytes]:
    """RFC 6587 octet-counting frames (``MSG-LEN SP MSG``) and the unparsed remainder."""
    frames = []
    while True:
        length, space, rest = buffer.partition(b" ")
        if not space:
            return frames, buffer
        assert re.fullmatch(rb"[1-9][0-9]*", length), f"bad MSG-LEN {length[:20]!r}"
        if len(rest) < int(length):
            return frames, buffer
        frames.append(rest[:int(length)])
        buffer = rest[int(length):]


# --------------------------------------------------------------------------- formatting


def test_message_has_every_rfc5424_field_and_the_record_as_json() -> None:
    """PRI, version, UTC microsecond timestamp, host, app, procid, kind, SD and BOM+JSON are all there."""
    record = make_records(1)[0]
    parsed = parse_message(format_message(record, facility=FACILITIES["local0"], hostname="gw-1", procid="42"))
    assert parsed == {"pri": 16 * 8 + 6, "ts": "2027-01-15T08:00:00.123456Z", "host": "gw-1", "app": "portcullis",
                      "procid": "42", "msgid": "decision", "sd_id": "portcullis@32473",
                      "params": {"index": "0", "request_id": "req-0", "hash": record["hash"]}, "record": record}


@pytest.mark.parametrize(("kind", "fields", "severity"), [
    ("decision", {"decision": {"effect": "allow"}}, 6),
    ("decision", {"decision": {"effect": "deny"}}, 4),
    ("decision", {"decision": {"effect": "require_approval"}}, 5),
    ("decision", {"decision": "garbage"}, 4),
    ("decision", {}, 4),
    ("outcome", {"outcome": "ok"}, 6),
    ("outcome", {"outcome": "tool_error"}, 5),
    ("outcome", {"outcome": "timeout"}, 4),
    ("outcome", {"outcome": "upstream_error"}, 4),
    ("rejected", {"reason": "unknown tool"}, 4),
    ("spawn", {"outcome": "spawning", "confinement": {"unsafe": []}}, 6),
    ("spawn", {"outcome": "spawning", "confinement": {"unsafe": ["unsafe_no_sandbox"]}}, 4),
    ("spawn", {"outcome": "refused", "confinement": {"unsafe": []}}, 4),
    ("spawn", {"outcome": "spawning"}, 4),
    ("spawn", {"outcome": "spawning", "confinement": "garbage"}, 4),
])
def test_severity_is_info_for_allowed_and_ok_and_warning_for_denied_and_rejected(
        kind: str, fields: dict[str, Any], severity: int) -> None:
    """The PRI's severity follows the decision effect, the outcome and the kind; unknown means warning."""
    record = make_records(1, kind=kind, fields=fields)[0]
    assert severity_for(record) == severity
    message = format_message(record, facility=FACILITIES["auth"], hostname="h", procid="1")
    assert parse_message(message)["pri"] == 4 * 8 + severity


@pytest.mark.parametrize("request_id", ['a"b', "a\\b", "a]b", '\\"]', "]]]", "\\", 'x" hash="forged', "é ünïcode"])
def test_hostile_request_ids_are_escaped_in_structured_data(request_id: str) -> None:
    """``"``, ``\\`` and ``]`` are escaped, so a request id cannot end the SD element or forge a param."""
    record = make_records(1, request_id=request_id)[0]
    parsed = parse_message(format_message(record, facility=16, hostname="h", procid="1"))
    assert parsed["params"] == {"index": "0", "request_id": f"{request_id}-0", "hash": record["hash"]}
    assert parsed["record"] == record


@pytest.mark.parametrize(("value", "limit", "expected"), [
    ("gw 1", 255, "gw_1"),
    ("gw\n1\x00", 255, "gw_1_"),
    ("", 48, "-"),
    ("ünï", 48, "_n_"),
    ("x" * 300, 255, "x" * 255),
])
def test_header_fields_are_printable_ascii_without_spaces_and_cut_to_length(value: str, limit: int,
                                                                            expected: str) -> None:
    """A hostile or odd host name cannot add header fields or break the format."""
    assert header_field(value, limit) == expected


def test_a_hostile_hostname_and_a_bad_timestamp_still_make_a_valid_message() -> None:
    """A hostname with spaces and a record with an unusable ts give a well-formed message (NILVALUE ts)."""
    record = {**make_records(1)[0], "ts": float("inf")}
    parsed = parse_message(format_message(record, facility=16, hostname="evil host [x]", procid="1"))
    assert parsed["host"] == "evil_host_[x]" and parsed["ts"] == "-"


def test_sd_escape_escapes_backslash_first() -> None:
    """Backslashes are doubled before quotes and brackets are escaped, so escapes are not double-escaped."""
    assert sd_escape('\\"]') == '\\\\\\"\\]'


# --------------------------------------------------------------------------- UDP


@asynccontextmanager
async def udp_receiver() -> AsyncIterator[Any]:
    async with await anyio.create_udp_socket(local_host="127.0.0.1") as sock:
        yield sock


async def receive_datagrams(sock: Any, n: int) -> list[bytes]:
    out = []
    with anyio.fail_after(5):
        for _ in range(n):
            data, _addr = await sock.receive()
            out.append(data)
    return out


async def test_udp_sends_one_datagram_per_record() -> None:
    """Each record arrives as its own datagram holding one complete RFC 5424 message, in order."""
    async with udp_receiver() as sock:
        port = sock.extra(SocketAttribute.local_port)
        exporter = SyslogExporter("127.0.0.1", port, protocol="udp", hostname="gw")
        records = make_records(3)
        assert await exporter.send(records) == 0
        datagrams = await receive_datagrams(sock, 3)
        await exporter.aclose()
    assert [parse_message(d)["record"] for d in datagrams] == records


async def test_udp_refuses_messages_over_max_datagram_and_the_queue_counts_them() -> None:
    """An oversized message is not sent (nor cut); the others are; the queue counts one dropped."""
    small, big = make_records(1)[0], make_records(1, fields={"decision": {"effect": "allow"}, "pad": "x" * 2000})[0]
    async with udp_receiver() as sock:
        port = sock.extra(SocketAttribute.local_port)
        exporter = SyslogExporter("127.0.0.1", port, protocol="udp", max_datagram=1024)
        async with ExportQueue([exporter]) as queue:
            for record in (small, big, small):
                queue.offer(record)
        datagrams = await receive_datagrams(sock, 2)
    assert [parse_message(d)["record"] for d in datagrams] == [small, small]
    assert queue.stats()["syslog"].sent == 2 and queue.stats()["syslog"].dropped == 1


# --------------------------------------------------------------------------- TCP and TLS


class StreamReceiver:
    """A real syslog receiver: accepts connections, splits octet-counted frames, can hang up on a client."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.connections = 0
        self.hang_up_after: int | None = None  # close each connection after this many frames on it
        self.hung_up = anyio.Event()
        self.arrived = anyio.Event()

    async def handle(self, stream: ByteStream) -> None:
        self.connections += 1
        buffer, seen = b"", 0
        async with stream:
            try:
                async for chunk in stream:
                    frames, buffer = parse_frames(buffer + chunk)
                    self.frames += frames
                    seen += len(frames)
                    if frames:
                        self.arrived.set()
                    if self.hang_up_after is not None and seen >= self.hang_up_after:
                        break
            except (anyio.BrokenResourceError, ssl.SSLError, OSError):
                pass
        self.hung_up.set()

    async def wait_for(self, n: int) -> None:
        with anyio.fail_after(5):
            while len(self.frames) < n:
                self.arrived = anyio.Event()
                await self.arrived.wait()


@asynccontextmanager
async def stream_receiver(server_ctx: ssl.SSLContext | None = None) -> AsyncIterator[tuple[StreamReceiver, int]]:
    receiver = StreamReceiver()
    listener: Any = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)
    if server_ctx is not None:
        listener = TLSListener(listener, server_ctx, standard_compatible=False)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, receiver.handle)
        yield receiver, port
        tg.cancel_scope.cancel()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def server_context(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    assert pki.server.cert_file and pki.server.key_file
    ctx.load_cert_chain(pki.server.cert_file, pki.server.key_file)
    return ctx


async def test_tcp_frames_each_message_with_its_octet_count() -> None:
    """Over TCP every message is ``LEN SP MSG`` with the exact byte length, on one connection."""
    async with stream_receiver() as (receiver, port):
        exporter = SyslogExporter("127.0.0.1", port, protocol="tcp")
        records = make_records(5, request_id='hostile"]\\')
        await exporter.send(records[:2])
        await exporter.send(records[2:])
        await receiver.wait_for(5)
        await exporter.aclose()
    assert [parse_message(f)["record"] for f in receiver.frames] == records
    assert receiver.connections == 1


async def test_tcp_reconnects_after_the_receiver_hangs_up() -> None:
    """A connection the receiver closed is noticed before the next batch, which arrives on a new one."""
    async with stream_receiver() as (receiver, port):
        receiver.hang_up_after = 2
        exporter = SyslogExporter("127.0.0.1", port, protocol="tcp")
        records = make_records(4)
        await exporter.send(records[:2])
        with anyio.fail_after(5):
            await receiver.hung_up.wait()
        receiver.hang_up_after = None
        await exporter.send(records[2:])
        await receiver.wait_for(4)
        await exporter.aclose()
    assert [parse_message(f)["record"] for f in receiver.frames] == records
    assert receiver.connections == 2


async def test_tcp_to_a_closed_port_is_a_retryable_failure() -> None:
    """Connection refused becomes a retryable ExportFailed naming the receiver, not an OSError."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)
    await listener.aclose()
    exporter = SyslogExporter("127.0.0.1", port, protocol="tcp", connect_timeout_s=2)
    with pytest.raises(ExportFailed) as caught:
        await exporter.send(make_records(1))
    assert not caught.value.permanent and f"127.0.0.1:{port}" in caught.value.detail
    await exporter.aclose()


async def test_tls_delivers_framed_messages_to_a_verified_receiver(pki: Pki) -> None:
    """RFC 5425: the receiver's certificate is checked against the configured CA, then frames flow."""
    async with stream_receiver(server_context(pki)) as (receiver, port):
        client_ctx = ssl.create_default_context(cafile=str(pki.ca_file))
        exporter = SyslogExporter("127.0.0.1", port, protocol="tls", ssl_context=client_ctx)
        records = make_records(3)
        await exporter.send(records[:1])
        await exporter.send(records[1:])  # the second batch probes a live TLS connection (session tickets)
        await receiver.wait_for(3)
        await exporter.aclose()
    assert [parse_message(f)["record"] for f in receiver.frames] == records
    assert receiver.connections == 1


async def test_tls_reconnects_after_the_receiver_hangs_up(pki: Pki) -> None:
    """A TLS receiver that closed is noticed before the next batch; nothing is lost."""
    async with stream_receiver(server_context(pki)) as (receiver, port):
        receiver.hang_up_after = 1
        exporter = SyslogExporter("127.0.0.1", port, protocol="tls",
                                  ssl_context=ssl.create_default_context(cafile=str(pki.ca_file)))
        records = make_records(3)
        await exporter.send(records[:1])
        with anyio.fail_after(5):
            await receiver.hung_up.wait()
        receiver.hang_up_after = None
        await exporter.send(records[1:])
        await receiver.wait_for(3)
        await exporter.aclose()
    assert [parse_message(f)["record"] for f in receiver.frames] == records
    assert receiver.connections == 2


async def test_tls_refuses_a_receiver_the_ca_did_not_sign(pki: Pki, tmp_path: Path) -> None:
    """With the system trust store (or another CA) the test receiver is not trusted: nothing is sent."""
    other = make_pki(tmp_path / "other")
    async with stream_receiver(server_context(pki)) as (receiver, port):
        exporter = SyslogExporter("127.0.0.1", port, protocol="tls",
                                  ssl_context=ssl.create_default_context(cafile=str(other.ca_file)))
        with pytest.raises(ExportFailed) as caught:
            await exporter.send(make_records(1))
        await exporter.aclose()
    assert not caught.value.permanent and "SSL" in caught.value.detail
    assert receiver.frames == []


# --------------------------------------------------------------------------- construction


def test_cleartext_to_a_remote_host_warns_and_loopback_does_not(caplog: pytest.LogCaptureFixture) -> None:
    """udp or tcp to a non-loopback host logs that audit records leave in cleartext."""
    with caplog.at_level(logging.WARNING, logger="portcullis.audit.siem"):
        SyslogExporter("127.0.0.1", protocol="udp")
        SyslogExporter("localhost", protocol="tcp")
        assert caplog.records == []
        SyslogExporter("siem.example.com", protocol="tcp")
        SyslogExporter("siem.example.com")  # tls: no warning
    assert [r.getMessage() for r in caplog.records] == [
        "syslog audit export in cleartext to a non-loopback host; use protocol tls"]


@pytest.mark.parametrize("kwargs", [
    {"protocol": "smtp"}, {"facility": "local9"}, {"protocol": "udp", "ssl_context": ssl.create_default_context()},
    {"max_datagram": 0}, {"connect_timeout_s": 0},
])
def test_bad_syslog_settings_are_refused(kwargs: dict[str, Any]) -> None:
    """Unknown protocols or facilities, TLS settings without TLS and nonsense limits are errors."""
    with pytest.raises(ValueError):
        SyslogExporter("127.0.0.1", **kwargs)


def test_default_ports_follow_the_protocol() -> None:
    """514 for udp and tcp, 6514 for tls (RFC 5425)."""
    assert [SyslogExporter("127.0.0.1", protocol=p).port for p in ("udp", "tcp", "tls")] == [514, 514, 6514]


async def test_a_record_that_is_not_json_is_refused_and_the_rest_sent() -> None:
    """An unserialisable record makes no message and is reported as refused; the others are framed and sent."""
    async with stream_receiver() as (receiver, port):
        exporter = SyslogExporter("127.0.0.1", port, protocol="tcp")
        good = make_records(2)
        assert await exporter.send([good[0], {"kind": "decision", "bad": {1, 2}}, good[1]]) == 1
        assert await exporter.send([{"bad": {1}}]) == 1
        await receiver.wait_for(2)
        await exporter.aclose()
    assert [parse_message(f)["record"] for f in receiver.frames] == good
    assert receiver.connections == 1


def test_a_checkpoint_export_is_an_info_message_carrying_its_signed_note() -> None:
    """A checkpoint handed to the exporters is routine (info) and keeps its C2SP note intact in the JSON body."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from portcullis.audit import sign_checkpoint
    from portcullis.audit.note import checkpoint_export

    key = Ed25519PrivateKey.generate()
    exported = checkpoint_export(key, sign_checkpoint(key, 3, "ab" * 32, 1_800_000_000.0))
    assert severity_for(exported) == 6
    message = format_message(exported, facility=FACILITIES["auth"], hostname="h", procid="1")
    assert message.startswith(b"<38>1 ") and b" checkpoint [portcullis@32473 " in message
    assert orjson.loads(message.split(b"\xef\xbb\xbf", 1)[1])["note"] == exported["note"]
