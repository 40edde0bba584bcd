"""Hostile requests to every JSON API on the admin listener, through one running gateway, one table.

Every admin JSON endpoint (``/approvals…``, ``/kill-switches…``, ``/pins``, ``/policy…``) shares its
plumbing (portcullis.transport.admin_json), so every row runs against every endpoint it applies to:
a missing, forged, expired or wrong-audience token (401), a caller outside the endpoint's list (403),
and for every endpoint that takes a body an oversized body (413), a wrong, missing or look-alike
Content-Type (415), and invalid JSON, non-UTF-8, non-objects, ``NaN``, a repeated key and nesting deep
enough to exhaust the parser (400). Each answer has the precise status and fixed error text, is JSON
with ``Cache-Control: no-store``, and carries no stack trace; nothing changes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from portcullis.approvals.api import MAX_BODY as APPROVALS_MAX
from portcullis.kill.api import MAX_BODY as KILL_MAX
from tests.e2e.harness import GatewayProcess
from tests.security.conftest import billing_demo_with

pytestmark = pytest.mark.xdist_group("security/test_admin_api_hostile.py")

APPROVAL = "apr_" + "0" * 32
SWITCH = "ks_" + "0" * 24


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, list[Any]]]:
    """The gateway, and its policy history before any hostile request."""
    root = billing_demo_with(tmp_path_factory.mktemp("admin-hostile") / "deployment",
                             admin={"operators": ["role:ops"], "responders": ["role:oncall"]})
    with GatewayProcess(root) as gw:
        yield gw, _send(gw, "GET", "/policy", _token(gw, "ops")).json()["history"]


@pytest.fixture
def gateway(started: tuple[GatewayProcess, list[Any]]) -> GatewayProcess:
    return started[0]


# (method, path, role of the caller let in, body limit or None when the endpoint reads no body,
#  whether an empty body is allowed without a Content-Type)
ENDPOINTS: list[tuple[str, str, str, int | None, bool]] = [
    ("GET", "/approvals", "finance-approver", None, False),
    ("GET", f"/approvals/{APPROVAL}", "finance-approver", None, False),
    ("POST", f"/approvals/{APPROVAL}/approve", "finance-approver", APPROVALS_MAX, True),
    ("POST", f"/approvals/{APPROVAL}/deny", "finance-approver", APPROVALS_MAX, True),
    ("GET", "/kill-switches", "oncall", None, False),
    ("POST", "/kill-switches", "oncall", KILL_MAX, False),
    ("POST", f"/kill-switches/{SWITCH}/lift", "oncall", KILL_MAX, False),
    ("GET", "/pins", "ops", None, False),
    ("GET", "/policy", "ops", None, False),
    ("GET", "/policy/versions/ps-0", "ops", None, False),
    ("POST", "/policy/reload", "ops", None, True),  # its bound (32 MiB) is tested in-process (test_policy_api)
    ("POST", "/policy/rollback", "ops", None, True),
    ("POST", "/policy/shadow", "ops", None, True),
    ("DELETE", "/policy/shadow", "ops", None, False),
]
BODY_ENDPOINTS = [e for e in ENDPOINTS if e[0] == "POST"]
JSON = "application/json"

# (case, body, Content-Type or None, status, error)
BODIES: list[tuple[str, bytes, str | None, int, str]] = [
    ("invalid JSON", b'{"reason": ', JSON, 400, "body must be a JSON object"),
    ("array", b"[1, 2]", JSON, 400, "body must be a JSON object"),
    ("string", b'"reason"', JSON, 400, "body must be a JSON object"),
    ("null", b"null", JSON, 400, "body must be a JSON object"),
    ("number", b"7", JSON, 400, "body must be a JSON object"),
    ("not UTF-8", b'{"reason": "\xff\xfe"}', JSON, 400, "body must be a JSON object"),
    ("UTF-16", '{"reason": "x"}'.encode("utf-16"), JSON, 400, "body must be a JSON object"),
    ("NaN", b'{"reason": NaN}', JSON, 400, "body must be a JSON object"),
    ("Infinity", b'{"expires_at": Infinity}', JSON, 400, "body must be a JSON object"),
    ("deep nesting", b'{"a": ' + b"[" * 1500 + b"]" * 1500 + b"}", JSON, 400, "body must be a JSON object"),
    ("duplicate key", b'{"reason": "a", "reason": "b"}', JSON, 400, "body must not repeat a key"),
    ("nested duplicate key", b'{"files": {"a.yml": "x", "a.yml": "y"}}', JSON, 400, "body must not repeat a key"),
    ("text/plain", b'{"reason": "x"}', "text/plain", 415, "Content-Type must be application/json"),
    ("form", b"reason=x", "application/x-www-form-urlencoded", 415, "Content-Type must be application/json"),
    ("multipart", b"--b--", "multipart/form-data; boundary=b", 415, "Content-Type must be application/json"),
    ("look-alike", b'{"reason": "x"}', "application/jsonp", 415, "Content-Type must be application/json"),
    ("json-seq", b'{"reason": "x"}', "application/json-seq", 415, "Content-Type must be application/json"),
    ("no Content-Type", b'{"reason": "x"}', None, 415, "Content-Type must be application/json"),
]


def _token(gw: GatewayProcess, role: str, **claims: Any) -> str:
    return gw.token(user="olivia", agent=None, roles=[role], **claims)


def _send(gw: GatewayProcess, method: str, path: str, token: str | None, body: bytes = b"",
          content_type: str | None = None) -> httpx2.Response:
    headers = {} if token is None else {"authorization": f"Bearer {token}"}
    if content_type is not None:
        headers["content-type"] = content_type
    return _CLIENT.request(method, gw.admin_base + path, headers=headers, content=body or None)


# one client for every request (building one per request costs more than the request); no connection is reused,
# so each request arrives on a fresh connection as it would from a new client
_CLIENT = httpx2.Client(timeout=30, limits=httpx2.Limits(max_keepalive_connections=0))


def _refused(response: httpx2.Response, status: int, error: str | None, where: str) -> None:
    assert response.status_code == status, (where, response.status_code, response.text)
    assert response.headers["cache-control"] == "no-store", where
    assert response.headers["content-type"] == JSON, where
    answer = response.json()
    assert set(answer) == {"error"}, (where, answer)
    if error is not None:
        assert answer["error"] == error, (where, answer)
    assert "Traceback" not in response.text and "File \"" not in response.text, where


def _forged(token: str) -> str:
    header, claims, signature = token.split(".")
    return ".".join([header, claims, signature[:-4] + ("AAAA" if not signature.endswith("AAAA") else "BBBB")])


def test_callers_who_are_not_let_in_are_refused_everywhere(gateway: GatewayProcess) -> None:
    """Missing, malformed, forged, expired and foreign-audience tokens are 401; a caller outside the list 403."""
    past = int(time.time()) - 7200
    for method, path, role, _limit, _optional in ENDPOINTS:
        good = _token(gateway, role)
        body, ctype = (b'{"reason": "x"}', JSON) if method == "POST" else (b"", None)
        tokens: list[tuple[str, str | None, int]] = [
            ("missing", None, 401),
            ("garbage", "not-a-jwt", 401),
            ("forged", _forged(good), 401),
            ("expired", _token(gateway, role, iat=past, nbf=past, exp=past + 60), 401),
            ("other audience", _token(gateway, role, aud="https://elsewhere.example/mcp"), 401),
            # not in the list: an operator is no responder, and so on; an agent is never an approver
            ("wrong role", gateway.token(user="mallory", agent="billing-bot", roles=["employee"]), 403),
        ]
        for case, token, status in tokens:
            _refused(_send(gateway, method, path, token, body, ctype), status, None, f"{case} {method} {path}")


@pytest.mark.parametrize(("case", "body", "content_type", "status", "error"), BODIES, ids=[b[0] for b in BODIES])
def test_hostile_bodies_are_refused_by_every_endpoint_that_reads_one(gateway: GatewayProcess, case: str, body: bytes,
                                                                    content_type: str | None, status: int,
                                                                    error: str) -> None:
    """Each hostile body gets the same precise refusal from every admin endpoint that takes a body."""
    for method, path, role, _limit, _optional in BODY_ENDPOINTS:
        response = _send(gateway, method, path, _token(gateway, role), body, content_type)
        _refused(response, status, error, f"{case} {method} {path}")


def test_an_oversized_body_is_413_and_a_missing_body_is_told_apart(gateway: GatewayProcess) -> None:
    """Past an endpoint's bound: 413. An empty body needs no Content-Type only where a body is optional."""
    for method, path, role, limit, optional in BODY_ENDPOINTS:
        token = _token(gateway, role)
        if limit is not None:
            big = b'{"reason": "' + b"x" * limit + b'"}'
            _refused(_send(gateway, method, path, token, big, JSON), 413, "request body too large", f"{path} big")
        if not optional:
            _refused(_send(gateway, method, path, token), 415, "Content-Type must be application/json", path)
            _refused(_send(gateway, method, path, token, b"", JSON), 400, "body must be a JSON object", path)


def test_wrong_methods_and_unknown_paths_are_json_refusals_too(gateway: GatewayProcess) -> None:
    """405 and 404 from the admin APIs are the same JSON, no-store answers."""
    for _method, path, role, _limit, _optional in ENDPOINTS:
        _refused(_send(gateway, "PUT", path, _token(gateway, role)), 405, "method not allowed", f"PUT {path}")
    for path, role in (("/kill-switches/nope", "oncall"), ("/approvals/nope", "finance-approver"),
                       ("/policy/nope", "ops")):
        _refused(_send(gateway, "GET", path, _token(gateway, role)), 404, None, path)


def test_nothing_changed_and_good_requests_still_work(started: tuple[GatewayProcess, list[Any]]) -> None:
    """After every hostile row: no switch was set, no policy change recorded, and each list reads 200 no-store."""
    gateway, history_before = started
    for method, path, role, _limit, _optional in ENDPOINTS:
        if method == "GET" and "/versions/" not in path and path != f"/approvals/{APPROVAL}":
            response = _send(gateway, method, path, _token(gateway, role))
            assert response.status_code == 200 and response.headers["cache-control"] == "no-store", path
    switches = _send(gateway, "GET", "/kill-switches", _token(gateway, "oncall")).json()
    assert switches == {"active": [], "recent": []}
    assert _send(gateway, "GET", "/policy", _token(gateway, "ops")).json()["history"] == history_before
