"""``policy/data_class.yml`` has a schema: lint and serve refuse the same broken schemes, at their lines."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import pytest

from portcullis.config.data_class import DataClassScheme
from portcullis.config.loader import lint_deployment, load_deployment
from portcullis.config.scaffold import DATA_CLASS_YML
from portcullis.config.yaml_lines import load_yaml
from portcullis.errors import ConfigError

LEVELS = ("Public", "Internal", "Confidential", "Restricted")


def _scheme(*names: str, extra: str = "") -> str:
    return "levels:\n" + "".join(f"  - name: {n}\n    meaning: {n} data\n" for n in names) + extra


def _demo(tmp_path: Path, scheme: str | None) -> Path:
    root = tmp_path / "deployment"
    shutil.copytree(str(resources.files("portcullis.demo") / "deployment"), root)
    target = root / "policy" / "data_class.yml"
    if scheme is None:
        target.unlink()
    else:
        target.write_text(scheme)
    return root


def test_the_demo_and_the_scaffold_schemes_validate() -> None:
    demo = resources.files("portcullis.demo") / "deployment" / "policy" / "data_class.yml"
    for text in (demo.read_text(), DATA_CLASS_YML):
        scheme = DataClassScheme.model_validate(load_yaml(text.encode()).value)
        assert [level.name for level in scheme.levels] == list(LEVELS)


def test_a_deployment_without_a_scheme_is_fine(tmp_path: Path) -> None:
    assert not [p for p in lint_deployment(_demo(tmp_path, None)) if p.severity == "error"]


@pytest.mark.parametrize(("scheme", "line", "message"), [
    (_scheme("Public", "Internal", "Confidential", "Secret"), 8, "levels.3.name"),  # a level the gateway lacks
    (_scheme("Internal", "Public", "Confidential", "Restricted"), 1, "in this order"),  # out of order
    (_scheme("Public", "Internal", "Confidential"), 1, "at least 4"),  # one left out
    (_scheme("Public", "Public", "Confidential", "Restricted"), 1, "each once"),  # one twice
    (_scheme(*LEVELS, extra="owner: me\n"), 10, "owner: Extra inputs"),  # an unknown key
    ("classes: [Public, Internal, Confidential, Restricted]\n", 1, "classes: Extra inputs"),  # another format
    ("levels:\n  - Public\n", 2, "levels.0"),  # a level that is not a mapping
    ("levels:\n" + "".join(f"  - name: {n}\n" for n in LEVELS), 2, "meaning: Field required"),
    ("- Public\n- Internal\n", 1, "expected a mapping"),
    ("public: ]\n", 1, ""),  # not YAML
    ("levels:\n  - name: Public\n    meaning: ''\n", 3, "levels.0.meaning"),
    (_scheme("Public", "Internal", "Confidential", "Restricted\u200b"), 8, "levels.3.name"),  # hidden character
])
def test_lint_and_serve_refuse_a_broken_scheme_at_its_line(tmp_path: Path, scheme: str, line: int,
                                                          message: str) -> None:
    root = _demo(tmp_path, scheme)
    errors = [p for p in lint_deployment(root) if p.severity == "error"]
    assert [(p.path.name, p.rule in ("schema", "yaml")) for p in errors] == [("data_class.yml", True)] * len(errors)
    assert errors and any(p.line == line and message in p.message for p in errors), errors
    with pytest.raises(ConfigError):
        load_deployment(root)
