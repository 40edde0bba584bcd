"""The file (#field) and sealed providers, and ``portcullis secrets seal|check``: values never in errors."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from portcullis.cli.main import app
from portcullis.config.secret_providers.sealed import generate_key
from portcullis.config.secrets import resolve_secret
from portcullis.errors import ConfigError

VALUE = "correct-horse-battery-staple"
runner = CliRunner()


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    k = generate_key()
    monkeypatch.setenv("PORTCULLIS_SEALED_KEY", k)
    return k


def _seal(tmp_path: Path, mapping: dict[str, str]) -> Path:
    source, sealed = tmp_path / "plain.yaml", tmp_path / "app.sealed"
    source.write_text(json.dumps(mapping))
    result = runner.invoke(app, ["secrets", "seal", str(source), "--output", str(sealed)])
    assert result.exit_code == 0, result.output
    assert VALUE not in result.output
    return sealed


@pytest.mark.parametrize("text", [json.dumps({"api": VALUE, "n": "x"}), f"api: {VALUE}\nn: x\n"], ids=["json", "yaml"])
def test_file_field_picks_a_key_of_the_mapping(tmp_path: Path, text: str) -> None:
    """secret://file/<path>#field reads one key of a JSON or YAML mapping file."""
    path = tmp_path / "creds"
    path.write_text(text)
    assert resolve_secret(f"secret://file{path}#api") == VALUE


@pytest.mark.parametrize(("text", "field", "why"), [
    (json.dumps({"api": VALUE}), "other", "the field does not exist"),
    (json.dumps({"api": [VALUE]}), "api", "the field is not a string"),
    (f"[{VALUE}", "api", "the file is not a JSON or YAML mapping"),
    (f"- {VALUE}\n", "api", "the secret is not a mapping of fields"),
], ids=["missing field", "not a string", "not yaml", "a list"])
def test_file_field_failures_never_quote_the_file(tmp_path: Path, text: str, field: str, why: str) -> None:
    """Every #field failure names the reference and a reason; the parser's message (which quotes) is dropped."""
    path = tmp_path / "creds"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        resolve_secret(f"secret://file{path}#{field}")
    assert str(caught.value) == f"<secret>: error: secret secret://file{path}#{field} cannot be resolved: {why}"


def test_seal_then_resolve_a_field(tmp_path: Path, key: str) -> None:
    """A file sealed by `portcullis secrets seal` resolves per field; it is written 0600 and holds no plaintext."""
    sealed = _seal(tmp_path, {"api": VALUE, "db": "other-value"})
    assert stat.S_IMODE(sealed.stat().st_mode) == 0o600
    assert VALUE.encode() not in sealed.read_bytes()
    assert resolve_secret(f"secret://sealed{sealed}#api") == VALUE
    checked = runner.invoke(app, ["secrets", "check", str(sealed)])
    assert checked.exit_code == 0 and checked.output.split() == ["api", "db"]


def _flip_ciphertext(path: Path) -> None:
    envelope = json.loads(path.read_text())
    ct = bytearray(base64.b64decode(envelope["ct"]))
    ct[0] ^= 1
    envelope["ct"] = base64.b64encode(bytes(ct)).decode()
    path.write_text(json.dumps(envelope))


def _other_alg(path: Path) -> None:
    path.write_text(path.read_text().replace("AES-256-GCM", "AES-128-GCM"))


@pytest.mark.parametrize(("spoil", "why"), [
    (lambda path: os.environ.__setitem__("PORTCULLIS_SEALED_KEY", generate_key()),
     "the sealed file cannot be opened: wrong key, or it was altered"),
    (_flip_ciphertext, "the sealed file cannot be opened: wrong key, or it was altered"),
    (_other_alg, "the file is not a sealed envelope (v 1, AES-256-GCM)"),
    (lambda path: os.environ.__setitem__("PORTCULLIS_SEALED_KEY", "not base64!"), "the sealing key is not base64"),
    (lambda path: os.environ.__setitem__("PORTCULLIS_SEALED_KEY", base64.b64encode(b"short").decode()),
     "the sealing key is not 32 bytes"),
], ids=["wrong key", "tampered ciphertext", "changed header", "key not base64", "short key"])
def test_sealed_file_refused_when_key_or_file_is_wrong(tmp_path: Path, key: str, spoil: object, why: str) -> None:
    """A wrong key, a flipped ciphertext bit or an edited header is a ConfigError naming the ref, no value."""
    sealed = _seal(tmp_path, {"api": VALUE})
    spoil(sealed)  # type: ignore[operator]
    with pytest.raises(ConfigError) as caught:
        resolve_secret(f"secret://sealed{sealed}#api")
    assert str(caught.value) == f"<secret>: error: secret secret://sealed{sealed}#api cannot be resolved: {why}"
    checked = runner.invoke(app, ["secrets", "check", str(sealed)])
    assert checked.exit_code != 0 and VALUE not in checked.output


def test_seal_refuses_a_non_string_mapping_without_echoing_it(tmp_path: Path, key: str) -> None:
    """A source that is not a mapping of strings is refused, and neither its values nor parser text are shown."""
    source = tmp_path / "plain.yaml"
    for text in (f"api: [{VALUE}]\n", f"[{VALUE}", f"- {VALUE}\n"):
        source.write_text(text)
        result = runner.invoke(app, ["secrets", "seal", str(source), "--output", str(tmp_path / "out")])
        assert result.exit_code == 2 and VALUE not in result.output
    assert not (tmp_path / "out").exists()


def test_every_reference_is_resolved_at_start_even_in_a_service_named_secrets(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The start resolves every reference of the configuration (fail closed), whatever the service's name."""
    from portcullis.config.model import GatewayConfig
    from portcullis.config.secret_store import activate, open_secret_store

    monkeypatch.delenv("PORTCULLIS_TEST_UNSET", raising=False)
    config = GatewayConfig.model_validate({"version": 1, "services": {"secrets": {
        "transport": "stdio", "command": "/bin/true", "env": {"K": "secret://env/PORTCULLIS_TEST_UNSET"}}}})
    with pytest.raises(ConfigError) as caught:
        open_secret_store(config, tmp_path)
    activate(None)
    assert [p.message for p in caught.value.problems] == [
        "secret secret://env/PORTCULLIS_TEST_UNSET cannot be resolved: the environment variable is not set"]
