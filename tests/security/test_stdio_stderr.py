"""A stdio child's stderr reaches the gateway's log only as an escaped, redacted, bounded field.

Hostile rows: lines forged to look like the gateway's own JSON records, terminal escapes (ANSI,
OSC, OSC 8, C1), bidi and zero-width characters, well-known secrets and the child's own secret
environment values, over-long lines, invalid UTF-8, and a flood past the rate bound. Each is
written by a real child process through the bounded stdio transport, or fed to the relay.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from mcp.client.stdio import StdioServerParameters

from portcullis.logs import JsonFormatter
from portcullis.upstream.stderr_relay import StderrRelay
from portcullis.upstream.stdio_bounded import bounded_stdio_client

ENV_SECRET = "s3cr3t-env-value-0123456789"
FORGED = ('{"time":"2026-01-01T00:00:00Z","level":"INFO","logger":"portcullis.access","event":"tools/call",'
          '"decision":"allow","outcome":"ok"}')


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _relay(**kwargs: Any) -> tuple[StderrRelay, _Records]:
    logger = logging.getLogger(f"test.stderr.{id(kwargs)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = _Records()
    logger.addHandler(handler)
    return StderrRelay("svc", logger=logger, env={"API_TOKEN": ENV_SECRET, "HOME": "/home/x"}, **kwargs), handler


async def _chunks(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


HOSTILE = [  # (name, bytes written, text that must not survive, text that must be in the relayed line)
    ("forged-gateway-record", FORGED.encode(), None, '"logger":"portcullis.access"'),
    ("ansi-colour", b"\x1b[31mERROR\x1b[0m", "\x1b", "\\u{001B}[31mERROR"),
    ("ansi-clear-screen", b"\x1b[2J\x1b[H", "\x1b", "\\u{001B}[2J"),
    ("osc-title", b"\x1b]0;pwned\x07", "\x07", "\\u{0007}"),
    ("osc8-link", b"\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\", "\x1b", "click"),
    ("c1-csi", "\u009b31m".encode(), "\u009b", "\\u{009B}31m"),
    ("carriage-return", b"ok\rFAKE", "\r", "ok\\u{000D}FAKE"),
    ("bidi-override", "a\u202eb".encode(), "\u202e", "a\\u{202E}b"),
    ("zero-width", "a\u200bb\u2060c".encode(), "\u200b", "a\\u{200B}b"),
    ("line-separator", "a\u2028b".encode(), "\u2028", "a\\u{2028}b"),
    ("invalid-utf8", b"bad \xff\xfe bytes", None, "bad \ufffd\ufffd bytes"),
    ("aws-key", b"key AKIAABCDEFGHIJKLMNOP here", "AKIAABCDEFGHIJKLMNOP", "[redacted]"),
    ("github-token", b"ghp_" + b"a" * 36, "ghp_" + "a" * 36, "[redacted]"),
    ("stripe-key", b"sk_live_" + b"Z" * 24, "sk_live_", "[redacted]"),
    ("slack-token", b"xoxb-123-456-abcdef", "xoxb-123", "[redacted]"),
    ("private-key", b"-----BEGIN RSA PRIVATE KEY-----", "BEGIN RSA PRIVATE KEY", "[redacted]"),
    ("bearer", b"Authorization: Bearer abc.def.ghi", "abc.def.ghi", "[redacted]"),
    ("jwt", b"token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln", "eyJhbGciOiJSUzI1NiJ9", "[redacted]"),
    ("password-pair", b"db password=hunter2hunter2 ok", "hunter2hunter2", "password=[redacted]"),
    ("quoted-secret-pair", b'client_secret: "a b c d e"', "a b c d e", "client_secret: [redacted]"),
    ("env-secret-value", f"using {ENV_SECRET} now".encode(), ENV_SECRET, "using [redacted] now"),
]


@pytest.mark.parametrize(("name", "written", "gone", "shown"), HOSTILE, ids=[row[0] for row in HOSTILE])
async def test_a_hostile_stderr_line_is_relayed_as_an_escaped_redacted_field(
        name: str, written: bytes, gone: str | None, shown: str) -> None:
    """One line in, one gateway record out naming the service, with the line escaped and redacted."""
    relay, handler = _relay()
    await relay.pump(_chunks(written + b"\n"))
    [record] = handler.records
    fields = record.fields  # type: ignore[attr-defined]
    assert record.getMessage() == "stdio service stderr" and fields["service"] == "svc"
    assert shown in fields["line"], fields["line"]
    if gone is not None:
        assert gone not in fields["line"]
    formatted = JsonFormatter().format(record)  # the gateway's own log line: one JSON object
    assert "\n" not in formatted and json.loads(formatted)["line"] == fields["line"]
    assert json.loads(formatted)["logger"] == "portcullis.upstream.stderr" or record.name.startswith("test.")


CANARY = "canary-7f3a91-value"
WITHHELD = [*HOSTILE, ("canary-argument", f"got arguments {{'note': '{CANARY}'}}".encode(), CANARY, None),
            ("canary-split-by-escape", f"{CANARY[:6]}\x1b[0m{CANARY[6:]}".encode(), CANARY[6:], None)]


@pytest.mark.parametrize(("name", "written", "gone", "shown"), WITHHELD, ids=[row[0] for row in WITHHELD])
async def test_a_service_whose_data_may_not_reach_logs_has_its_stderr_logged_value_free(
        name: str, written: bytes, gone: str | None, shown: str | None) -> None:
    """With ``withhold_key`` (the service serves a class without the ``logs`` sink) a record carries
    the length and a keyed hash of the line, never its text: nothing of it in the formatted line."""
    relay, handler = _relay(withhold_key=b"k" * 32)
    await relay.pump(_chunks(written + b"\n" + written + b"\n"))
    first, second = (r.fields for r in handler.records)  # type: ignore[attr-defined]
    other, other_handler = _relay(withhold_key=b"j" * 32)
    await other.pump(_chunks(written + b"\n"))
    assert set(first) == {"service", "chars", "line_hmac", "truncated", "values"} and first["values"] == "withheld"
    assert first["line_hmac"] == second["line_hmac"] and len(first["line_hmac"]) == 16  # correlatable
    assert other_handler.records[-1].fields["line_hmac"] != first["line_hmac"]  # type: ignore[attr-defined]
    formatted = "".join(JsonFormatter().format(r) for r in handler.records)
    for piece in {gone, shown} - {None, "[redacted]"}:
        assert piece not in formatted, piece
    if gone is not None:
        assert gone not in formatted


async def test_an_over_long_line_is_cut_and_its_rest_skipped() -> None:
    """A line past max_line_bytes is relayed cut (truncated: true); its rest is not a line of its own."""
    relay, handler = _relay(max_line_bytes=64)
    await relay.pump(_chunks(b"A" * 50, b"B" * 50, b"C" * 500, b"\nnext\n"))
    lines = [(r.fields["line"], r.fields["truncated"]) for r in handler.records]  # type: ignore[attr-defined]
    assert lines == [("A" * 50 + "B" * 14, True), ("next", False)]


async def test_a_flood_is_rate_bounded_dropped_and_counted() -> None:
    """Past the burst, lines are dropped and counted; once the bucket refills, one record says how many."""
    now = [0.0]
    relay, handler = _relay(lines_per_s=10, burst=5, clock=lambda: now[0])
    await relay.pump(_chunks(b"".join(b"line %d\n" % i for i in range(1000))))
    assert relay.relayed == 5 and relay.dropped == 995 and len(handler.records) == 5
    now[0] = 1.0
    await relay.pump(_chunks(b"after\n"))
    messages = [r.getMessage() for r in handler.records]
    assert messages[-2] == "stdio service stderr lines dropped"
    assert handler.records[-2].fields["dropped"] == 995  # type: ignore[attr-defined]


async def test_a_real_child_stderr_goes_through_the_relay_not_the_gateways_stderr(
        capfd: pytest.CaptureFixture[str]) -> None:
    """A child spawned by the bounded stdio transport writes hostile stderr; the gateway's stderr stays clean."""
    script = ("import sys; sys.stderr.write(" + repr(FORGED + "\n\x1b[31mred\nkey AKIAABCDEFGHIJKLMNOP\n") +
              "); sys.stderr.flush(); sys.stdin.read()")
    relay, handler = _relay()
    server = StdioServerParameters(command=sys.executable, args=["-c", script], env={"API_TOKEN": ENV_SECRET})
    async with bounded_stdio_client(server, max_line_bytes=65536, max_depth=64, closed=anyio.Event(),
                                    stderr=relay):
        with anyio.fail_after(30):
            while relay.relayed < 3:
                await anyio.sleep(0.01)
    lines = [r.fields["line"] for r in handler.records]  # type: ignore[attr-defined]
    assert lines[0] == FORGED.replace("\\", "\\\\") and lines[1] == "\\u{001B}[31mred"
    assert "AKIA" not in lines[2]
    captured = capfd.readouterr()
    assert "AKIA" not in captured.err and "\x1b[31m" not in captured.err and "portcullis.access" not in captured.err


# (id, the service's stderr settings, lines written, line size, lines relayed, relayed length, truncated)
CONFIGURED: list[tuple[str, dict[str, Any], int, int, int, int, bool]] = [
    ("defaults", {}, 30, 300, 30, 300, False),
    ("short-lines", {"max_line_bytes": 64}, 5, 300, 5, 64, True),
    ("small-burst", {"burst": 3, "lines_per_s": 0.001}, 30, 10, 3, 10, False),
]


@pytest.mark.parametrize(("settings", "written", "size", "relayed", "length", "truncated"),
                         [r[1:] for r in CONFIGURED], ids=[r[0] for r in CONFIGURED])
async def test_a_services_configured_stderr_bounds_apply(settings: dict[str, Any], written: int, size: int,
                                                        relayed: int, length: int, truncated: bool) -> None:
    """``services.<name>.stderr`` sets the relay's line length and rate for that service's real child."""
    import os

    from portcullis.upstream.sdk_client import SdkConnector
    from tests.security.test_result_bounds import stdio_call, stdio_service

    handler = _Records()
    logger = logging.getLogger("portcullis.upstream.stderr")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        connector = SdkConnector("bounded", stdio_service(stderr=settings), os.environ)
        async with connector.open() as connection:
            assert await stdio_call(connection, "stderr", count=written, size=size) == "alice"
            with anyio.fail_after(30):  # the relay reads the pipe concurrently with the answer
                while sum(r.getMessage() == "stdio service stderr" for r in handler.records) < relayed:
                    await anyio.sleep(0.02)
            await anyio.sleep(0.3)  # any line past the bound would have arrived by now
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    lines = [r for r in handler.records if r.getMessage() == "stdio service stderr"
             and r.fields["service"] == "bounded"]  # type: ignore[attr-defined]
    assert len(lines) == relayed
    assert {(len(r.fields["line"]), r.fields["truncated"]) for r in lines} == {(length, truncated)}  # type: ignore[attr-defined]


@pytest.mark.parametrize("bad", [{"max_line_bytes": 0}, {"max_line_bytes": 10}, {"max_line_bytes": 1 << 20},
                                 {"lines_per_s": 0}, {"lines_per_s": -1}, {"lines_per_s": 1e9}, {"burst": 0},
                                 {"burst": 10**9}, {"unknown": 1}])
def test_stderr_bounds_are_validated(bad: dict[str, Any]) -> None:
    """Zero, negative, absurd or unknown stderr settings are a configuration error."""
    from pydantic import ValidationError

    from tests.security.test_result_bounds import stdio_service

    with pytest.raises(ValidationError):
        stdio_service(stderr=bad)


def test_the_configured_defaults_are_the_relays_defaults() -> None:
    """Leaving ``stderr`` out keeps the bounds the relay has always had (2 KiB, 20 lines/s, burst 200)."""
    from portcullis.config.model import StderrBounds
    from portcullis.upstream import stderr_relay

    assert (StderrBounds().max_line_bytes, StderrBounds().lines_per_s, StderrBounds().burst) == (
        stderr_relay.DEFAULT_MAX_LINE_BYTES, stderr_relay.DEFAULT_LINES_PER_S, stderr_relay.DEFAULT_BURST)
