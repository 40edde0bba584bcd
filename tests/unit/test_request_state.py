"""The gateway-sealed ``requestState`` (:mod:`portcullis.request_state`): what an attacker would send back."""

from __future__ import annotations

import base64
import dataclasses
import os
from typing import Any

import pytest

from portcullis.approvals.notify import LinkSigner
from portcullis.errors import InvalidParams
from portcullis.request_state import (
    MAX_RESPONSES_BYTES,
    MAX_STATE_CHARS,
    MAX_UPSTREAM_STATE_CHARS,
    MESSAGE,
    PREFIX,
    REASONS,
    Binding,
    RequestStateRefused,
    RequestStateSealer,
    is_sealed_state,
    params_digest,
)

KEY = os.urandom(32)
NOW = [1_800_000_000.0]
PARAMS: dict[str, Any] = {"name": "svc.tool", "arguments": {"amount": 5}}
BINDING = Binding(principal_key="alice", method="tools/call", target="svc.tool", service="svc",
                  params_digest=params_digest(PARAMS))


def _sealer(secret: bytes = KEY, *, max_rounds: int = 8) -> RequestStateSealer:
    return RequestStateSealer([secret], clock=lambda: NOW[0], max_rounds=max_rounds)


def _state(*, round_: int = 1, upstream: str | None = "upstream-opaque", sealer: RequestStateSealer | None = None,
           keys: tuple[str, ...] = ("user_name", "greeting")) -> str:
    return (sealer or _sealer()).seal(BINDING, upstream_state=upstream, keys=keys, round_=round_)


def _refused(state: Any, *, binding: Binding = BINDING, responses: Any = None,
             sealer: RequestStateSealer | None = None) -> str:
    with pytest.raises(RequestStateRefused) as info:
        (sealer or _sealer()).open(state, binding, responses)
    error = info.value
    assert isinstance(error, InvalidParams) and error.code == -32602
    assert error.message == MESSAGE and error.data is None  # one answer for every cause
    assert error.reason in REASONS
    return error.reason


def _flip(state: str, index: int) -> str:
    body = state[len(PREFIX):]
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw[index] ^= 0x01
    return PREFIX + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def test_genuine_retry_opens_to_the_upstream_state() -> None:
    """The caller that got the state, retrying the same call, gets the upstream's state back."""
    opened = _sealer().open(_state(), BINDING, {"user_name": {"action": "accept", "content": {"name": "A"}}})
    assert (opened.upstream_state, opened.round, opened.keys) == ("upstream-opaque", 1, ("user_name", "greeting"))
    assert "upstream-opaque" not in _state()  # the caller never sees the upstream's state


def test_digest_ignores_meta_and_the_retry_fields_only() -> None:
    """The params digest covers everything but _meta, inputResponses and requestState."""
    retry = {**PARAMS, "_meta": {"x": 1}, "inputResponses": {"a": {}}, "requestState": "s"}
    assert params_digest(retry) == params_digest(PARAMS)
    assert params_digest({**PARAMS, "arguments": {"amount": 6}}) != params_digest(PARAMS)


HOSTILE: list[tuple[str, Any, str]] = [
    ("forged: random bytes", PREFIX + base64.urlsafe_b64encode(os.urandom(80)).decode().rstrip("="), "unauthentic"),
    ("forged: no prefix", "upstream-opaque", "foreign_format"),
    ("not a string", {"state": 1}, "foreign_format"),
    ("empty", "", "foreign_format"),
    ("not base64", PREFIX + "%%%%", "not_base64"),
    ("truncated", _state()[:-10], "unauthentic"),
    ("only the prefix", PREFIX, "unauthentic"),
    ("oversized", PREFIX + "A" * (MAX_STATE_CHARS + 1), "too_large"),
    ("sealed with another key", _state(sealer=_sealer(os.urandom(32))), "unauthentic"),
]


@pytest.mark.parametrize(("case", "state", "reason"), HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_states_get_one_refusal(case: str, state: Any, reason: str) -> None:
    """Forged, truncated, oversized or foreign-key states: the same refusal, the precise reason kept inside."""
    assert _refused(state) == reason


@pytest.mark.parametrize("index", [0, 5, 11, 12, 20, -1, -16])
def test_tampered_one_byte_is_refused(index: int) -> None:
    """One flipped bit anywhere (nonce, ciphertext, tag) fails authentication."""
    state = _state()
    raw_len = len(base64.urlsafe_b64decode(state[len(PREFIX):] + "=="))
    assert _refused(_flip(state, index % raw_len)) == "unauthentic"


def test_expired_state_is_refused() -> None:
    """Past the TTL (an injected clock), the state is refused."""
    state = _state()
    sealer = _sealer()
    NOW[0] += sealer.ttl_s
    try:
        assert _refused(state, sealer=sealer) == "expired"
    finally:
        NOW[0] -= sealer.ttl_s


@pytest.mark.parametrize(("change", "reason"), [
    ({"principal_key": "mallory"}, "other_principal"),
    ({"target": "svc.other_tool"}, "other_target"),
    ({"params_digest": params_digest({**PARAMS, "arguments": {"amount": 5000}})}, "other_params"),
    ({"method": "prompts/get"}, "other_method"),
    ({"service": "other"}, "other_service"),
], ids=["other-principal", "other-tool", "other-args", "other-method", "other-service"])
def test_state_of_another_call_or_caller_is_refused(change: dict[str, str], reason: str) -> None:
    """A genuine state presented by another caller, or for another call, is refused."""
    assert _refused(_state(), binding=dataclasses.replace(BINDING, **change)) == reason


def test_rounds_are_capped() -> None:
    """Sealing past the cap refuses; an envelope of a round beyond this gateway's cap does not open."""
    sealer = _sealer(max_rounds=3)
    _state(sealer=sealer, round_=3)
    with pytest.raises(RequestStateRefused) as info:
        _state(sealer=sealer, round_=4)
    assert info.value.reason == "too_many_rounds"
    beyond = _state(sealer=_sealer(max_rounds=50), round_=9)  # same key, a laxer sealer
    assert _refused(beyond, sealer=sealer) == "too_many_rounds"


def test_approval_state_where_mrtr_state_expected_and_vice_versa() -> None:
    """An approval's signed requestState is not an envelope, and an envelope never names an approval."""
    approval_state = f"apr_{'0' * 32}.1800000600.{'a' * 64}"
    assert not is_sealed_state(approval_state)
    assert _refused(approval_state) == "foreign_format"
    assert LinkSigner.state_id(_state()) is None  # the approvals stage cannot read an envelope as an approval


@pytest.mark.parametrize(("responses", "reason"), [
    ({"user_name": {}, "password": {}}, "unknown_input_key"),
    ({"other": {"action": "accept"}}, "unknown_input_key"),
    ({"user_name": "accept"}, "responses_malformed"),
    (["user_name"], "responses_malformed"),
    ({f"k{i}": {} for i in range(40)}, "responses_malformed"),
    ({"user_name": {"action": "accept", "content": {"name": "x" * MAX_RESPONSES_BYTES}}}, "responses_too_large"),
], ids=["extra-key", "unknown-key", "not-an-object", "not-a-map", "too-many", "oversized"])
def test_input_responses_answer_only_the_keys_asked(responses: Any, reason: str) -> None:
    """inputResponses keys must be a subset of the keys asked, every answer an object, all of it bounded."""
    assert _refused(_state(), responses=responses) == reason


def test_subset_of_keys_and_no_responses_are_fine() -> None:
    """Answering some of the keys (or none) is the upstream's business: it may ask again."""
    assert _sealer().open(_state(), BINDING, {"greeting": {"role": "assistant"}}).round == 1
    assert _sealer().open(_state(), BINDING, None).round == 1


def test_upstream_state_is_bounded() -> None:
    """An upstream state past the bound is not sealed (the caller of seal refuses the call)."""
    with pytest.raises(ValueError, match="too large"):
        _state(upstream="x" * (MAX_UPSTREAM_STATE_CHARS + 1))
    assert _sealer().open(_state(upstream=None), BINDING, None).upstream_state is None


def test_keys_rotate_first_seals_all_open() -> None:
    """Listing a new key first keeps states sealed with the old one valid."""
    old = _state()
    rotated = RequestStateSealer([os.urandom(32), KEY], clock=lambda: NOW[0])
    assert rotated.open(old, BINDING, None).upstream_state == "upstream-opaque"
