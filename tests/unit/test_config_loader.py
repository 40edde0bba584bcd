"""Loading a deployment directory, the YAML-with-lines layer under it, and ``write_pin``."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from portcullis.config.loader import Deployment, load_deployment, write_pin
from portcullis.config.yaml_lines import MAX_BYTES, YamlError, load_yaml
from portcullis.errors import ConfigError

PIN = "sha256:" + "ab" * 32
NEW_PIN = "sha256:" + "cd" * 32

GATEWAY = """\
# A small but complete deployment.
version: 1
listen:
  host: 127.0.0.1
  port: 8080
sessions:
  key_ref: secret://env/PORTCULLIS_TEST_KEYS
services:
  billing:
    transport: http
    url: http://127.0.0.1:9001/mcp
    tool_prefix: "pay_"
  files:
    transport: stdio
    module: portcullis.demo.services.files
"""

REFUND = f"""\
# Refunds move money.
name: refund
service: billing
owner: payments@example.com
description: Refund an order.
risk: high
classification:
  input: Confidential
  output: Confidential
input_schema:
  type: object
  properties:
    amount: {{type: number, exclusiveMinimum: 0}}
  required: [amount]
pin: {PIN}  # reviewed by payments
"""

READ_FILE = f"""\
name: read_file
service: files
owner: it@example.com
description: Read a file from the shared folder.
risk: low
classification: {{input: Internal, output: Internal}}
input_schema: {{type: object, properties: {{path: {{type: string}}}}}}
output_schema: {{type: object}}
pin: "{PIN}"
"""


def _deployment(root: Path) -> Path:
    for relative, text in {
        "gateway.yaml": GATEWAY,
        "tools/billing/refund.yml": REFUND,
        "tools/files/read_file.yaml": READ_FILE,
        "policy/data_class.yml": "levels:\n" + "".join(f"  - {{name: {c}, meaning: {c} data}}\n"
                                                        for c in ("Public", "Internal", "Confidential", "Restricted")),
        "policy/rules.rego": "package portcullis\n",
    }.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return root


def test_valid_deployment_loads_with_every_manifest(tmp_path: Path) -> None:
    """A complete, pinned deployment loads into typed models with exposed names and domains."""
    deployment = load_deployment(_deployment(tmp_path))
    assert isinstance(deployment, Deployment)
    assert deployment.root == tmp_path
    assert set(deployment.gateway.services) == {"billing", "files"}
    rows = [(m.path.relative_to(tmp_path).as_posix(), m.domain, m.exposed_name) for m in deployment.manifests]
    assert rows == [
        ("tools/billing/refund.yml", "billing", "pay_refund"),
        ("tools/files/read_file.yaml", "files", "files.read_file"),
    ]
    assert deployment.manifests[0].manifest.pin == PIN


def test_load_raises_every_error_but_not_warnings(tmp_path: Path) -> None:
    """load_deployment raises one ConfigError listing every error, and warnings alone never raise."""
    root = _deployment(tmp_path)
    (root / "tools/billing/refund.yml").write_text(REFUND.replace("risk: high", "risk: extreme"))
    (root / "tools/files/read_file.yaml").write_text(READ_FILE.replace("service: files", "service: nope"))
    with pytest.raises(ConfigError) as caught:
        load_deployment(root)
    assert [(p.path.name, p.line, p.severity) for p in caught.value.problems] == [
        ("refund.yml", 6, "error"),
        ("read_file.yaml", 2, "error"),
    ]
    (root / "tools/billing/refund.yml").write_text(REFUND.replace(f"pin: {PIN}", ""))
    (root / "tools/files/read_file.yaml").write_text(READ_FILE)
    assert len(load_deployment(root).manifests) == 2  # only the "not pinned" warning remains


def test_load_of_a_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    """A root that is not a directory is reported as a ConfigError, not an OSError."""
    with pytest.raises(ConfigError, match="not a directory"):
        load_deployment(tmp_path / "absent")


def test_write_pin_replaces_the_pin_and_keeps_every_other_byte(tmp_path: Path) -> None:
    """Replacing a pin changes only its value; comments, quoting and layout stay byte for byte."""
    manifest = _deployment(tmp_path) / "tools/billing/refund.yml"
    write_pin(manifest, NEW_PIN)
    assert manifest.read_text() == REFUND.replace(PIN, NEW_PIN)
    assert load_deployment(tmp_path).manifests[0].manifest.pin == NEW_PIN


def test_write_pin_appends_a_missing_pin_after_the_last_line(tmp_path: Path) -> None:
    """An unpinned manifest gets one `pin:` line appended, even when its last line lacks a newline."""
    manifest = tmp_path / "echo.yml"
    original = REFUND.replace(f"pin: {PIN}  # reviewed by payments\n", "# trailing comment")
    manifest.write_text(original)
    write_pin(manifest, NEW_PIN)
    assert manifest.read_text() == original + f"\npin: {NEW_PIN}\n"


def test_write_pin_keeps_crlf_line_endings(tmp_path: Path) -> None:
    """A CRLF manifest stays CRLF, including the rewritten pin line."""
    manifest = tmp_path / "refund.yml"
    manifest.write_bytes(REFUND.replace("\n", "\r\n").encode())
    write_pin(manifest, NEW_PIN)
    assert manifest.read_bytes() == REFUND.replace(PIN, NEW_PIN).replace("\n", "\r\n").encode()


@pytest.mark.parametrize(
    ("text", "pin"),
    [
        (REFUND, "sha256:short"),
        ("{name: x, pin: " + PIN + "}\n", NEW_PIN),
        ("name: x\npin:\n  " + PIN + "\n", NEW_PIN),
        ("- not\n- a mapping\n", NEW_PIN),
        ("name: [\n", NEW_PIN),
    ],
    ids=["malformed pin", "flow style", "multi-line value", "not a mapping", "broken YAML"],
)
def test_write_pin_refuses_edits_it_cannot_make_exactly(tmp_path: Path, text: str, pin: str) -> None:
    """write_pin raises ConfigError and leaves the file untouched when a line edit is not exact."""
    manifest = tmp_path / "x.yml"
    manifest.write_text(text)
    with pytest.raises(ConfigError):
        write_pin(manifest, pin)
    assert manifest.read_text() == text
    assert [p.name for p in tmp_path.iterdir()] == ["x.yml"]  # no temporary file left behind


def test_yaml_reports_the_line_of_the_deepest_existing_node() -> None:
    """line_of follows a location path as far as it exists; mapping entries use their key's line."""
    doc = load_yaml("a: 1\nb:\n  c:\n    - x\n    - y: 2\n")
    assert doc.line_of(("b", "c", 1, "y")) == 5
    assert doc.line_of(("b", "c", 1, "missing", "deeper")) == 5
    assert doc.line_of(("b", "nope")) == 2
    assert doc.line_of(()) == 1


def test_yaml_resolves_scalars_like_yaml_1_2_core() -> None:
    """Only true/false are booleans; dates, sexagesimals and yes/no stay strings."""
    doc = load_yaml("a: yes\nb: 2024-01-01\nc: 1:20\nd: 0x1F\ne: .inf\nf: ~\ng: TRUE\nh: '7'\n1: one\n")
    assert doc.value == {
        "a": "yes",
        "b": "2024-01-01",
        "c": "1:20",
        "d": 31,
        "e": math.inf,
        "f": None,
        "g": True,
        "h": "7",
        "1": "one",
    }


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("a: 1\nb: 2\na: 3\n", 3, "duplicate key 'a' (first defined on line 1)"),
        ("a:\n  b: 1\n  b: 1\n", 3, "duplicate key 'b'"),
        ("base: &b {x: 1}\nother: *b\n", 1, "anchors and aliases"),
        ("a: !!python/object/apply:os.system [ls]\n", 1, "is not allowed"),
        ("a: 1\nb: !!binary aGk=\n", 2, "is not allowed"),
        ("a: 1\nb: !custom x\n", 2, "is not allowed"),
        ("a: 1\n  b: 2\n", 2, "mapping values are not allowed here"),
        ("a: 1\n---\nb: 2\n", 2, "expected a single document"),
        ("? [a, b]\n: 1\n", 1, "mapping keys must be plain scalars"),
        ("a: " + "[" * 150 + "]" * 150 + "\n", 1, "nesting deeper than"),
    ],
    ids=[
        "duplicate",
        "nested duplicate",
        "alias",
        "python tag",
        "binary tag",
        "local tag",
        "syntax",
        "two documents",
        "complex key",
        "deep nesting",
    ],
)
def test_yaml_refuses_unsafe_or_ambiguous_documents(text: str, line: int, fragment: str) -> None:
    """Each refused construct raises YamlError at the line where it appears."""
    with pytest.raises(YamlError) as caught:
        load_yaml(text)
    assert caught.value.line == line
    assert fragment in caught.value.message


def test_yaml_refuses_documents_over_one_mebibyte() -> None:
    """A document larger than MAX_BYTES is refused before any parsing."""
    with pytest.raises(YamlError, match="larger than"):
        load_yaml(b"a: " + b"x" * MAX_BYTES)


def test_yaml_errors_never_quote_the_offending_line() -> None:
    """A syntax error on a line holding a secret does not repeat that line in the message."""
    with pytest.raises(YamlError) as caught:
        load_yaml('password: "hunter2-not-closed\n')
    assert "hunter2" not in caught.value.message
