"""The container image's Dockerfile, checked without a container engine: hadolint with the repository's
configuration, and its structure (stages, user, labels, no shell in the runtime image) with dockerfile-parse."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from portcullis import __version__, build_info
from tests.deploy.tools import REPO, venv_tool

DOCKERFILE = REPO / "Dockerfile"
SHELLS = {"sh", "dash", "bash", "rbash"}
# Debian 12 merges /bin into /usr/bin: both names are removed, whichever one a layer holds
SHELL_PATHS = {f"{directory}/{shell}" for shell in SHELLS for directory in ("/bin", "/usr/bin")}
REQUIRED_LABELS = {"org.opencontainers.image.revision", "org.opencontainers.image.version",
                   "org.opencontainers.image.source", "io.portcullis.policy-revision"}


def hadolint(dockerfile: Path) -> tuple[int, list[dict[str, Any]]]:
    done = subprocess.run([str(venv_tool("hadolint")), "--config", str(REPO / ".hadolint.yaml"), "-f", "json",
                           str(dockerfile)], capture_output=True, text=True, timeout=60, check=False)
    return done.returncode, json.loads(done.stdout or "[]")


def final_stage(parser: DockerfileParser) -> list[dict[str, Any]]:
    """The instructions from the last FROM on."""
    last = max(i for i, ins in enumerate(parser.structure) if ins["instruction"] == "FROM")
    return [ins for ins in parser.structure[last:] if ins["instruction"] != "COMMENT"]


def exec_form(value: str) -> list[str] | None:
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    return parsed if isinstance(parsed, list) and all(isinstance(p, str) for p in parsed) else None


def structure_problems(content: str) -> list[str]:
    """What keeps a Dockerfile from being the image the issue asks for (empty: none)."""
    parser = DockerfileParser(fileobj=io.BytesIO(content.encode()))
    problems = [] if parser.is_multistage else ["not a multi-stage build"]
    stage = final_stage(parser)
    users = [ins["value"] for ins in stage if ins["instruction"] == "USER"]
    if not users or not re.fullmatch(r"[1-9][0-9]*(:[1-9][0-9]*)?", users[-1]):
        problems.append(f"final USER not a numeric non-root id: {users}")
    removal = [i for i, ins in enumerate(stage) if ins["instruction"] == "RUN" and (
        (argv := exec_form(ins["value"])) is not None and argv[0].endswith("/rm")
        and SHELL_PATHS <= set(argv[1:]))]
    if not removal:
        problems.append("no exec-form RUN removes the shells in the final stage")
    later = stage[removal[-1] + 1:] if removal else []
    problems += [f"{ins['instruction']} after the shells are gone: {ins['value'][:60]}" for ins in later
                 if ins["instruction"] == "SHELL" or (ins["instruction"] == "RUN" and exec_form(ins["value"]) is None)]
    for name in ("ENTRYPOINT", "CMD"):
        values = [ins["value"] for ins in stage if ins["instruction"] == name]
        if not values or exec_form(values[-1]) is None:
            problems.append(f"{name} missing or not in exec form")
    missing = REQUIRED_LABELS - set(parser.labels)
    if missing:
        problems.append(f"labels missing: {sorted(missing)}")
    return problems


def test_hadolint_finds_nothing_with_the_repository_config() -> None:
    """hadolint (failure threshold info, label schema) reports no finding at all."""
    code, findings = hadolint(DOCKERFILE)
    assert (code, findings) == (0, [])


def test_hadolint_config_fails_a_dockerfile_without_the_revision_label(tmp_path: Path) -> None:
    """The label schema bites: dropping the commit label is a finding and a failing exit."""
    content = DOCKERFILE.read_text()
    assert 'org.opencontainers.image.revision="${GIT_COMMIT}" \\\n' in content
    broken = tmp_path / "Dockerfile"
    broken.write_text(content.replace('org.opencontainers.image.revision="${GIT_COMMIT}" \\\n', ""))
    code, findings = hadolint(broken)
    assert code == 1
    assert any("org.opencontainers.image.revision" in f["message"] for f in findings), findings


def test_dockerfile_structure_is_multistage_non_root_shell_free_and_labelled() -> None:
    """Two stages; the runtime one runs as a numeric non-root user, drops its shells in exec form and starts the
    gateway in exec form; the commit and policy revision labels are there."""
    assert structure_problems(DOCKERFILE.read_text()) == []
    parser = DockerfileParser(path=str(DOCKERFILE))
    assert parser.parent_images == ["debian:12-slim", "debian:12-slim"]
    assert parser.labels["org.opencontainers.image.version"] == __version__
    assert parser.labels["org.opencontainers.image.revision"] == ""  # the GIT_COMMIT build argument
    runtime = " ".join(ins["value"] for ins in final_stage(parser) if ins["instruction"] == "RUN")
    assert "bubblewrap" in runtime and "python3.11" in runtime  # the stdio sandbox and the venv's interpreter


@pytest.mark.parametrize(("edit", "problem"), [
    (("USER 65532:65532", "USER 0"), "numeric non-root"),
    (("USER 65532:65532", "USER portcullis"), "numeric non-root"),
    (('RUN ["/usr/bin/rm", "-f", "/usr/bin/sh", ', 'RUN ["/usr/bin/rm", "-f", '), "removes the shells"),
    (('RUN ["/usr/bin/rm"', 'RUN ["/usr/bin/ls"'), "removes the shells"),
    (("USER 65532:65532", "RUN echo still a shell\nUSER 65532:65532"), "after the shells are gone"),
    (('ENTRYPOINT ["/opt/venv/bin/portcullis"]', "ENTRYPOINT /opt/venv/bin/portcullis"), "ENTRYPOINT"),
    (("      io.portcullis.policy-revision=", "      io.portcullis.other="), "labels missing"),
])
def test_structure_check_catches_each_violation(edit: tuple[str, str], problem: str) -> None:
    """The structure check itself can fail: each rule on a Dockerfile that breaks only it."""
    content = DOCKERFILE.read_text()
    assert edit[0] in content
    problems = structure_problems(content.replace(edit[0], edit[1]))
    assert any(problem in p for p in problems), problems


def test_shell_removal_covers_every_shell_debian_installs() -> None:
    """Every program Debian 12's dash and bash packages put in a bin directory that is a shell is removed."""
    if shutil.which("dpkg-query") is None:
        if os.environ.get("CI"):
            pytest.fail("dpkg-query missing: the shell list cannot be checked against Debian's packages")
        pytest.skip("not a Debian machine: dpkg-query missing")
    listed = subprocess.run(["dpkg-query", "-L", "dash", "bash"], capture_output=True, text=True, check=True).stdout
    shells = {Path(line).name for line in listed.splitlines() if re.fullmatch(r"/(usr/)?bin/[a-z]*sh", line)}
    assert shells == SHELLS


def test_image_puts_the_build_record_and_sbom_where_version_reads_them() -> None:
    """The runtime stage copies build.json and the SBOM to the paths GET /version reads, and names them in the
    environment variables it reads (portcullis.build_info)."""
    parser = DockerfileParser(path=str(DOCKERFILE))
    assert parser.envs[build_info.BUILD_INFO_ENV] == build_info.DEFAULT_BUILD_INFO
    assert parser.envs[build_info.SBOM_ENV] == build_info.DEFAULT_SBOM
    copies = [ins["value"].split() for ins in final_stage(parser) if ins["instruction"] == "COPY"]
    assert ["--from=build", "/out/sbom.cdx.json", "/out/build.json", "/usr/share/portcullis/"] in copies
    assert str(Path(build_info.DEFAULT_SBOM).parent) == str(Path(build_info.DEFAULT_BUILD_INFO).parent) == (
        "/usr/share/portcullis")


def test_hadolint_config_ignores_only_what_it_explains() -> None:
    """One ignored rule (DL3008, unpinned apt versions), with its reason; the threshold stays at info."""
    text = (REPO / ".hadolint.yaml").read_text()
    config = yaml.safe_load(text)
    assert config["failure-threshold"] == "info" and config["strict-labels"] is True
    assert config["ignored"] == ["DL3008"]
    assert "# DL3008 (pin apt package versions)" in text
