"""The CycloneDX SBOM (scripts/sbom.sh, the command `make sbom` and the image build run): valid CycloneDX 1.6,
this project as its main component, every installed distribution a component, and byte-for-byte reproducible.

It describes a tiny environment (an empty venv holding one distribution's metadata), so the test takes
seconds; `make sbom` runs the same script over the runtime venv."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import venv
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from portcullis import __version__
from tests.deploy.tools import REPO, venv_tool

pytestmark = pytest.mark.xdist_group("tests/deploy/test_sbom.py")


def tiny_environment(root: Path) -> Path:
    """An empty virtual environment with one installed distribution (its metadata is what the SBOM reads)."""
    venv.create(root, with_pip=False)
    [site] = list(root.glob("lib/python3*/site-packages"))
    info = site / "tinydep-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinydep\nVersion: 1.2.3\nLicense-Expression: MIT\n")
    (info / "RECORD").write_text("tinydep-1.2.3.dist-info/METADATA,,\n")
    return root / "bin" / "python"


def sbom(python: Path, out: Path) -> bytes:
    done = subprocess.run(["bash", str(REPO / "scripts" / "sbom.sh"), str(python), str(out)], capture_output=True,
                          text=True, timeout=120, check=False,
                          env={**os.environ, "CYCLONEDX_PY": str(venv_tool("cyclonedx-py"))})
    assert done.returncode == 0, done.stderr[-2000:]
    return out.read_bytes()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """The SBOM of one tiny environment, made twice (each run takes seconds: the module shares them)."""
    tmp = tmp_path_factory.mktemp("sbom")
    python = tiny_environment(tmp / "venv")
    return sbom(python, tmp / "1.cdx.json"), sbom(python, tmp / "2.cdx.json")


def test_sbom_is_valid_cyclonedx_with_the_project_as_main_component(two_runs: tuple[bytes, bytes]) -> None:
    """Strict CycloneDX 1.6 JSON schema validation passes; the main component is portcullis at this version;
    the environment's distribution is a component with its package URL."""
    raw = two_runs[0]
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(raw.decode()) is None
    bom = json.loads(raw)
    assert (bom["bomFormat"], bom["specVersion"]) == ("CycloneDX", "1.6")
    main = bom["metadata"]["component"]
    assert (main["name"], main["version"], main["type"]) == ("portcullis", __version__, "application")
    assert [(c["name"], c["version"], c["purl"]) for c in bom["components"]] == [
        ("tinydep", "1.2.3", "pkg:pypi/tinydep@1.2.3")]
    assert "serialNumber" not in bom and "timestamp" not in bom["metadata"]  # reproducible output


def test_sbom_digest_is_reproducible(two_runs: tuple[bytes, bytes]) -> None:
    """Two runs over the same environment give the same bytes, so the digest /version reports is stable."""
    assert hashlib.sha256(two_runs[0]).hexdigest() == hashlib.sha256(two_runs[1]).hexdigest()


def test_the_validator_can_fail() -> None:
    """A document that is not CycloneDX 1.6 is reported."""
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(
        json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.6", "components": [{"name": "x"}]})) is not None


def test_make_sbom_and_release_use_the_script_over_a_runtime_only_venv() -> None:
    """`make sbom` installs the project without its dev extra into its own venv and runs the same script."""
    makefile = (REPO / "Makefile").read_text()
    assert "$(SBOM_VENV)/bin/python -m pip install --quiet --no-cache-dir .\n" in makefile
    assert "bash scripts/sbom.sh $(SBOM_VENV)/bin/python $(DIST)/portcullis.cdx.json" in makefile
    assert "release: sbom" in makefile and "SHA256SUMS" in makefile
