"""SIEM export configuration: strict, documented models, and building exporters that fail as ConfigError."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pydantic
import pytest

from portcullis.audit.siem import (
    ExportQueue,
    JsonlExportConfig,
    JsonlExporter,
    SiemExportConfig,
    SyslogExportConfig,
    SyslogExporter,
    WebhookExportConfig,
    WebhookExporter,
    build_exporters,
    build_queue,
)
from portcullis.audit.siem.config import Facility
from portcullis.audit.siem.syslog import FACILITIES
from portcullis.config.secrets import resolve_secret
from portcullis.errors import ConfigError
from tests.pki import Pki, make_pki

WEBHOOK_KEY = "w" * 32


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def resolver(ref: str) -> bytes:
    return resolve_secret(ref).encode("utf-8")


def full_config(pki: Pki) -> dict[str, Any]:
    return {
        "max_pending": 500,
        "exporters": [
            {"type": "jsonl", "path": "audit/export.jsonl", "max_bytes": 65536, "backups": 3},
            {"type": "syslog", "host": "127.0.0.1", "protocol": "tls", "ca_file": str(pki.ca_file)},
            {"type": "syslog", "name": "syslog-udp", "host": "127.0.0.1", "protocol": "udp", "facility": "auth"},
            {"type": "webhook", "url": "https://siem.example.com/hook", "secret_ref": "secret://env/SIEM_HOOK_KEY",
             "authorization_ref": "secret://env/SIEM_AUTH"},
        ],
    }


def test_a_full_configuration_parses_into_the_discriminated_models(pki: Pki) -> None:
    """Each exporter entry becomes the model its ``type`` names, with documented defaults filled in."""
    config = SiemExportConfig.model_validate(full_config(pki))
    jsonl, syslog, udp, webhook = config.exporters
    assert isinstance(jsonl, JsonlExportConfig) and jsonl.name == "jsonl" and jsonl.fsync is True
    assert isinstance(syslog, SyslogExportConfig) and syslog.port is None and syslog.facility == "local0"
    assert isinstance(udp, SyslogExportConfig) and udp.name == "syslog-udp" and udp.max_datagram == 8192
    assert isinstance(webhook, WebhookExportConfig) and webhook.allow_insecure_http is False
    assert (config.max_pending, config.max_attempts, config.max_batch) == (500, 8, 256)


@pytest.mark.parametrize(("change", "where"), [
    ({"exporters": []}, "exporters"),
    ({"exporters": [{"type": "kafka"}]}, "exporters"),
    ({"exporters": [{"type": "jsonl", "path": "a", "colour": "red"}]}, "colour"),
    ({"exporters": [{"type": "jsonl", "path": "a"}, {"type": "jsonl", "path": "b"}]}, "unique"),
    ({"exporters": [{"type": "jsonl", "path": "a", "name": "Bad Name"}]}, "name"),
    ({"exporters": [{"type": "jsonl", "path": "a", "max_bytes": 10}]}, "max_bytes"),
    ({"exporters": [{"type": "syslog", "host": "h", "protocol": "udp", "ca_file": "ca.pem"}]}, "tls"),
    ({"exporters": [{"type": "syslog", "host": "h", "facility": "local8"}]}, "facility"),
    ({"exporters": [{"type": "syslog", "host": "h x"}]}, "host"),
    ({"exporters": [{"type": "webhook", "url": "https://x/", "secret_ref": "hunter2-literal"}]}, "secret_ref"),
    ({"exporters": [{"type": "webhook", "url": "gopher://x/", "secret_ref": "secret://env/K"}]}, "url"),
    ({"retry_initial_s": 10, "retry_max_s": 1}, "retry_max_s"),
    ({"queue_size": 5}, "queue_size"),
])
def test_invalid_configurations_are_refused(change: dict[str, Any], where: str) -> None:
    """Unknown types and keys, clashing names, bad values and TLS settings without TLS are all errors."""
    raw = {"exporters": [{"type": "jsonl", "path": "a"}], **change}
    with pytest.raises(pydantic.ValidationError) as caught:
        SiemExportConfig.model_validate(raw)
    assert where in str(caught.value)
    assert "hunter2" not in str(caught.value).split("input_value")[0]


@pytest.mark.parametrize("model", [SiemExportConfig, JsonlExportConfig, SyslogExportConfig, WebhookExportConfig])
def test_every_field_is_documented_and_models_are_frozen(model: type[pydantic.BaseModel]) -> None:
    """Configuration is documented field by field, refuses unknown keys and cannot be changed after loading."""
    assert all(info.description for info in model.model_fields.values()), model.__name__
    assert model.model_config.get("frozen") is True and model.model_config.get("extra") == "forbid"


def test_the_facility_names_match_the_formatter() -> None:
    """The config's facility names are exactly the ones the syslog formatter knows."""
    assert set(typing.get_args(Facility)) == set(FACILITIES)


def test_build_queue_makes_one_exporter_per_entry(pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets are resolved through the caller's resolver, paths are relative to the deployment directory."""
    monkeypatch.setenv("SIEM_HOOK_KEY", WEBHOOK_KEY)
    monkeypatch.setenv("SIEM_AUTH", "Splunk abc")
    (tmp_path / "audit").mkdir()
    queue = build_queue(SiemExportConfig.model_validate(full_config(pki)), resolve_secret=resolver, base_dir=tmp_path)
    assert isinstance(queue, ExportQueue)
    assert list(queue.stats()) == ["jsonl", "syslog", "syslog-udp", "webhook"]
    exporters = build_exporters(SiemExportConfig.model_validate(full_config(pki)).exporters,
                                resolve_secret=resolver, base_dir=tmp_path)
    jsonl, syslog, udp, webhook = exporters
    assert isinstance(jsonl, JsonlExporter) and jsonl.path == tmp_path / "audit/export.jsonl"
    assert isinstance(syslog, SyslogExporter) and (syslog.protocol, syslog.port) == ("tls", 6514)
    assert isinstance(udp, SyslogExporter) and (udp.protocol, udp.port) == ("udp", 514)
    assert isinstance(webhook, WebhookExporter) and webhook.where == "https://siem.example.com:443"


def test_build_errors_are_one_config_error_listing_every_exporter_without_secret_values(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing directory, CA file or secret, a short key and plain http are each reported by exporter name."""
    monkeypatch.setenv("SHORT_KEY", "tiny-secret-val")
    monkeypatch.setenv("GOOD_KEY", WEBHOOK_KEY)
    monkeypatch.delenv("MISSING_KEY", raising=False)
    config = SiemExportConfig.model_validate({"exporters": [
        {"type": "jsonl", "path": "nowhere/export.jsonl"},
        {"type": "syslog", "host": "127.0.0.1", "ca_file": "missing-ca.pem"},
        {"type": "webhook", "name": "unset", "url": "https://x.example/h", "secret_ref": "secret://env/MISSING_KEY"},
        {"type": "webhook", "name": "short", "url": "https://x.example/h", "secret_ref": "secret://env/SHORT_KEY"},
        {"type": "webhook", "name": "cleartext", "url": "http://x.example/h", "secret_ref": "secret://env/GOOD_KEY"},
    ]})
    with pytest.raises(ConfigError) as caught:
        build_exporters(config.exporters, resolve_secret=resolver, base_dir=tmp_path)
    messages = [p.message for p in caught.value.problems]
    assert len(messages) == 5
    for name, fragment in [("jsonl", "does not exist"), ("syslog", "ca_file missing-ca.pem"),
                           ("unset", "secret://env/MISSING_KEY"), ("short", "16 bytes"), ("cleartext", "https")]:
        assert any(m.startswith(f"audit export {name!r}") and fragment in m for m in messages), (name, messages)
    assert "tiny-secret-val" not in str(caught.value)


def test_a_ca_file_that_is_not_pem_is_a_config_error(tmp_path: Path) -> None:
    """An unreadable trust anchor is caught when the gateway starts, not at the first record."""
    (tmp_path / "ca.pem").write_text("not a certificate")
    config = SyslogExportConfig(type="syslog", host="127.0.0.1", ca_file="ca.pem")
    with pytest.raises(ConfigError, match="no usable PEM"):
        build_exporters([config], resolve_secret=resolver, base_dir=tmp_path)


@pytest.mark.parametrize("value", ["bad\r\nX-Injected: 1", "", "naïve"])
def test_an_authorization_secret_that_is_not_a_header_value_is_refused(
        value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret with CR/LF or non-ASCII cannot become a header (no header injection); the error does not quote it."""
    config = WebhookExportConfig(type="webhook", url="https://x.example/h", secret_ref="secret://env/K",
                                 authorization_ref="secret://env/A")
    secrets = {"secret://env/K": WEBHOOK_KEY.encode(), "secret://env/A": value.encode()}
    with pytest.raises(ConfigError, match="printable ASCII") as caught:
        build_exporters([config], resolve_secret=secrets.__getitem__, base_dir=tmp_path)
    assert "Injected" not in str(caught.value)
