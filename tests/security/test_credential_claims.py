"""The credential in the trail: a token's ``jti`` and its OAuth Transaction Token ``txn`` claim.

Hostile claims first: each has every JSON type where a string is expected, empty, overlong,
control, bidirectional and invisible values; like every claim the mapping reads, a malformed one
refuses the token (``bad_claim:<field>:<why>``), never a silent drop. Then what the credential
must not change: a principal's equality (sessions, caches and approvals see one caller
across its tokens), its claim form (nothing of it travels to a service) and the session key.
Then the records: every decision and rejected record of a call names the credential, and the
CLI's views show it escaped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from portcullis.cli.audit_cmd import _principal
from portcullis.cli.safe_text import cell
from portcullis.identity.claims import ClaimRejected, credential_from_claims, principal_from_claims
from portcullis.identity.config import ClaimMap
from portcullis.identity.principal import MAX_ID_CHARS, Credential, Principal
from portcullis.identity.principal import principal_key as _principal_key
from tests.security.harness import BOT, INVOICE, NO_SUCH_TOOL, REFUND, STRANGER, in_process_gateway, refund

BASE: dict[str, Any] = {"sub": "alice", "client_id": "console", "agent_id": "billing-bot", "scope": "mcp:tools"}

HOSTILE = [
    (42, "type"), (4.5, "type"), (True, "type"), (None, "type"), (["t"], "type"), ({"id": "t"}, "type"),
    ("", "empty"), ("x" * (MAX_ID_CHARS + 1), "too_long"), ("a\x00b", "unsafe"), ("a\x1b[31mb", "unsafe"),
    ("a\u202eb", "unsafe"), ("a\u200bb", "unsafe"), ("a\nb", "unsafe"), (" txn", "space"),
]


@pytest.mark.parametrize("claim", ["jti", "txn"])
@pytest.mark.parametrize(("value", "why"), HOSTILE, ids=repr)
def test_a_malformed_credential_claim_refuses_the_token(claim: str, value: Any, why: str) -> None:
    with pytest.raises(ClaimRejected) as refused:
        principal_from_claims({**BASE, claim: value}, ClaimMap(), subject="alice", issuer="https://idp",
                              issuer_name="corp", auth_method="bearer")
    assert refused.value.reason == f"bad_claim:{claim}:{why}"


@pytest.mark.parametrize(("claims", "expected"), [
    ({}, None),
    ({"jti": "tok-1"}, Credential(jti="tok-1")),
    ({"txn": "97053963-771d-49cc-a4e3-20aad399c312"}, Credential(txn="97053963-771d-49cc-a4e3-20aad399c312")),
    ({"jti": "tok-1", "txn": "t-9"}, Credential(jti="tok-1", txn="t-9")),
    ({"jti": "x" * MAX_ID_CHARS}, Credential(jti="x" * MAX_ID_CHARS)),
])
def test_the_credential_is_read_from_jti_and_txn(claims: dict[str, Any], expected: Credential | None) -> None:
    assert credential_from_claims(claims) == expected
    principal = principal_from_claims({**BASE, **claims}, ClaimMap(), subject="alice", issuer="https://idp",
                                      issuer_name="corp", auth_method="bearer")
    assert principal.credential == expected


def test_the_credential_is_not_part_of_who_the_principal_is() -> None:
    one = principal_from_claims({**BASE, "jti": "tok-1", "txn": "a"}, ClaimMap(), subject="alice",
                                issuer="https://idp", issuer_name="corp", auth_method="bearer")
    two = principal_from_claims({**BASE, "jti": "tok-2", "txn": "b"}, ClaimMap(), subject="alice",
                                issuer="https://idp", issuer_name="corp", auth_method="bearer")
    assert one == two and one.credential != two.credential
    assert one.to_claims() == two.to_claims() and "credential" not in one.to_claims()
    assert "jti" not in str(one.log_fields()) and "tok-1" not in repr(one)
    assert _principal_key(one) == _principal_key(two)
    assert Principal.from_claims(one.to_claims()).credential is None  # nothing of it travels to a service
    with pytest.raises(ValueError, match="credential"):
        Principal(client_id="c", auth_method="bearer", issuer="i", credential={"jti": "x"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="jti"):
        Credential(jti="a\x00b")


def _with(principal: Principal, credential: Credential) -> Principal:
    import dataclasses

    return dataclasses.replace(principal, credential=credential)


async def test_every_decision_and_rejected_record_names_the_credential(tmp_path: Path) -> None:
    credential = Credential(jti="tok-77", txn="txn-42")
    bot, stranger = _with(BOT, credential), _with(STRANGER, credential)
    async with in_process_gateway(tmp_path) as gateway:
        assert (await gateway.call(INVOICE, {"invoice_id": "INV-1"}, principal=bot)).result is not None  # allowed
        assert (await gateway.call(REFUND, refund(900), principal=bot)).code is not None  # denied (over max)
        assert (await gateway.call(INVOICE, {"invoice_id": "INV-1"}, principal=stranger)).code is not None  # gate
        assert (await gateway.call(NO_SUCH_TOOL, {}, principal=bot)).code is not None  # rejected: unknown
        assert (await gateway.call(INVOICE, {"invoice_id": 7}, principal=bot)).code is not None  # rejected: invalid
        assert (await gateway.call(INVOICE, {"invoice_id": "INV-1"})).result is not None  # no credential
        records = [r for r in await gateway.records() if r.kind in ("decision", "rejected")]
    assert [r.kind for r in records] == ["decision", "decision", "decision", "rejected", "rejected", "decision"]
    for record in records[:-1]:
        assert record.fields["credential"] == {"jti": "tok-77", "txn": "txn-42"}
    assert "credential" not in records[-1].fields


def test_the_cli_views_show_the_credential_escaped() -> None:
    fields = {"principal": {"agent_id": "bot"}, "credential": {"jti": "j\x1b[2J", "txn": "t\u202eevil"}}
    shown = cell(_principal(fields)).plain
    assert "\x1b" not in shown and "\u202e" not in shown
    assert shown.startswith("agent=bot txn=t") and "jti=j" in shown
