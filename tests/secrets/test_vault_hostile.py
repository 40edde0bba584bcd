"""A Vault that answers badly (too large, not JSON, an error page quoting secrets, a redirect) is refused,
and the reason never quotes the answer. Also: plain http to a remote host needs the loud opt-in."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx2
import pytest

from portcullis.config.secret_providers.config import SecretsConfig
from portcullis.config.secret_store import SecretStore
from portcullis.errors import ConfigError

TOKEN = "s.gateway-token-value"
QUOTED = "leaked-secret-value"


def _store(monkeypatch: pytest.MonkeyPatch, answer: httpx2.Response | Callable[[], httpx2.Response],
           address: str = "http://127.0.0.1:8200", **vault: object) -> SecretStore:
    monkeypatch.setenv("PORTCULLIS_TEST_VAULT_TOKEN", TOKEN)

    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("lookup-self"):
            return httpx2.Response(200, json={"data": {"ttl": 0, "renewable": False}})
        return answer if isinstance(answer, httpx2.Response) else answer()

    return SecretStore(SecretsConfig.model_validate({"vault": {"address": address, **vault, "auth": {
        "method": "token", "token_ref": "secret://env/PORTCULLIS_TEST_VAULT_TOKEN"}}}),
        vault_transport=httpx2.MockTransport(handler))


@pytest.mark.parametrize(("answer", "why"), [
    (httpx2.Response(200, content=b"{" + b" " * (2 << 20) + b"}"), "Vault read: the answer is too large"),
    (httpx2.Response(200, content=f"<html>{QUOTED}</html>".encode()), "Vault read: the answer is not JSON"),
    (httpx2.Response(500, json={"errors": [QUOTED, TOKEN]}), "Vault read answered HTTP 500"),
    (httpx2.Response(302, headers={"location": f"http://evil.example/?t={TOKEN}"}), "Vault read answered HTTP 302"),
    (httpx2.Response(200, json={"data": {"data": [QUOTED]}}), "the secret is not a mapping of fields"),
    (httpx2.Response(200, json=[QUOTED]), "Vault read: the answer is not understood"),
], ids=["too large", "not json", "error page", "redirect", "data not a mapping", "not an object"])
def test_a_bad_vault_answer_is_refused_without_quoting_it(monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture,
                                                         answer: httpx2.Response, why: str) -> None:
    """Each bad answer is a ConfigError naming the reference and a fixed reason; nothing from the answer."""
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigError) as caught:
        _store(monkeypatch, answer).prime(["secret://vault/secret/app#key"])
    message = str(caught.value)
    assert message.endswith(f"secret secret://vault/secret/app#key cannot be resolved: {why}")
    assert QUOTED not in message and TOKEN not in message
    assert QUOTED not in caplog.text and TOKEN not in caplog.text


def test_plain_http_to_a_remote_vault_needs_the_opt_in(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """http:// to a non-loopback host is refused, and allowed with allow_insecure_http only with a warning."""
    ok = httpx2.Response(200, json={"data": {"data": {"key": "v"}}})
    with pytest.raises(ConfigError, match="allow_insecure_http"):
        _store(monkeypatch, ok, address="http://vault.example:8200")
    with caplog.at_level(logging.WARNING):
        store = _store(monkeypatch, ok, address="http://vault.example:8200", allow_insecure_http=True)
    assert any("allow_insecure_http" in r.getMessage() for r in caplog.records)
    store.prime(["secret://vault/secret/app#key"])


def test_an_unexpected_failure_in_a_refresh_keeps_the_last_value(monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Whatever a refresh raises, the last good value stays and the warning names the type, not its text."""
    broken = [False]

    def answer() -> httpx2.Response:
        if broken[0]:  # the server starts failing in an odd way
            raise RuntimeError(QUOTED)
        return httpx2.Response(200, json={"data": {"data": {"key": "good-value"}}})

    store = _store(monkeypatch, answer)
    get = store.current("secret://vault/secret/app#key")
    broken[0] = True
    with caplog.at_level(logging.WARNING):
        assert store.refresh() == []
    assert get() == "good-value"
    assert any(getattr(r, "fields", {}).get("why") == "RuntimeError" for r in caplog.records)
    assert QUOTED not in caplog.text


@pytest.mark.parametrize("token", ["two\nlines", "tab\there", "ünïcode", "with space"])
def test_a_token_that_is_no_header_value_is_refused_unquoted(monkeypatch: pytest.MonkeyPatch, token: str) -> None:
    """A given token with a newline, a control, non-ASCII or a space never reaches a header, nor the error."""
    store = _store(monkeypatch, httpx2.Response(200, json={"data": {"data": {"key": "v"}}}))
    monkeypatch.setenv("PORTCULLIS_TEST_VAULT_TOKEN", token)
    with pytest.raises(ConfigError) as caught:
        store.prime(["secret://vault/secret/app#key"])
    assert str(caught.value).endswith("cannot be resolved: the Vault token is not a printable header value")
    assert token not in str(caught.value)
