"""``GET /version`` on the admin listener and ``portcullis version --json``: the build (commit, policy revision,
SBOM digest) and the active policy version, ``null`` where unknown (docs/release.md)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx2
import pytest

from portcullis import __version__, build_info
from portcullis.transport.admin import AdminApp
from portcullis.transport.origin_guard import OriginGuard
from tests.e2e.harness import GatewayProcess, dev_identity, free_port, run_cli, write_deployment


def build_files(tmp: Path, *, commit: str = "0123abcd" * 5, revision: str = "policy-rev-7") -> dict[str, str]:
    """A build.json and an SBOM file, and the environment that names them."""
    (tmp / "build.json").write_text(json.dumps({"commit": commit, "policy_revision": revision}))
    (tmp / "sbom.cdx.json").write_bytes(b'{"bomFormat": "CycloneDX", "specVersion": "1.6"}\n')
    return {build_info.BUILD_INFO_ENV: str(tmp / "build.json"), build_info.SBOM_ENV: str(tmp / "sbom.cdx.json")}


def admin_app(report: dict[str, Any] | None) -> AdminApp:
    return AdminApp(metrics=lambda: (b"", "text/plain"), readiness=lambda: (True, {}),
                    guard=OriginGuard(["127.0.0.1:*"], []), version=None if report is None else lambda: report)


async def ask(app: AdminApp, method: str, path: str = "/version") -> httpx2.Response:
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1:9464") as http:
        return await http.request(method, path)


def test_build_info_reads_both_files_and_hashes_the_sbom(tmp_path: Path) -> None:
    """The commit and revision come from build.json; the digest is the SBOM file's SHA-256."""
    info = build_info.load(build_files(tmp_path))
    assert info.report("ps-1") == {
        "version": __version__, "commit": "0123abcd" * 5, "policy_version": "ps-1", "policy_revision": "policy-rev-7",
        "sbom_sha256": hashlib.sha256((tmp_path / "sbom.cdx.json").read_bytes()).hexdigest()}


@pytest.mark.parametrize("content", [b"", b"not json", b"[1, 2]", b'{"commit": 5}', b'{"commit": "a b"}',
                                     b'{"commit": "\\u001b]8;;x\\u0007"}', b'{"commit": "' + b"a" * 129 + b'"}',
                                     b'{"commit": "' + b"a" * 70_000 + b'"}'])
def test_unreadable_or_hostile_build_values_are_null(tmp_path: Path, content: bytes) -> None:
    """A malformed build file, a value with controls or spaces, or an oversized one is reported as unknown."""
    (tmp_path / "build.json").write_bytes(content)
    info = build_info.load({build_info.BUILD_INFO_ENV: str(tmp_path / "build.json"),
                            build_info.SBOM_ENV: str(tmp_path / "absent.json")})
    assert (info.commit, info.policy_revision, info.sbom_sha256) == (None, None, None)


def test_without_files_everything_but_the_version_is_null(tmp_path: Path) -> None:
    """A development checkout has no build file and no SBOM: it says so instead of guessing."""
    info = build_info.load({build_info.BUILD_INFO_ENV: str(tmp_path / "no"), build_info.SBOM_ENV: str(tmp_path / "no")})
    assert info.report(None) == {"version": __version__, "commit": None, "policy_version": None,
                                 "policy_revision": None, "sbom_sha256": None}


def test_build_info_writer_round_trips_and_refuses_bad_values(tmp_path: Path) -> None:
    """The image build's writer (``python -m portcullis.build_info``) produces what :func:`load` reads."""
    out = tmp_path / "build.json"
    assert build_info.main(["--commit", "abc123", "--policy-revision", "", "--output", str(out)]) == 0
    assert build_info.load({build_info.BUILD_INFO_ENV: str(out)}).commit == "abc123"
    assert json.loads(out.read_text())["policy_revision"] is None
    with pytest.raises(SystemExit):
        build_info.main(["--commit", "abc 123", "--output", str(out)])


async def test_admin_version_answers_get_and_head_with_the_report() -> None:
    """GET returns the JSON report; HEAD the same headers; other verbs 405; no report wired means 404."""
    report = {"version": "1", "commit": None, "policy_version": "ps-x", "policy_revision": None, "sbom_sha256": None}
    got = await ask(admin_app(report), "GET")
    assert (got.status_code, got.headers["content-type"], got.json()) == (200, "application/json", report)
    assert (await ask(admin_app(report), "HEAD")).status_code == 200
    refused = await ask(admin_app(report), "POST")
    assert (refused.status_code, refused.headers["allow"]) == (405, "GET, HEAD")
    assert (await ask(admin_app(None), "GET")).status_code == 404
    assert (await ask(admin_app(report), "GET", "/version/x")).status_code == 404


def test_cli_version_json_reports_the_build(tmp_path: Path) -> None:
    """``portcullis version --json`` prints the same report, no policy version (nothing is running)."""
    env = build_files(tmp_path)
    done = run_cli("version", "--json", env=env)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body == {**build_info.load(env).report(None)}
    assert body["commit"] == "0123abcd" * 5


def test_served_gateway_reports_its_build_and_active_policy_version(tmp_path: Path) -> None:
    """A running gateway's /version: the SBOM digest of the file its environment names, the build file's
    commit and revision, and the active engine's policy version (as /readyz names it)."""
    # one declared service that is not there: the gateway serves (not ready) without waiting on a child
    down = {"transport": "http", "url": f"http://127.0.0.1:{free_port()}/mcp"}
    root = write_deployment(tmp_path / "deployment", dev_identity({"services": {"down": down}}), [])
    env = build_files(tmp_path)
    gateway = GatewayProcess(root, env=env)
    try:
        gateway.wait_ready(require_ready=False)
        body = httpx2.get(gateway.admin_base + "/version", timeout=10).json()
        ready = httpx2.get(gateway.admin_base + "/readyz", timeout=10).json()
    finally:
        gateway.stop()
    assert body["sbom_sha256"] == hashlib.sha256(Path(env[build_info.SBOM_ENV]).read_bytes()).hexdigest()
    assert (body["commit"], body["policy_revision"], body["version"]) == ("0123abcd" * 5, "policy-rev-7", __version__)
    assert body["policy_version"] and body["policy_version"] == ready["policy"]["engine_version"]
