"""The service_identity record: hostile serverInfo shaped safely, what ran hashed, the rate bounded."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from portcullis.audit.record import canonical_bytes
from portcullis.upstream.build_identity import (
    MAX_TEXT_CHARS,
    BuildIdentity,
    IdentityLog,
    build_identity,
    digest_launch,
    file_digest,
    script_argument,
    shaped,
    url_origin,
)
from portcullis.upstream.registry import ServiceHandle
from portcullis.upstream.testing import FakeConnector

HOSTILE = [
    ("<img src=x onerror=alert(1)>**bold**[link](http://evil)", "<img src=x onerror=alert(1)>**bold**[link](http://evil)"),
    ("1.0\u202egnp.exe", "1.0\\u{202E}gnp.exe"),  # a bidi override shown, not obeyed
    ("a\x00b", "a\\u{0000}b"),  # NUL
    ("line\nnext\r", "line\\u{000A}next\\u{000D}"),
    ("zero\u200bwidth", "zero\\u{200B}width"),
    ("lone \ud800 surrogate", "lone \\u{D800} surrogate"),  # would break the record's JSON unescaped
    ("back\\slash", "back\\\\slash"),
]


@pytest.mark.parametrize(("raw", "recorded"), HOSTILE)
def test_hostile_server_info_is_recorded_visible_and_canonical(raw: str, recorded: str) -> None:
    """Invisible and control characters become \\u{XXXX}; the record still serialises canonically."""
    identity = build_identity("stdio", {"name": raw, "version": raw}, raw)
    assert (identity.server_name, identity.server_version, identity.protocol_version) == (recorded,) * 3
    assert identity.cut == ()
    canonical_bytes(identity.fields("svc"))  # raises on a lone surrogate or anything non-JSON


@pytest.mark.parametrize("size", [MAX_TEXT_CHARS + 1, 1_000_000])
def test_huge_server_info_is_cut_and_said_to_be(size: int) -> None:
    """A version past the bound is cut to MAX_TEXT_CHARS and named in ``cut``; short values are not."""
    identity = build_identity("http", {"name": "ok", "version": "v" * size}, "2026-07-28")
    assert identity.server_version == "v" * MAX_TEXT_CHARS and identity.server_name == "ok"
    assert identity.cut == ("server_info.version",)
    assert identity.fields("svc")["cut"] == ["server_info.version"]


def test_a_cut_never_splits_an_escape() -> None:
    """Escaped characters count at their escaped length and are kept whole or not at all."""
    text, cut = shaped("\u202e" * 100)
    assert cut and text is not None and len(text) <= MAX_TEXT_CHARS
    assert text == "\\u{202E}" * (MAX_TEXT_CHARS // len("\\u{202E}"))


@pytest.mark.parametrize("info", [None, {}, {"name": 7, "version": ["1"]}, {"name": {"$ne": 1}}, "a string"])
def test_server_info_that_is_not_text_is_recorded_as_null(info: Any) -> None:
    """Missing or non-string serverInfo fields (a tampering or broken service) are null, never coerced."""
    identity = build_identity("http", info, None)
    assert identity.fields("svc")["server_info"] == {"name": None, "version": None}
    assert identity.fields("svc")["protocol_version"] is None


def test_an_sdk_implementation_object_is_read_by_attribute() -> None:
    """The SDK client's serverInfo (an Implementation) gives its name and version."""
    from mcp.types import Implementation

    identity = build_identity("stdio", Implementation(name="files", version="2.1.0"), "2025-11-25")
    assert (identity.server_name, identity.server_version, identity.protocol_version) == (
        "files", "2.1.0", "2025-11-25")


@pytest.mark.parametrize(("url", "origin"), [
    ("https://user:secret@billing.internal:8443/mcp?token=abc#frag", "https://billing.internal:8443"),
    ("HTTP://Example.COM/mcp", "http://example.com"),
    ("http://[::1]:9000/mcp", "http://[::1]:9000"),
])
def test_the_http_origin_drops_credentials_path_and_query(url: str, origin: str) -> None:
    """Only scheme://host[:port] of the configured URL is recorded."""
    assert url_origin(url) == origin
    assert "secret" not in url_origin(url) and "token" not in url_origin(url)


@pytest.mark.parametrize(("argv", "script"), [
    (["/usr/bin/python3", "-u", "server.py", "--port", "1"], "server.py"),
    (["/usr/bin/python3.12", "/srv/app/main.py"], "/srv/app/main.py"),
    (["/usr/bin/node", "dist/index.js"], "dist/index.js"),
    (["/usr/bin/python3", "-m", "pkg.server"], None),  # a module: no file named
    (["/usr/bin/bash", "-c", "run.sh"], None),
    (["/usr/local/bin/mcp-server", "data.db"], None),  # not an interpreter: its arguments are not programs
    (["/usr/bin/python3"], None),
])
def test_the_script_of_an_interpreter_is_the_first_argument_not_an_option(argv: list[str], script: str | None) -> None:
    assert script_argument(argv) == script


def test_a_spawn_records_the_executable_and_script_digests(tmp_path: Path) -> None:
    """The resolved executable and the interpreter's script, each with its SHA-256."""
    script = tmp_path / "server.py"
    script.write_text("print('hi')\n")
    launch = digest_launch([sys.executable, "server.py"], str(tmp_path), None)
    real = os.path.realpath(sys.executable)
    assert launch.executable.path == real
    assert launch.executable.sha256 == hashlib.sha256(Path(real).read_bytes()).hexdigest()
    assert launch.script is not None and launch.script.path == str(script)
    assert launch.script.sha256 == hashlib.sha256(b"print('hi')\n").hexdigest()
    # a relative script with no cwd is not guessed (a confined child starts in its own /tmp)
    assert digest_launch([sys.executable, "server.py"], None, None).script is None
    module = digest_launch([sys.executable, "-m", "pkg"], None, "pkg")
    assert module.module == "pkg" and module.script is None


def test_an_unreadable_executable_is_named_without_a_digest(tmp_path: Path) -> None:
    """A missing file or a directory gives no digest and says why (the record is still written)."""
    assert file_digest(str(tmp_path / "gone")).error == "unreadable"
    assert file_digest(str(tmp_path)).sha256 is None


def test_an_unchanged_identity_is_recorded_again_only_after_the_repeat_interval() -> None:
    """Changed: recorded at once; unchanged: at most once per min_repeat_s, whatever the reconnect rate."""
    log = IdentityLog(min_repeat_s=60)
    one, two = BuildIdentity("stdio", "svc", "1", "p"), BuildIdentity("stdio", "svc", "2", "p")
    assert log.due(one, 0)
    log.recorded(one, 0)
    assert not log.due(one, 5) and not log.due(one, 59.9)
    assert log.due(two, 5)
    log.recorded(two, 5)
    assert log.due(one, 6) and log.due(two, 65)


async def _ok(arguments: Any) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": "ok"}], "isError": False}


async def test_the_supervisor_records_the_identity_before_the_connection_serves() -> None:
    """The record is written per connection, before calls are served; a reconnect with a new identity too."""
    recorded: list[dict[str, Any]] = []
    served_before_record: list[bool] = []
    handle: ServiceHandle

    async def record(fields: Any) -> None:
        served_before_record.append(handle.connected)
        recorded.append(dict(fields))

    connector = FakeConnector("svc", [], {"echo": _ok})
    connector.identity = BuildIdentity("stdio", "svc", "1.0", "2025-11-25")
    handle = ServiceHandle("svc", [connector], lambda *_: None, on_identity=record, health_interval_s=0.05,
                           max_backoff_s=0.05)
    async with anyio.create_task_group() as tg:
        tg.start_soon(handle.run)
        with anyio.fail_after(10):
            await handle.ready.wait()
        first = connector.current
        assert first is not None
        connector.identity = BuildIdentity("stdio", "svc", "2.0", "2025-11-25")
        first.drop()
        with anyio.fail_after(10):
            while len(recorded) < 2 or not handle.connected:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert [r["server_info"]["version"] for r in recorded] == ["1.0", "2.0"]
    assert served_before_record == [False, False]


async def test_a_failed_identity_record_keeps_the_connection_from_serving() -> None:
    """Fail closed: no durable identity record, no calls on that connection (it is retried)."""
    attempts: list[int] = []

    async def failing(fields: Any) -> None:
        attempts.append(1)
        raise OSError("audit store unavailable")

    connector = FakeConnector("svc", [], {"echo": _ok})
    connector.identity = BuildIdentity("stdio", "svc", "1.0", "2025-11-25")
    handle = ServiceHandle("svc", [connector], lambda *_: None, on_identity=failing, max_backoff_s=0.05)
    async with anyio.create_task_group() as tg:
        tg.start_soon(handle.run)
        with anyio.fail_after(10):
            while len(attempts) < 3:
                await anyio.sleep(0.01)
        assert not handle.connected and not handle.ready.is_set()
        tg.cancel_scope.cancel()
