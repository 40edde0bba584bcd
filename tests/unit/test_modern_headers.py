"""2026-07-28 request headers: Mcp-Name and Mcp-Param-* agree with the body or the request fails."""

from __future__ import annotations

import base64

import pytest

from portcullis.errors import HeaderMismatch
from portcullis.transport.protocol import check_param_headers, decode_header

PARAMS = (("region", "mcp-param-region"), ("dry_run", "mcp-param-dry-run"))


def b64(text: str) -> str:
    return "=?base64?" + base64.b64encode(text.encode()).decode() + "?="


@pytest.mark.parametrize(("raw", "decoded"), [
    ("plain", "plain"), ("  padded \t", "padded"), (b64("Zürich"), "Zürich"),
    ("=?base64?SGVsbG8=", "=?base64?SGVsbG8="),  # no suffix: a literal, not base64
])
def test_header_values_are_trimmed_and_decoded(raw: str, decoded: str) -> None:
    """Whitespace is optional; the sentinel form is base64 UTF-8; anything else is literal."""
    assert decode_header(raw) == decoded


@pytest.mark.parametrize("raw", ["=?base64?SGVsbG8?=", "=?base64?SGVs!!!bG8=?=", "=?base64?/w==?="])
def test_malformed_base64_sentinels_are_a_header_mismatch(raw: str) -> None:
    """Bad padding, foreign characters and non-UTF-8 payloads are refused."""
    with pytest.raises(HeaderMismatch):
        decode_header(raw)


def test_matching_param_headers_pass() -> None:
    """Arguments mirrored into headers, booleans as true/false, pass."""
    check_param_headers({"mcp-param-region": "emea", "mcp-param-dry-run": "true"},
                        {"region": "emea", "dry_run": True}, PARAMS)


@pytest.mark.parametrize(("headers", "arguments"), [
    ({}, {"region": "emea"}),
    ({"mcp-param-region": "amer"}, {"region": "emea"}),
    ({"mcp-param-region": "emea", "mcp-param-dry-run": "True"}, {"region": "emea", "dry_run": True}),
])
def test_missing_or_disagreeing_param_headers_are_refused(headers: dict[str, str], arguments: dict) -> None:
    """A body value without its header, or with a different one, is a header mismatch."""
    with pytest.raises(HeaderMismatch):
        check_param_headers(headers, arguments, PARAMS)


def test_absent_arguments_need_no_header() -> None:
    """Only arguments present in the body are checked."""
    check_param_headers({}, {}, PARAMS)
