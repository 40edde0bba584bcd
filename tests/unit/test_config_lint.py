"""``lint_deployment``: every broken file is reported with the exact file and line, secrets never echoed."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from portcullis.config.loader import lint_deployment, load_deployment
from portcullis.errors import ConfigError

PIN = "sha256:" + "0f" * 32
SECRET = "s3cr3t-hunter2-value"
GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5" * 3 + "F6g7H8"
AWS_KEY = "AKIA" + "IOSFODNN7EXAMPLE"

# Line numbers are given in the comments, as the tables below refer to them.
GATEWAY = """\
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
  files:
    transport: stdio
    module: portcullis.demo.services.files
    env_passthrough: [HOME]
"""  # lines 1-14: billing on 8, url on 10, files on 11

REFUND = f"""\
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
    amount:
      type: number
  required: [amount]
pin: {PIN}
"""  # lines 1-15: service on 2, risk on 5, input_schema on 9, amount's type on 13


@dataclass(frozen=True)
class Link:
    """A symlink to ``target``, relative to the test's temporary directory (outside the deployment)."""

    target: str


@dataclass(frozen=True)
class Case:
    files: dict[str, str | Link | None]  # None deletes a base file
    errors: list[tuple[str, int | None, str]] = field(default_factory=list)  # (file, line, fragment)
    warnings: list[tuple[str, int | None, str]] = field(default_factory=list)


def _manifest(name: str, service: str = "billing") -> str:
    return REFUND.replace("name: refund", f"name: {name}").replace("service: billing", f"service: {service}")


BROKEN = {
    "unknown key": Case(
        {"gateway.yaml": GATEWAY.replace("  port: 8080\n", "  port: 8080\n  prot: 8081\n")},
        [("gateway.yaml", 5, "listen.prot: Extra inputs are not permitted")],
    ),
    "wrong type": Case(
        {"gateway.yaml": GATEWAY.replace("port: 8080", "port: eighty")},
        [("gateway.yaml", 4, "listen.port: Input should be a valid integer")],
    ),
    "bad url": Case(
        {"gateway.yaml": GATEWAY.replace("url: http://", "url: ftp://")},
        [("gateway.yaml", 10, "services.billing.url: String should match pattern '^https?://'")],
    ),
    "missing url": Case(
        {"gateway.yaml": GATEWAY.replace("    url: http://127.0.0.1:9001/mcp\n", "")},
        [("gateway.yaml", 8, "services.billing.url: Field required")],
    ),
    "unknown transport": Case(
        {"gateway.yaml": GATEWAY.replace("transport: http", "transport: ftp")},
        [("gateway.yaml", 8, "services.billing: Input tag 'ftp' found using 'transport'")],
    ),
    "two launchers": Case(
        {"gateway.yaml": GATEWAY + "    command: /bin/true\n"},
        [("gateway.yaml", 11, "services.files: Value error, give exactly one of 'command' or 'module'")],
    ),
    "bad service name": Case(
        {"gateway.yaml": GATEWAY.replace("  billing:", "  Billing:")},
        [("gateway.yaml", 8, "services.Billing: String should match pattern")],
    ),
    "duplicate key": Case(
        {"gateway.yaml": GATEWAY + "listen:\n  port: 9090\n"},
        [("gateway.yaml", 15, "duplicate key 'listen' (first defined on line 2)")],
    ),
    "python tag": Case(
        {"gateway.yaml": GATEWAY.replace("port: 8080", "port: !!python/object/apply:os.getpid []")},
        [("gateway.yaml", 4, "is not allowed")],
    ),
    "gateway not a mapping": Case(
        {"gateway.yaml": "- billing\n- files\n"}, [("gateway.yaml", 1, "expected a mapping")]
    ),
    "gateway missing": Case({"gateway.yaml": None}, [("gateway.yaml", None, "missing")]),
    "yaml syntax error": Case(
        {"tools/billing/refund.yml": REFUND.replace("risk: high", "risk: high: very")},
        [("tools/billing/refund.yml", 5, "mapping values are not allowed here")],
    ),
    "bad json schema": Case(
        {"tools/billing/refund.yml": REFUND.replace("type: number", "type: money")},
        [("tools/billing/refund.yml", 13, "input_schema: not a valid JSON Schema 2020-12")],
    ),
    "input schema not an object": Case(
        {"tools/billing/refund.yml": REFUND.replace("  type: object", "  type: array")},
        [("tools/billing/refund.yml", 9, "input_schema: Value error, input_schema must have type 'object'")],
    ),
    "wrong enum": Case(
        {"tools/billing/refund.yml": REFUND.replace("risk: high", "risk: extreme")},
        [("tools/billing/refund.yml", 5, "risk: Input should be 'low', 'medium' or 'high'")],
    ),
    "missing owner": Case(
        {"tools/billing/refund.yml": REFUND.replace("owner: payments@example.com\n", "")},
        [("tools/billing/refund.yml", 1, "owner: Field required")],
    ),
    "unknown service": Case(
        {"tools/billing/refund.yml": _manifest("refund", service="shipping")},
        [("tools/billing/refund.yml", 2, "service 'shipping' is not declared in gateway.yaml")],
    ),
    "duplicate tool": Case(
        {"tools/payments/refund.yml": REFUND},
        [("tools/payments/refund.yml", 1, "tool 'refund' of 'billing' is also defined in")],
    ),
    "exposed name collision": Case(
        {
            "gateway.yaml": GATEWAY + "    tool_prefix: billing.\n",
            "tools/files/refund.yml": _manifest("refund", service="files"),
        },
        [("tools/files/refund.yml", 1, "exposed name 'billing.refund' collides with 'billing.refund'")],
    ),
    "exposed name differs only in case": Case(
        {"tools/ops/Refund.yml": _manifest("Refund")},
        [("tools/ops/Refund.yml", 1, "exposed name 'billing.Refund' looks like 'billing.refund'")],
    ),
    "fullwidth homoglyph name": Case(
        {"tools/ops/refund.yml": _manifest("\uff52efund")},
        [("tools/ops/refund.yml", 1, "name: String should match pattern")],
    ),
    "cyrillic homoglyph name": Case(
        {"tools/ops/refund.yml": _manifest("r\u0435fund")},
        [("tools/ops/refund.yml", 1, "name: String should match pattern")],
    ),
    "literal secret by key": Case(
        {"gateway.yaml": GATEWAY + f"    env:\n      API_TOKEN: {SECRET}\n"},
        [("gateway.yaml", 16, "services.files.env.API_TOKEN: literal secret: use a secret:// reference")],
    ),
    "passthrough of the sealing key": Case(
        {"gateway.yaml": GATEWAY.replace("[HOME]", "[HOME, PORTCULLIS_SEALED_KEY]")},
        [("gateway.yaml", 14, "services.files.env_passthrough: PORTCULLIS_SEALED_KEY holds a secret provider "
          "credential")],
    ),
    "passthrough of a vault token": Case(
        {"gateway.yaml": GATEWAY.replace("[HOME]", "[BAO_TOKEN, HOME]")},
        [("gateway.yaml", 14, "services.files.env_passthrough: BAO_TOKEN holds a secret provider credential")],
    ),
    "passthrough of a variable a reference reads": Case(
        {"gateway.yaml": GATEWAY.replace("[HOME]", "[HOME, PORTCULLIS_TEST_KEYS]")},
        [("gateway.yaml", 14, "services.files.env_passthrough: PORTCULLIS_TEST_KEYS holds a secret provider")],
    ),
    "malformed reference in a stdio env": Case(
        {"gateway.yaml": GATEWAY + "    env:\n      API_KEY: secret://vault/kv/no-field\n"},
        [("gateway.yaml", 16, "services.files.env.API_KEY: not a valid secret:// reference")],
    ),
    "vault reference without secrets.vault": Case(
        {"gateway.yaml": GATEWAY + "    env:\n      API_KEY: secret://vault/kv/app#key\n"},
        [("gateway.yaml", 16, "services.files.env.API_KEY: secret://vault/kv/app#key needs secrets.vault")],
    ),
    "literal secret in a list": Case(
        {
            "gateway.yaml": GATEWAY.replace(
                "    env_passthrough: [HOME]\n", f"    args: [x]\n    passwords: [{SECRET}]\n"
            )
        },
        [
            ("gateway.yaml", 15, "services.files.passwords.0: literal secret"),
            ("gateway.yaml", 15, "services.files.passwords: Extra inputs are not permitted"),
        ],
    ),
    "literal session key": Case(
        {"gateway.yaml": GATEWAY.replace("secret://env/PORTCULLIS_TEST_KEYS", SECRET)},
        [("gateway.yaml", 6, "sessions.key_ref: must be a secret:// reference")],
    ),
    "github token in a manifest": Case(
        {"tools/billing/refund.yml": REFUND.replace("Refund an order.", f"Uses {GITHUB_TOKEN} to call.")},
        [("tools/billing/refund.yml", 4, "literal secret (secret.github.token: github_token)")],
    ),
    "aws key in a comment": Case(
        {"tools/billing/refund.yml": REFUND + f"# old key: {AWS_KEY}\n"},
        [("tools/billing/refund.yml", 16, "literal secret (secret.aws.access_key_id: aws_access_key_id)")],
    ),
    "private key in a policy file": Case(
        {"policy/notes.md": "# notes\n-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD9\n"},
        [("policy/notes.md", 2, "literal secret (secret.private_key.pem: private_key)")],
    ),
    "broken classification scheme": Case(
        {"policy/data_class.yml": "classes:\n  - Public\n  Internal: x\n"},
        [("policy/data_class.yml", 3, "expected <block end>, but found '?'")],
    ),
    "symlinked manifest escaping the directory": Case(
        {"tools/billing/evil.yml": Link("outside/evil.yml")},
        [("tools/billing/evil.yml", None, "symlink points outside the deployment directory")],
    ),
    "symlinked gateway escaping the directory": Case(
        {"gateway.yaml": Link("outside/evil.yml")},
        [("gateway.yaml", None, "symlink points outside the deployment directory")],
    ),
    "symlinked folder escaping the directory": Case(
        {"policy": Link("outside")},
        [("policy", None, "symlink points outside the deployment directory")],
    ),
}


def _build(tmp_path: Path, files: dict[str, str | Link | None]) -> Path:
    root = tmp_path / "deployment"
    outside = tmp_path / "outside"
    outside.mkdir()
    # Would produce YAML and secret errors if it were ever read.
    (outside / "evil.yml").write_text(f"name: [\n{AWS_KEY}\n")
    base: dict[str, str | Link | None] = {"gateway.yaml": GATEWAY, "tools/billing/refund.yml": REFUND}
    for relative, content in {**base, **files}.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Link):
            os.symlink(tmp_path / content.target, path)
        elif content is not None:
            path.write_text(_with_identity(content) if relative == "gateway.yaml" else content)
    return root


def _with_identity(text: str) -> str:
    """serve refuses a gateway.yaml without identity (so lint does): one is appended to a mapping that has
    none, last, so the tables' line numbers hold."""
    if "identity:" in text or not text.startswith("version:"):
        return text
    return text + "identity: {allow_insecure_dev_issuer: true}\n"


def _rows(root: Path, severity: str) -> list[tuple[str, int | None, str]]:
    return [
        (p.path.relative_to(root).as_posix(), p.line, p.message)
        for p in lint_deployment(root)
        if p.severity == severity
    ]


def _matches(rows: list[tuple[str, int | None, str]], expected: list[tuple[str, int | None, str]]) -> bool:
    return len(rows) == len(expected) and all(
        (file, line) == (want_file, want_line) and fragment in message
        for (file, line, message), (want_file, want_line, fragment) in zip(rows, expected, strict=True)
    )


def test_base_deployment_is_clean(tmp_path: Path) -> None:
    """The deployment the tables start from has no problem at all (a note that it has no fixtures yet)."""
    assert [p.rule for p in lint_deployment(_build(tmp_path, {}))] == ["coverage.fixture"]


@pytest.mark.parametrize("case", BROKEN.values(), ids=BROKEN.keys())
def test_lint_reports_each_broken_config_at_its_file_and_line(tmp_path: Path, case: Case) -> None:
    """Each broken deployment yields exactly the expected errors, at the exact file and line."""
    root = _build(tmp_path, case.files)
    errors = _rows(root, "error")
    assert _matches(errors, case.errors), errors
    assert _matches(_rows(root, "warning"), case.warnings)
    with pytest.raises(ConfigError) as caught:
        load_deployment(root)
    assert len(caught.value.problems) == len(case.errors)


@pytest.mark.parametrize("case", BROKEN.values(), ids=BROKEN.keys())
def test_no_problem_message_contains_a_secret_value(tmp_path: Path, case: Case) -> None:
    """No lint message and no ConfigError text ever repeats a secret value found in the files."""
    root = _build(tmp_path, case.files)
    text = "\n".join(str(p) for p in lint_deployment(root))
    for secret in (SECRET, GITHUB_TOKEN, AWS_KEY, "MIIB"):
        assert secret not in text


WARNED = {
    "name differs from file stem": Case(
        {"tools/billing/refund.yml": None, "tools/billing/refunds.yml": REFUND},
        warnings=[("tools/billing/refunds.yml", 1, "name 'refund' differs from the file name 'refunds'")],
    ),
    "not pinned": Case(
        {"tools/billing/refund.yml": REFUND.replace(f"pin: {PIN}\n", "")},
        warnings=[("tools/billing/refund.yml", 1, "not pinned: the tool will not be served until `portcullis pin`")],
    ),
    "manifest one level deep": Case(
        {"tools/refund.yml": REFUND}, warnings=[("tools/refund.yml", None, "not a manifest at tools/<domain>")]
    ),
    "manifest three levels deep": Case(
        {"tools/billing/old/refund.yml": REFUND},
        warnings=[("tools/billing/old/refund.yml", None, "not a manifest at tools/<domain>")],
    ),
    "not a yaml file": Case(
        {"tools/billing/README.md": "# Billing\n"},
        warnings=[("tools/billing/README.md", None, "not a manifest at tools/<domain>")],
    ),
    "symlinked folder inside": Case(
        {"tools/payments": Link("deployment/tools/billing")},
        warnings=[("tools/payments", None, "symlinked directory not followed")],
    ),
}


@pytest.mark.parametrize("case", WARNED.values(), ids=WARNED.keys())
def test_lint_warns_without_failing_the_load(tmp_path: Path, case: Case) -> None:
    """Warnings are reported at their file and line, and the deployment still loads."""
    root = _build(tmp_path, case.files)
    assert _rows(root, "error") == []
    warnings = _rows(root, "warning")
    assert _matches(warnings, case.warnings), warnings
    assert load_deployment(root).manifests


def test_symlink_to_a_file_inside_the_directory_is_followed(tmp_path: Path) -> None:
    """A symlink that stays inside the deployment is read like the file it points to."""
    root = _build(tmp_path, {"tools/billing/refund.yml": None, "shared/refund.yml": REFUND})
    os.symlink(root / "shared/refund.yml", root / "tools/billing/refund.yml")
    assert [m.exposed_name for m in load_deployment(root).manifests] == ["billing.refund"]


def test_problems_are_sorted_by_file_then_line(tmp_path: Path) -> None:
    """lint_deployment returns problems ordered by path, then by line within a file."""
    broken = REFUND.replace("risk: high", "risk: extreme").replace("owner: payments@example.com", "owner: x")
    root = _build(tmp_path, {"tools/billing/refund.yml": broken, "gateway.yaml": GATEWAY + "  nope: 1\n"})
    keys = [(str(p.path), p.line or 0) for p in lint_deployment(root)]
    assert keys == sorted(keys)
    assert len(keys) == 3
