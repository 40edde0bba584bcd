"""``secret://vault/…`` against a real OpenBao server: KV v2 reads, AppRole renewal and re-login, rotation.

Every failure names the reference only; no value reaches an error or a log record.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable

import anyio
import pytest

from portcullis.config.secret_providers.config import SecretsConfig
from portcullis.config.secret_store import SecretStore, activate
from portcullis.config.secrets import resolve_secret
from portcullis.errors import ConfigError
from tests.secrets.conftest import Bao

_WAIT_S = 60.0  # generous: CI machines run loaded


def _token_store(bao: Bao, monkeypatch: pytest.MonkeyPatch, token: str, **settings: float) -> SecretStore:
    monkeypatch.setenv("PORTCULLIS_TEST_VAULT_TOKEN", token)
    return SecretStore(SecretsConfig.model_validate({"vault": {
        "address": bao.address, "auth": {"method": "token", "token_ref": "secret://env/PORTCULLIS_TEST_VAULT_TOKEN"},
    }, **settings}))


def _approle_store(bao: Bao, monkeypatch: pytest.MonkeyPatch, role: str, policy: str, **ttl: str) -> SecretStore:
    role_id, secret_id = bao.approle(role, policy, **ttl)
    monkeypatch.setenv("PORTCULLIS_TEST_ROLE_ID", role_id)
    monkeypatch.setenv("PORTCULLIS_TEST_SECRET_ID", secret_id)
    return SecretStore(SecretsConfig.model_validate({"refresh_s": 1, "vault": {
        "address": bao.address, "auth": {"method": "approle", "role_id_ref": "secret://env/PORTCULLIS_TEST_ROLE_ID",
                                         "secret_id_ref": "secret://env/PORTCULLIS_TEST_SECRET_ID"}}}))


def _never_logged(caplog: pytest.LogCaptureFixture, *values: str) -> None:
    for record in caplog.records:
        shown = f"{record.getMessage()} {record.__dict__}"
        for value in values:
            assert value not in shown


async def _eventually(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + _WAIT_S
    while not check():
        assert time.monotonic() < deadline, "not seen in time"
        await anyio.sleep(0.1)


def test_kv2_field_is_read_with_a_token(bao: Bao, monkeypatch: pytest.MonkeyPatch,
                                        caplog: pytest.LogCaptureFixture) -> None:
    """secret://vault/secret/<path>#field resolves to that field of the newest KV v2 version."""
    caplog.set_level(logging.DEBUG)
    password = secrets.token_hex(12)
    bao.put("app/db", {"password": password, "user": "app"})
    store = _token_store(bao, monkeypatch, bao.root_token)
    store.prime(["secret://vault/secret/app/db#password"])
    assert store.current("secret://vault/secret/app/db#password")() == password
    activate(store)
    try:  # resolve_secret anywhere in the process answers vault references from the active store
        assert resolve_secret("secret://vault/secret/app/db#user") == "app"
    finally:
        activate(None)
        store.vault.close()  # type: ignore[union-attr]
    _never_logged(caplog, password, bao.root_token)


@pytest.mark.parametrize(("ref", "why"), [
    ("secret://vault/secret/app/db#nope", "the field does not exist"),
    ("secret://vault/secret/app/absent#password", "no such secret at Vault"),
    ("secret://vault/secret/other/db#password", "permission denied by Vault"),
], ids=["missing field", "missing path", "no permission"])
def test_unreadable_vault_reference_names_the_reference_only(bao: Bao, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture, ref: str,
                                                             why: str) -> None:
    """A missing field or path, or a path the policy denies, is a ConfigError naming the reference, no value."""
    caplog.set_level(logging.DEBUG)
    password = secrets.token_hex(12)
    bao.put("app/db", {"password": password})
    bao.put("other/db", {"password": password})
    bao.policy("app-only", 'path "secret/data/app/*" { capabilities = ["read"] }')
    token = bao.token("app-only")
    store = _token_store(bao, monkeypatch, token)
    with pytest.raises(ConfigError) as caught:
        store.prime([ref, "secret://vault/secret/app/db#password"])
    message = str(caught.value)
    assert f"secret {ref} cannot be resolved: {why}" in message
    assert len(caught.value.problems) == 1
    assert password not in message and token not in message
    _never_logged(caplog, password, token)
    store.vault.close()  # type: ignore[union-attr]


def test_vault_without_a_vault_section_is_refused() -> None:
    """With no secrets.vault, a vault reference is a ConfigError (fail closed), not an empty value."""
    with pytest.raises(ConfigError, match=r"secrets\.vault is not configured"):
        SecretStore(SecretsConfig()).prime(["secret://vault/secret/app/db#password"])


async def test_approle_token_stays_valid_across_renewals_and_relogin(bao: Bao, monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """With a 4 s token TTL and 10 s max TTL, the store renews, then logs in again, and never reads denied."""
    caplog.set_level(logging.DEBUG)
    bao.policy("short", 'path "secret/data/short/*" { capabilities = ["read"] }')
    bao.put("short/key", {"value": "v1"})
    store = _approle_store(bao, monkeypatch, "short", "short", token_ttl="4s", token_max_ttl="10s")
    get = store.current("secret://vault/secret/short/key#value")
    async with anyio.create_task_group() as tg:
        tg.start_soon(store.run)
        await _eventually(lambda: sum(r.getMessage() == "vault token obtained" for r in caplog.records) >= 3)
        bao.put("short/key", {"value": "v2"})  # read with whatever token is current now
        await _eventually(lambda: get() == "v2")
        tg.cancel_scope.cancel()
    messages = [r.getMessage() for r in caplog.records]
    assert "vault read denied; logging in again" not in messages
    assert "secret refresh failed; the last value stays in use" not in messages
    assert "vault token renewal refused" not in messages


async def test_a_new_kv_version_is_seen_without_a_restart(bao: Bao, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """A `kv put` of a new version reaches a per-use consumer within refresh_s; subscribers hear the ref."""
    caplog.set_level(logging.DEBUG)
    old, new = secrets.token_hex(12), secrets.token_hex(12)
    bao.put("rotating/api", {"key": old})
    store = _token_store(bao, monkeypatch, bao.root_token, refresh_s=1)
    get = store.current("secret://vault/secret/rotating/api#key")
    heard: list[str] = []
    store.subscribe(lambda ref: heard.append(str(ref)))
    assert get() == old
    async with anyio.create_task_group() as tg:
        tg.start_soon(store.run)
        assert bao.put("rotating/api", {"key": new}) >= 2
        await _eventually(lambda: get() == new)
        tg.cancel_scope.cancel()
    assert heard == ["secret://vault/secret/rotating/api#key"]
    _never_logged(caplog, old, new, bao.root_token)


async def test_a_failed_refresh_keeps_the_last_value(bao: Bao, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A secret deleted at Vault leaves the last good value in use, and the warning names only the ref."""
    caplog.set_level(logging.DEBUG)
    value = secrets.token_hex(12)
    bao.put("deleted/api", {"key": value})
    store = _token_store(bao, monkeypatch, bao.root_token, refresh_s=1)
    get = store.current("secret://vault/secret/deleted/api#key")
    bao.ok("DELETE", "secret/metadata/deleted/api")
    async with anyio.create_task_group() as tg:
        tg.start_soon(store.run)
        await _eventually(lambda: any(r.getMessage().startswith("secret refresh failed") for r in caplog.records))
        tg.cancel_scope.cancel()
    assert get() == value
    _never_logged(caplog, value, bao.root_token)


def test_a_revoked_approle_token_is_replaced_by_a_new_login(bao: Bao, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """An operator revokes the gateway's token: the next refresh is denied once, logs in again and reads."""
    caplog.set_level(logging.DEBUG)
    bao.policy("revoked", 'path "secret/data/revoked/*" { capabilities = ["read"] }')
    bao.put("revoked/key", {"value": "before"})
    store = _approle_store(bao, monkeypatch, "revoked", "revoked")
    get = store.current("secret://vault/secret/revoked/key#value")
    accessors = bao.api("LIST", "auth/token/accessors").json()["data"]["keys"]
    for accessor in accessors:
        meta = bao.ok("POST", "auth/token/lookup-accessor", {"accessor": accessor})["data"].get("meta") or {}
        if meta.get("role_name") == "revoked":
            bao.ok("POST", "auth/token/revoke-accessor", {"accessor": accessor})
    bao.put("revoked/key", {"value": "after"})
    assert [str(ref) for ref in store.refresh()] == ["secret://vault/secret/revoked/key#value"]
    assert get() == "after"
    assert [r.getMessage() for r in caplog.records].count("vault read denied; logging in again") == 1
    store.vault.close()  # type: ignore[union-attr]


def test_a_given_token_that_cannot_be_renewed_is_given_up_once(bao: Bao, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """token auth: a renewal refused (the token revoked) is logged once and not retried in a loop."""
    token = bao.token("default", ttl="1h", renewable=True)
    monkeypatch.setenv("PORTCULLIS_TEST_VAULT_TOKEN", token)
    now = [0.0]
    store = SecretStore(SecretsConfig.model_validate({"vault": {"address": bao.address, "auth": {
        "method": "token", "token_ref": "secret://env/PORTCULLIS_TEST_VAULT_TOKEN"}}}), clock=lambda: now[0])
    assert store.vault is not None
    store.vault.login()
    assert store.vault.renew_due_in() == pytest.approx(1800, abs=5)
    bao.ok("POST", "auth/token/revoke", {"token": token})
    now[0] = 3600.0  # the renewal point has passed
    store.vault.maintain()
    assert store.vault.renew_due_in() is None
    assert [r.getMessage() for r in caplog.records].count(
        "vault token cannot be renewed; it expires and vault secrets will no longer refresh") == 1
    store.vault.close()


def test_an_unreachable_vault_refuses_the_start_naming_only_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """Vault down (nothing listens at its address): resolving at start fails closed with one problem that
    names the reference and never the token."""
    from tests.ports import free_port

    token = secrets.token_hex(16)
    monkeypatch.setenv("PORTCULLIS_TEST_VAULT_TOKEN", token)
    store = SecretStore(SecretsConfig.model_validate({"vault": {
        "address": f"http://127.0.0.1:{free_port()}", "timeout_s": 2,
        "auth": {"method": "token", "token_ref": "secret://env/PORTCULLIS_TEST_VAULT_TOKEN"}}}))
    with pytest.raises(ConfigError) as refused:
        store.prime(["secret://vault/secret/app/db#password"])
    text = "; ".join(str(p) for p in refused.value.problems)
    assert "secret://vault/secret/app/db#password" in text and token not in text
