"""A strict, incremental reader of one HTTP/1.1 response, for the relay's keep-alive pool.

A keep-alive pool is only as safe as its framing: if the gateway mistakes where one response
ends, the rest of the bytes answer the *next* caller's request. So this reader accepts what a
correct server sends, refuses everything else (the pool then closes the connection), and knows
the exact byte where the final response ends. It is pure: bytes in, a :class:`ResponseHead` and
body out, no I/O, so every rule below is tested without sockets.

Rules (RFC 9112), in the order the reader applies them:

1. The status line is ``HTTP/1.1`` or ``HTTP/1.0``, a three-digit code and an optional reason.
2. A header section is at most ``max_head_bytes``, lines end in CRLF (a bare CR or LF, a NUL,
   a control character or obs-fold is refused), field names are tokens.
3. ``1xx`` responses are interim: skipped (at most ``MAX_INTERIM``); ``101 Switching Protocols``
   is refused (the gateway never asks to upgrade). A 1xx has no body, whatever it declares.
4. Framing of the final response: ``Transfer-Encoding`` must be exactly ``chunked`` and must not
   come with ``Content-Length``; ``Content-Length`` is one run of digits, never repeated or a
   list; ``204`` and ``304`` have no body; anything else is delimited by the connection closing
   (never reusable).
5. A chunk-size line is hexadecimal (at most 16 digits) with optional extensions; chunk data is
   followed by CRLF; trailer fields are syntax-checked and dropped (they never become headers).
6. The body is at most ``max_body_bytes``: a declared length over it is refused before any body
   byte is read, and a chunked or close-delimited body is refused the moment it passes it.
7. The response is *reusable* only when it is HTTP/1.1, not ``Connection: close``, framed by a
   length or chunked, and no byte follows it (``trailing`` stays False).
"""

from __future__ import annotations

import re
from typing import NamedTuple

MAX_INTERIM = 16
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_VALUE = r"[\t\x20-\x7e\x80-\xff]*"  # visible ASCII, obs-text, SP and HTAB: no CR, LF, NUL or controls
_SECTION = re.compile(r"HTTP/1\.([01]) ([1-9][0-9]{2})(?: " + _VALUE + r")?((?:\r\n" + _TOKEN.decode() + ":" + _VALUE
                   + r")*)")  # over the latin-1 text of the section
_PAIRS = re.compile(r"\r\n([^:]+):([^\r]*)")
_FIELD = re.compile(_TOKEN + rb":[\t\x20-\x7e\x80-\xff]*")
_CHUNK = re.compile(rb"([0-9A-Fa-f]{1,16})((?:;[ \t]*" + _TOKEN + rb"(?:=(?:" + _TOKEN +
                    rb"|\"[\t\x20\x21\x23-\x5b\x5d-\x7e\x80-\xff]*\"))?)*)")
_MAX_CHUNK_LINE = 4096
_BARE_LINE_END = re.compile(rb"\r(?!\n)|(?<!\r)\n")  # a CR or LF that is not part of a CRLF
_SINGLETONS = frozenset({"content-length", "transfer-encoding", "content-type"})

# states
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _DONE = range(8)


class ResponseError(Exception):
    """The bytes are not one well-formed response within the limits; the connection is unusable."""


class BodyTooLarge(ResponseError):
    """The body passed ``max_body_bytes`` (declared or as read); reading stopped there."""


class ResponseHead(NamedTuple):
    status: int
    headers: dict[str, str]  # lower-case names; a repeated field is joined with ", "
    http11: bool


class ResponseReader:
    """Feed bytes as they arrive; ``done`` turns True once, when the final response is complete."""

    __slots__ = ("_buf", "_close_delimited", "_interim", "_max_body", "_max_head", "_parts", "_remaining",
                 "_scan", "_size", "_state", "_trailer_bytes", "head", "trailing")

    def __init__(self, *, max_body_bytes: int, max_head_bytes: int = 65536) -> None:
        self._max_body = max_body_bytes
        self._max_head = max_head_bytes
        self._buf = bytearray()
        self._scan = 0  # where the next search for a line end starts
        self._state = _HEAD
        self._interim = 0
        self._parts: list[bytes] = []
        self._size = 0
        self._remaining = 0
        self._trailer_bytes = 0
        self._close_delimited = False
        self.head: ResponseHead | None = None
        self.trailing = False  # bytes arrived after the final response ended

    @property
    def done(self) -> bool:
        return self._state == _DONE

    @property
    def body(self) -> bytes:
        parts = self._parts
        return parts[0] if len(parts) == 1 else b"".join(parts)

    @property
    def parts(self) -> list[bytes]:
        """The body so far, as the chunks it arrived in (read only: the pool's watch reads it as it grows)."""
        return self._parts

    @property
    def reusable(self) -> bool:
        """True only when the connection provably holds nothing of this exchange any more."""
        head = self.head
        if self._state != _DONE or self.trailing or self._close_delimited or head is None or not head.http11:
            return False
        connection = head.headers.get("connection")
        return connection is None or "close" not in _tokens(connection)

    def feed(self, data: bytes) -> bool:
        """Take the next bytes from the connection; return ``done``. Raises :class:`ResponseError`."""
        if self._state == _DONE:
            self.trailing = self.trailing or bool(data)
            return True
        self._buf += data
        step = _STEPS
        while step[self._state](self):
            pass
        if self._state == _DONE and self._buf:
            self.trailing = True
        return self._state == _DONE

    def feed_eof(self) -> bool:
        """The peer closed: completes a close-delimited body; return ``done`` (False: truncated)."""
        if self._state == _UNTIL_CLOSE:
            self._state = _DONE
        return self._state == _DONE

    # ------------------------------------------------------------------ one step per state
    # Each returns True when it made progress and another step may follow, False to wait for bytes.

    def _step_head(self) -> bool:
        buf = self._buf
        end = buf.find(b"\r\n\r\n", self._scan, self._max_head + 4)
        if end < 0:
            if len(buf) > self._max_head:
                raise ResponseError("response header section too large")
            self._refuse_bare_line_ends()
            self._scan = max(0, len(buf) - 3)  # bytes dribbled in one at a time are not rescanned
            return False
        head = _parse_head(buf[:end].decode("latin-1"))
        del buf[:end + 4]
        self._scan = 0
        if head.status < 200:
            if head.status == 101:
                raise ResponseError("unexpected 101 Switching Protocols")
            self._interim += 1
            if self._interim > MAX_INTERIM:
                raise ResponseError("too many interim responses")
            return True  # a 1xx has no body: the next bytes start another response
        self.head = head
        self._frame(head)
        return True

    def _frame(self, head: ResponseHead) -> None:
        encoding = head.headers.get("transfer-encoding")
        length = head.headers.get("content-length")
        if encoding is not None:
            if length is not None:
                raise ResponseError("both Transfer-Encoding and Content-Length")
            if encoding.lower() != "chunked":
                raise ResponseError("unsupported Transfer-Encoding")
            self._state = _CHUNK_SIZE
        elif head.status in (204, 304):
            self._state = _DONE
        elif length is not None:
            if not (length.isascii() and length.isdigit() and len(length) <= 18):  # one run of digits
                raise ResponseError("invalid Content-Length")
            self._remaining = int(length)
            self._grow(self._remaining)
            self._state = _LENGTH if self._remaining else _DONE
        else:
            self._close_delimited = True
            self._state = _UNTIL_CLOSE

    def _step_length(self) -> bool:
        take = min(len(self._buf), self._remaining)
        if take:
            self._take(take)
            self._remaining -= take
        if self._remaining == 0:
            self._state = _DONE
        return False

    def _step_chunk_size(self) -> bool:
        line = self._line()
        if line is None:
            return False
        match = _CHUNK.fullmatch(line)
        if match is None:
            raise ResponseError("invalid chunk size line")
        size = int(match.group(1), 16)
        if size == 0:
            self._state = _TRAILERS
            return True
        self._grow(size)
        self._remaining = size
        self._state = _CHUNK_DATA
        return True

    def _step_chunk_data(self) -> bool:
        take = min(len(self._buf), self._remaining)
        if take:
            self._take(take)
            self._remaining -= take
        if self._remaining:
            return False
        self._state = _CHUNK_END
        return True

    def _step_chunk_end(self) -> bool:
        if len(self._buf) < 2:
            return False
        if self._buf[:2] != b"\r\n":
            raise ResponseError("chunk data not followed by CRLF")
        del self._buf[:2]
        self._scan = 0
        self._state = _CHUNK_SIZE
        return True

    def _step_trailers(self) -> bool:
        line = self._line()
        if line is None:
            return False
        if not line:
            self._state = _DONE
            return False
        self._trailer_bytes += len(line) + 2
        if self._trailer_bytes > self._max_head or not _FIELD.fullmatch(line):
            raise ResponseError("invalid or oversized trailer section")
        return True  # a trailer field is checked and dropped

    def _step_until_close(self) -> bool:
        buf = self._buf
        if buf:
            self._grow(len(buf))
            self._take(len(buf))
        return False

    def _step_done(self) -> bool:
        return False

    # ------------------------------------------------------------------ helpers

    def _line(self) -> bytes | None:
        """One CRLF-terminated line (without it), or None until it is complete."""
        buf = self._buf
        end = buf.find(b"\r\n", self._scan, _MAX_CHUNK_LINE + 2)
        if end < 0:
            if len(buf) > _MAX_CHUNK_LINE:
                raise ResponseError("chunk or trailer line too long")
            self._refuse_bare_line_ends()
            self._scan = max(0, len(buf) - 1)
            return None
        line = bytes(buf[:end])
        del buf[:end + 2]
        self._scan = 0
        return line

    def _refuse_bare_line_ends(self) -> None:
        """Fail now on a lone CR or LF in a head or chunk line, instead of waiting for a CRLF."""
        buf = self._buf
        end = len(buf) - 1 if buf.endswith(b"\r") else len(buf)  # a final CR may be half of a CRLF
        if _BARE_LINE_END.search(buf, max(0, self._scan - 1), end):
            raise ResponseError("bare CR or LF in a line")

    def _grow(self, count: int) -> None:
        """Count body bytes against the limit; a declared length is counted before it is read."""
        self._size += count
        if self._size > self._max_body:
            raise BodyTooLarge("response body too large")

    def _take(self, count: int) -> None:
        """Move ``count`` buffered bytes to the body."""
        buf = self._buf
        if count == len(buf):
            self._parts.append(bytes(buf))
            buf.clear()
        else:
            with memoryview(buf) as view:
                self._parts.append(bytes(view[:count]))
            del buf[:count]
        self._scan = 0


_STEPS = (ResponseReader._step_head, ResponseReader._step_length, ResponseReader._step_chunk_size,
          ResponseReader._step_chunk_data, ResponseReader._step_chunk_end, ResponseReader._step_trailers,
          ResponseReader._step_until_close, ResponseReader._step_done)


def _parse_head(text: str) -> ResponseHead:
    """The status and fields of a header section (its latin-1 text, without the final CRLF CRLF)."""
    head = _SECTION.fullmatch(text)  # the whole section is validated here, in C
    if head is None:
        raise ResponseError("invalid status line or header field")
    pairs = _PAIRS.findall(head.group(3))
    headers = {name.lower(): value.strip(" \t") for name, value in pairs}
    if len(headers) != len(pairs):  # a repeated field: join it, unless it must be single
        headers = {}
        for name, value in pairs:
            key, value = name.lower(), value.strip(" \t")
            if key in headers:
                if key in _SINGLETONS:
                    raise ResponseError(f"repeated {key}")
                value = f"{headers[key]}, {value}"
            headers[key] = value
    return ResponseHead(int(head.group(2)), headers, head.group(1) == "1")


def _tokens(value: str) -> set[str]:
    return {part.strip().lower() for part in value.split(",")}
