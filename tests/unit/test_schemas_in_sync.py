"""The committed ``schemas/*.json`` and ``docs/configuration.md`` match what the models generate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from portcullis.config.scaffold import scaffold_files
from portcullis.config.schemas import json_schemas, render_reference, schema_text, write_schemas
from portcullis.config.yaml_lines import load_yaml

REPO = Path(__file__).resolve().parents[2]
REFRESH = "run `python -m portcullis.config.schemas` from the repository root"


@pytest.mark.parametrize("name", sorted(json_schemas()))
def test_committed_schema_equals_the_generated_one(name: str) -> None:
    """Each file in schemas/ is byte-for-byte what json_schemas() generates today."""
    committed = (REPO / "schemas" / name).read_text(encoding="utf-8")
    assert committed == schema_text(json_schemas()[name]), REFRESH


def test_no_stray_schema_is_committed() -> None:
    """schemas/ holds exactly the generated schemas, so a removed model leaves no stale file."""
    assert sorted(p.name for p in (REPO / "schemas").glob("*.json")) == sorted(json_schemas())


def test_committed_reference_equals_the_generated_one() -> None:
    """docs/configuration.md is byte-for-byte what render_reference() generates today."""
    assert (REPO / "docs" / "configuration.md").read_text(encoding="utf-8") == render_reference(), REFRESH


@pytest.mark.parametrize("name", sorted(json_schemas()))
def test_published_schemas_are_valid_draft_2020_12(name: str) -> None:
    """Every published schema declares and satisfies the JSON Schema 2020-12 meta-schema."""
    schema = json_schemas()[name]
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == name
    Draft202012Validator.check_schema(schema)


def test_scaffold_files_validate_against_the_published_schemas() -> None:
    """The scaffolded gateway.yaml and every example manifest pass the schemas that editors will use."""
    schemas = json_schemas()
    files = scaffold_files()
    checked = {relative: "tool-manifest.schema.json" for relative in files if relative.startswith("tools/")}
    assert len(checked) == 3
    for relative, name in {"gateway.yaml": "gateway.schema.json", **checked}.items():
        errors = list(Draft202012Validator(schemas[name]).iter_errors(load_yaml(files[relative]).value))
        assert errors == []


def test_published_gateway_schema_rejects_a_bad_service_name() -> None:
    """Service names outside the pattern are rejected by the schema, as the model rejects them."""
    schema = json_schemas()["gateway.schema.json"]
    config = {"services": {"Bad Name": {"transport": "http", "url": "http://127.0.0.1/mcp"}}}
    assert not Draft202012Validator(schema).is_valid(config)


def test_write_schemas_writes_pretty_printed_files_with_a_trailing_newline(tmp_path: Path) -> None:
    """write_schemas writes every schema as indented JSON ending in one newline, and returns the paths."""
    written = write_schemas(tmp_path / "out")
    assert sorted(p.name for p in written) == sorted(json_schemas())
    for path in written:
        text = path.read_text(encoding="utf-8")
        assert text.endswith("}\n") and text.startswith('{\n  "$schema"')
        assert json.loads(text) == json_schemas()[path.name]
