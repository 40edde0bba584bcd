"""The build identity a service reports, as the audit records it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from portcullis.upstream.interface import server_version


@pytest.mark.parametrize(("info", "expected"), [
    ({"name": "billing", "version": "1.4.2"}, "billing 1.4.2"),
    (SimpleNamespace(name="everything", version="2.0.0"), "everything 2.0.0"),
    ({"name": "svc"}, "svc"),
    ({"name": "evil\u202e\n\x00", "version": "1\r\n"}, "evil 1"),
    ({"name": "x" * 500, "version": "1"}, "x" * 128),
    ({"name": 5, "version": None}, None),
    (None, None),
    ("not a mapping", None),
])
def test_server_version_is_printable_and_bounded(info: object, expected: str | None) -> None:
    assert server_version(info) == expected
