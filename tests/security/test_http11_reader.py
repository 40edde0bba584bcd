"""Properties of the relay's HTTP/1.1 response reader over generated and arbitrary byte streams.

The pool's safety rests on two facts tested here: a well-formed response is read exactly to its
end however the bytes are split, and *any* byte stream either yields one final response with
nothing after it (reusable) or is refused for reuse.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portcullis.upstream.http11_response import MAX_INTERIM, ResponseError, ResponseReader

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).filter(
    lambda t: t not in {"content-length", "transfer-encoding", "content-type", "connection"})
_value = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20)


@st.composite
def responses(draw: Any) -> tuple[bytes, int, bytes]:
    """A well-formed final response (maybe after interim ones): its bytes, status and body."""
    body = draw(st.binary(max_size=300))
    status = draw(st.sampled_from([200, 201, 202, 400, 404, 500, 503]))
    extra = b"".join(f"{n}: {v}\r\n".encode() for n, v in draw(st.lists(st.tuples(_token, _value), max_size=4)))
    interim = b"".join(b"HTTP/1.1 %d Info\r\n\r\n" % code for code in draw(
        st.lists(st.sampled_from([100, 102, 103, 199]), max_size=MAX_INTERIM)))
    if draw(st.booleans()):
        framed = b"Content-Length: %d\r\n\r\n" % len(body) + body
    else:
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=5)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True) if b > a]
        framed = b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(
            b"%x\r\n" % len(p) + p + b"\r\n" for p in pieces) + b"0\r\n\r\n"
    head = b"HTTP/1.1 %d Whatever\r\nContent-Type: application/json\r\n" % status + extra
    return interim + head + framed, status, body


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def feed_all(parts: list[bytes]) -> tuple[str, Any]:
    """Outcome of feeding ``parts`` in order: ("error", None), ("waiting", None) or ("done", details)."""
    reader = ResponseReader(max_body_bytes=10_000)
    try:
        for part in parts:
            reader.feed(part)
    except ResponseError:
        return "error", None
    if not reader.done:
        return "waiting", None
    head = reader.head
    assert head is not None
    return "done", (head.status, reader.body, reader.reusable, reader.trailing)


@SETTINGS
@given(responses(), st.lists(st.integers(0, 10_000), max_size=8))
def test_a_well_formed_response_is_read_exactly_to_its_end_however_it_is_split(
        response: tuple[bytes, int, bytes], cuts: list[int]) -> None:
    """Any segmentation gives the final status and body, reusable, with nothing trailing."""
    data, status, body = response
    assert feed_all(splits(data, cuts)) == ("done", (status, body, True, False))


@SETTINGS
@given(responses(), st.binary(min_size=1, max_size=40), st.lists(st.integers(0, 10_000), max_size=8))
def test_any_byte_after_the_final_response_makes_the_connection_unreusable(
        response: tuple[bytes, int, bytes], extra: bytes, cuts: list[int]) -> None:
    """Extra bytes, however they arrive, mean the connection is closed, never pooled."""
    data, status, body = response
    outcome, details = feed_all(splits(data + extra, cuts))
    assert outcome == "done" and details[:2] == (status, body)
    assert details[2] is False and details[3] is True


_pieces = st.sampled_from([
    b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 103 Early Hints\r\n", b"HTTP/1.0 200 OK\r\n", b"HTTP/1.1 101 Up\r\n",
    b"Content-Length: 3\r\n", b"Content-Length: 0\r\n", b"Transfer-Encoding: chunked\r\n",
    b"Connection: close\r\n", b"\r\n", b"\n", b"\r", b"abc", b"3\r\n", b"0\r\n", b"{}", b" ", b"\x00",
    b"X: y\r\n", b"HTTP/1.1 204 No Content\r\n"])


@SETTINGS
@given(st.lists(st.one_of(_pieces, st.binary(max_size=6)), max_size=14), st.lists(st.integers(0, 500), max_size=6))
def test_any_byte_stream_is_one_response_read_exactly_or_not_reusable(pieces: list[bytes], cuts: list[int]) -> None:
    """Arbitrary bytes: the outcome does not depend on how they were split, and reusable means exact."""
    data = b"".join(pieces)
    whole = feed_all([data])
    assert feed_all(splits(data, cuts)) == whole
    if whole[0] == "done" and whole[1][2]:  # reusable: the response ended exactly at the last byte
        assert whole[1][3] is False
        for end in range(len(data)):  # and no shorter prefix was already a complete response
            assert feed_all([data[:end]])[0] != "done"
