"""``secret://`` references resolve at run time, and failures name the reference, never a value."""

from __future__ import annotations

from pathlib import Path

import pytest

from portcullis.config.secrets import find_known_secrets, literal_secret_locs, resolve_secret
from portcullis.errors import ConfigError

VALUE = "correct-horse-battery-staple"


def test_env_reference_resolves_to_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """secret://env/NAME returns the environment variable's value."""
    monkeypatch.setenv("PORTCULLIS_TEST_SECRET", VALUE)
    assert resolve_secret("secret://env/PORTCULLIS_TEST_SECRET") == VALUE


def test_file_reference_resolves_to_the_stripped_contents(tmp_path: Path) -> None:
    """secret://file/<absolute path> returns the file's contents without surrounding whitespace."""
    secret = tmp_path / "key"
    secret.write_text(f"  {VALUE}\n")
    assert resolve_secret(f"secret://file{secret}") == VALUE
    assert resolve_secret(f"secret://file/{secret}") == VALUE


@pytest.mark.parametrize(
    ("ref", "why"),
    [
        ("secret://env/PORTCULLIS_TEST_UNSET", "the environment variable is not set"),
        ("secret://env/PORTCULLIS_TEST_EMPTY", "the secret is empty"),
        ("secret://env/NOT-A-NAME", "not a valid environment variable name"),
        ("secret://file/nonexistent/portcullis-test-key", "the file cannot be read"),
        ("secret://ldap/kv/key", "unknown secret scheme 'ldap'"),
        ("secret://vault/kv/key", "not a valid secret:// reference (docs/secrets.md)"),
        ("secret://vault/kv/../sys/seal#x", "a vault path has no empty, '.' or '..' segments"),
        ("secret://vault/kv/key#field", "secrets.vault is not configured"),
        ("secret://sealed/nonexistent/portcullis-test#field", "the sealing key's environment variable is not set"),
    ],
    ids=["unset variable", "empty variable", "bad variable name", "missing file", "unknown scheme",
         "vault without field", "vault dot-dot", "vault not configured", "sealed without key"],
)
def test_unresolvable_reference_is_a_config_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, ref: str, why: str
) -> None:
    """Each failure raises ConfigError whose message names the reference and the reason only."""
    monkeypatch.delenv("PORTCULLIS_TEST_UNSET", raising=False)
    monkeypatch.setenv("PORTCULLIS_TEST_EMPTY", "")
    monkeypatch.delenv("PORTCULLIS_SEALED_KEY", raising=False)
    with pytest.raises(ConfigError) as caught:
        resolve_secret(ref)
    assert str(caught.value) == f"<secret>: error: secret {ref} cannot be resolved: {why}"


def test_a_pasted_value_instead_of_a_reference_is_not_echoed() -> None:
    """A literal secret passed where a reference belongs is refused without repeating it."""
    with pytest.raises(ConfigError) as caught:
        resolve_secret(VALUE)
    assert VALUE not in str(caught.value)
    assert "not a secret:// reference" in str(caught.value)


def test_unreadable_secret_file_does_not_leak_its_contents(tmp_path: Path) -> None:
    """A secret file that is not UTF-8 is refused without its bytes appearing in the error."""
    secret = tmp_path / "key"
    secret.write_bytes(b"\xff" + VALUE.encode())
    with pytest.raises(ConfigError) as caught:
        resolve_secret(f"secret://file{secret}", origin=Path("gateway.yaml"))
    assert VALUE not in str(caught.value)
    assert str(caught.value).startswith("gateway.yaml: error:")


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("aws: AKIA" + "ABCDEFGHIJKLMNOP", "AWS access key id"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----", "private key"),
        ("token: ghp_" + "x" * 36, "GitHub token"),
        ("hook: xoxb-1234-abcd", "Slack token"),
        ("key: AIza" + "B" * 35, "Google API key"),
        ("stripe: sk_live_" + "a1" * 12, "Stripe live key"),
    ],
)
def test_well_known_secret_formats_are_found_by_line(line: str, kind: str) -> None:
    """find_known_secrets reports the line and kind of each well-known secret format."""
    assert list(find_known_secrets(f"# header\n{line}\n")) == [(2, kind)]


@pytest.mark.parametrize(
    "text",
    ["url: http://127.0.0.1:9001/mcp", "description: uses a token from the vault", "ghp_short", "pin: sha256:0"],
)
def test_ordinary_text_is_not_mistaken_for_a_secret(text: str) -> None:
    """Text that merely mentions secrets, or resembles a prefix, is not reported."""
    assert list(find_known_secrets(text)) == []


def test_literal_secret_locs_flags_secret_named_keys_without_references() -> None:
    """Strings under password/token/api_key-like keys are flagged unless they are secret:// refs."""
    config = {
        "db": {"password": "x", "Api-Key": "secret://env/K", "user": "admin"},
        "tokens": ["a", "secret://env/T"],
        "env": {"GITHUB_TOKEN": "y", "PRIVATE_KEY": ""},
        "max_tokens": 5,
    }
    assert list(literal_secret_locs(config)) == [("db", "password"), ("tokens", 0), ("env", "GITHUB_TOKEN")]


@pytest.mark.parametrize("ref", [
    "secret://env/NAME\n", "secret://file/tmp/x\x1b[2J", "secret://vault/kv/a#b\x07", "secret://file/a b",
    "secret://vault/kv/a#b#c", "secret://sealed/tmp/x", "secret://env/A#field", "secret://vault/kv#f",
    "secret://file/tmp/x\u202e#f\x9b",
], ids=["trailing newline", "escape sequence", "bell in field", "space", "two fields", "sealed without field",
        "env with field", "vault without path", "bidi and C1"])
def test_hostile_references_break_the_grammar_and_are_shown_escaped(ref: str) -> None:
    """Whitespace, control characters and grammar breaks are refused by the schema pattern, and an error
    about such a reference shows it with every invisible character escaped."""
    from pydantic import ValidationError

    from portcullis.config.secrets import parse_ref
    from portcullis.storage.config import PostgresConfig

    with pytest.raises(ValueError, match="not a valid secret:// reference"):
        parse_ref(ref)
    with pytest.raises(ValidationError):
        PostgresConfig(url_ref=ref)
    with pytest.raises(ConfigError) as caught:
        resolve_secret(ref)
    shown = str(caught.value)
    assert not any(ch in shown for ch in "\n\x1b\x07\u202e\x9b")
