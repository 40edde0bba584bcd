"""The stdio transport for child services, bounded: what a child writes cannot grow without limit.

The SDK's own stdio transport joins stdout chunks until a newline arrives, with no limit, so a
child writing one endless line grows the gateway's memory until it dies. This transport is the
same protocol (spawn, newline-delimited JSON-RPC both ways, the SDK's own shutdown sequence) with
rules on what comes back, applied to every line before the SDK's session sees it:

1. A line is at most ``max_line_bytes``. Reading stops the moment a line passes it. The gateway
   cannot tell which call an unread line answered, so the stream can no longer be matched to its
   calls: every call in flight on it fails with :class:`~portcullis.errors.ResultTooLarge`, the
   connection ends (``closed`` is set) and the supervisor starts the child again. A line too
   deeply nested to parse at all is treated the same way.
2. A response must carry the id of a request the gateway sent on this connection, in the same
   JSON type (``"7"``, ``7.0`` and ``true`` are not ``7``). A response whose id names an
   outstanding request in another type, or that is not a well-formed response, fails that call
   with -31004; one whose id names no request at all (``null``, unknown, a second answer) is
   dropped and logged, since there is no call it could be given to.
3. A result nested deeper than ``max_depth`` fails its call with -31005.

The child's stderr is never the gateway's: it is a pipe relayed line by line into the gateway's
log as an escaped, redacted, rate-bounded field naming the service (:mod:`.stderr_relay`).

Lines that are not JSON at all are handed to the session as the SDK hands them (logged, ignored).
The failures above reach the session as JSON-RPC errors with the gateway's own codes, which
:mod:`.sdk_client` turns back into the gateway's errors.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, TextIO

import anyio
import anyio.lowlevel
import mcp_types as types
import pydantic_core
from mcp.client._transport import TransportStreams

# The SDK's process helpers: spawn in a new session, and the spec's shutdown sequence (close
# stdin, wait, SIGTERM / SIGKILL the process group), pinned with mcp==2.3.0.
from mcp.client.stdio import (
    StdioServerParameters,
    _create_platform_compatible_process,
    _drain_stdout,
    _stop_server_process,
)
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from portcullis.errors import RESULT_TOO_DEEP, ResultTooLarge, UpstreamFailed
from portcullis.transport.jsonrpc import depth_exceeds
from portcullis.upstream.stderr_relay import StderrRelay

log = logging.getLogger("portcullis.upstream")

_MAX_OUTSTANDING = 4096  # ids remembered per connection (oldest forgotten first)
_WRITER_FLUSH_S = 0.5
Item = SessionMessage | Exception


def error_item(request_id: int | str, code: int, message: str) -> SessionMessage:
    """A JSON-RPC error the gateway itself gives call ``request_id``."""
    error = types.ErrorData(code=code, message=message)
    return SessionMessage(types.JSONRPCError(jsonrpc="2.0", id=request_id, error=error))


class InboundGuard:
    """Matches a child's lines to the requests sent to it (rules 2 and 3). Pure; no I/O."""

    def __init__(self, *, max_depth: int) -> None:
        self._max_depth = max_depth
        self._outstanding: dict[tuple[type, int | str], int | str] = {}

    def sent(self, message: Any) -> None:
        """Note a request the gateway wrote (called for every outgoing message)."""
        if isinstance(message, types.JSONRPCRequest):
            self._outstanding[(type(message.id), message.id)] = message.id
            if len(self._outstanding) > _MAX_OUTSTANDING:
                del self._outstanding[next(iter(self._outstanding))]

    def abandon_all(self, error: ResultTooLarge) -> list[Item]:
        """Errors for every request still waiting (the stream is being given up)."""
        items: list[Item] = [error_item(rid, error.code, error.message) for rid in self._outstanding.values()]
        self._outstanding.clear()
        return items

    def inbound(self, line: bytes) -> list[Item]:
        """What the session should see for one line (possibly nothing). Raises :class:`TooDeep`."""
        if not line.strip():
            return []
        try:
            value = pydantic_core.from_json(line, allow_inf_nan=False)
        except ValueError as exc:
            if "recursion limit" in str(exc):
                raise TooDeep from None
            log.warning("stdio service wrote a line that is not JSON")
            return [exc]
        if isinstance(value, dict) and "method" not in value:
            return self._response(value, line)
        return [_session_message(value)]

    def _response(self, value: dict[str, Any], line: bytes) -> list[Item]:
        rid = value.get("id")
        if isinstance(rid, int | str) and (type(rid), rid) in self._outstanding:
            del self._outstanding[(type(rid), rid)]
            if ("result" in value) == ("error" in value):
                return [error_item(rid, UpstreamFailed.code, UpstreamFailed.message)]
            if "result" in value and depth_exceeds(value["result"], self._max_depth, raw=line):
                return [error_item(rid, ResultTooLarge.code, RESULT_TOO_DEEP)]
            return [_session_message(value)]
        meant = _int_like(rid)
        if meant is not None and (int, meant) in self._outstanding:
            del self._outstanding[(int, meant)]
            log.warning("stdio service answered with an id of the wrong type")
            return [error_item(meant, UpstreamFailed.code, UpstreamFailed.message)]
        log.warning("stdio service answered a request it was not sent", extra={"fields": {
            "id_type": type(rid).__name__}})
        return []


class TooDeep(Exception):
    """A line nested too deeply to parse: it cannot be matched to its call."""


def _int_like(value: Any) -> int | None:
    """The integer an id of the wrong type seems to mean (``"7"``, ``7.0``, ``true``), if any."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 20:
        return int(value)
    return None


def _session_message(value: Any) -> Item:
    try:
        return SessionMessage(types.jsonrpc_message_adapter.validate_python(value, by_name=False))
    except ValidationError as exc:
        log.warning("stdio service wrote a line that is not a JSON-RPC message")
        return exc


@asynccontextmanager
async def bounded_stdio_client(server: StdioServerParameters, *, max_line_bytes: int, max_depth: int,
                               closed: anyio.Event, errlog: TextIO = sys.stderr,
                               stderr: StderrRelay | None = None,
                               pass_fds: Sequence[int] = ()) -> AsyncIterator[TransportStreams]:
    """Spawn ``server`` and yield the session's streams; ``closed`` is set when the child's stream ends.

    With ``stderr`` the child's stderr is a pipe relayed into the log as escaped, redacted,
    rate-bounded fields (:mod:`.stderr_relay`); without it the child writes to ``errlog``.
    ``pass_fds`` stay open in the child (a sandbox's seccomp filter and options). The process's
    environment is exactly ``server.env`` (none when None), never merged with the SDK's defaults."""
    if pass_fds:  # the SDK's helper passes none; the same spawn otherwise (own session, same pipes)
        process: Any = await anyio.open_process(
            [server.command, *server.args], env=dict(server.env or {}), cwd=server.cwd, start_new_session=True,
            stderr=subprocess.PIPE if stderr is not None else errlog, pass_fds=pass_fds)
    else:
        process = await _create_platform_compatible_process(
            command=server.command, args=server.args, env=dict(server.env or {}),
            errlog=subprocess.PIPE if stderr is not None else errlog, cwd=server.cwd)  # type: ignore[arg-type]
    # no awaits until the task group is entered, or a cancellation here would leak the process
    read_stream_writer, read_stream = anyio.create_memory_object_stream[Item](0)
    write_stream, write_stream_reader = anyio.create_memory_object_stream[SessionMessage](0)
    guard = InboundGuard(max_depth=max_depth)
    writer_done = anyio.Event()
    shutting_down = False

    async def stdout_reader() -> None:
        stdout = process.stdout
        if stdout is None:  # spawned with pipes: cannot happen
            return
        try:
            async with read_stream_writer:  # closing it fails whatever the session still awaits
                try:
                    await _read_lines(stdout, guard, read_stream_writer, max_line_bytes)
                except (_LineTooLong, TooDeep) as exc:
                    error = ResultTooLarge() if isinstance(exc, _LineTooLong) else ResultTooLarge(RESULT_TOO_DEEP)
                    log.warning("stdio service answer over the limit; restarting it", extra={"fields": {
                        "limit": max_line_bytes if isinstance(exc, _LineTooLong) else "depth"}})
                    for item in guard.abandon_all(error):
                        await read_stream_writer.send(item)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, ConnectionError):
            if not shutting_down:
                log.warning("reading a stdio service's output failed")
        finally:
            closed.set()  # the supervisor restarts the child; new calls fail at once meanwhile
            await _drain_stdout(process)  # shielded; a child blocked on a full pipe could not exit

    async def stdin_writer() -> None:
        stdin = process.stdin
        if stdin is None:
            return
        try:
            async with write_stream_reader:
                async for session_message in write_stream_reader:
                    guard.sent(session_message.message)
                    data = session_message.message.model_dump_json(by_alias=True, exclude_unset=True)
                    await stdin.send(data.encode() + b"\n")
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            await read_stream_writer.aclose()  # the session sees the end instead of a hung request
        finally:
            writer_done.set()

    async def stderr_reader() -> None:
        pipe = getattr(process, "stderr", None)  # anyio's Process (POSIX); the Windows fallback has none here
        if stderr is None or pipe is None:
            return
        try:
            await stderr.pump(pipe)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            pass  # the child is gone; what it wrote so far was relayed

    async with anyio.create_task_group() as tg:
        tg.start_soon(stdout_reader)
        tg.start_soon(stdin_writer)
        tg.start_soon(stderr_reader)
        try:
            yield read_stream, write_stream
        finally:
            shutting_down = True
            with anyio.CancelScope(shield=True):  # every wait below is bounded
                read_stream.close()
                write_stream.close()
                with anyio.move_on_after(_WRITER_FLUSH_S):
                    await writer_done.wait()
                await _stop_server_process(process)
                for stream in (read_stream, write_stream, read_stream_writer, write_stream_reader):
                    await stream.aclose()
                await anyio.lowlevel.checkpoint()
            tg.cancel_scope.cancel()


class _LineTooLong(Exception):
    pass


async def _read_lines(stdout: Any, guard: InboundGuard, sink: Any, limit: int) -> None:
    """Split the child's output into lines of at most ``limit`` bytes and pass each through ``guard``."""
    pending = bytearray()
    async for chunk in stdout:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            if len(pending) + end - start > limit:
                raise _LineTooLong
            if pending:
                pending += chunk[start:end]
                line = bytes(pending)
                pending.clear()
            else:
                line = chunk[start:end]
            start = end + 1
            for item in guard.inbound(line):
                await sink.send(item)
        if len(pending) + len(chunk) - start > limit:
            raise _LineTooLong
        pending += chunk[start:]
