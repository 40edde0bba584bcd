"""The confinement of stdio services, as values: the ``sandbox:`` settings, the computed file view,
the spawn audit record's fields, and lint's warnings for the ``unsafe_…`` settings."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from portcullis.config.loader import lint_deployment
from portcullis.config.model import StdioService
from portcullis.config.stdio_sandbox import unseen_path_arguments
from portcullis.upstream.confinement import confinement_for, log_fields, spawn_fields
from portcullis.upstream.pids_cgroup import PidsCgroups
from portcullis.upstream.stdio_view import PythonLayout, ViewInputs, ViewPath, file_view
from portcullis.upstream.stdio_view_inputs import command_dirs


def _service(**sandbox: Any) -> StdioService:
    return StdioService(transport="stdio", module="portcullis.demo.services.billing", sandbox=sandbox)


def test_confinement_is_on_by_default() -> None:
    """A stdio service with no sandbox section is confined: no network, limits, no unsafe flag."""
    box = _service().sandbox
    assert (box.unsafe_no_sandbox, box.unsafe_host_network, box.unsafe_flags()) == (False, False, ())
    assert box.memory_mb > 0 and box.max_processes > 0 and box.max_open_files > 0


@pytest.mark.parametrize(("sandbox", "why"), [
    ({"read_only_paths": ["relative/path"]}, "relative"),
    ({"read_only_paths": ["/data/../etc"]}, "dot-dot"),
    ({"read_only_paths": ["/data/./x"]}, "dot"),
    ({"read_only_paths": ["/data\x00/x"]}, "NUL"),
    ({"read_only_paths": ["/data\n/x"]}, "newline"),
    ({"read_only_paths": ["/"]}, "the whole host"),
    ({"writable_paths": ["/"]}, "root writable"),
    ({"writable_paths": ["/etc"]}, "etc writable"),
    ({"writable_paths": ["/proc"]}, "proc writable"),
    ({"writable_paths": ["/usr/"]}, "usr writable, trailing slash"),
    ({"writable_paths": ["//usr"]}, "usr writable, doubled slash"),
    ({"read_only_paths": ["/srv/a"], "writable_paths": ["/srv/a"]}, "both"),
    ({"unsafe_no_sandbox": "yes"}, "a string for a flag"),
    ({"unsafe_no_sandbox": 1}, "an integer for a flag"),
    ({"network": "host"}, "unknown key"),
    ({"memory_mb": 0}, "no memory"),
    ({"max_processes": 0}, "no processes"),
])
def test_unsafe_or_malformed_sandbox_settings_are_refused(sandbox: dict[str, Any], why: str) -> None:
    """Settings that would widen the view past what is meant, or are malformed, do not load."""
    with pytest.raises(ValidationError):
        _service(**sandbox)


def test_declared_paths_are_normalised() -> None:
    """Doubled and trailing slashes are removed, so the same path is always spelled one way."""
    box = _service(read_only_paths=["//srv//data/"], writable_paths=["/var/lib/svc/"]).sandbox
    assert (box.read_only_paths, box.writable_paths) == (("/srv/data",), ("/var/lib/svc",))


def _inputs(**overrides: Any) -> ViewInputs:
    values: dict[str, Any] = {"python": None, "package_dirs": (), "command_dirs": (), "cwd": None,
                              "policy_tools_dir": None, "read_only": (), "writable": ()}
    return ViewInputs(**(values | overrides))


def test_module_view_is_the_interpreter_and_the_package() -> None:
    """A module: service sees the interpreter's prefixes and its package's directory, read-only."""
    layout = PythonLayout(prefixes=("/opt/py", "/srv/app/.venv"), executable_dirs=("/srv/app/.venv/bin",))
    view = file_view(_inputs(python=layout, package_dirs=("/srv/app/src/pkg",), policy_tools_dir="/etc-x/d/tools"))
    assert view == (ViewPath("/opt/py", False, "interpreter"), ViewPath("/etc-x/d/tools", False, "policy"),
                    ViewPath("/srv/app/.venv", False, "interpreter"), ViewPath("/srv/app/src/pkg", False, "package"))


def test_paths_inside_a_read_only_path_are_not_repeated() -> None:
    """The venv's bin and a package inside site-packages are already visible through the venv."""
    layout = PythonLayout(prefixes=("/v",), executable_dirs=("/v/bin",))
    view = file_view(_inputs(python=layout, package_dirs=("/v/lib/site-packages/pkg",), read_only=("/v",)))
    assert view == (ViewPath("/v", False, "interpreter"),)


def test_nested_paths_are_ordered_parents_first() -> None:
    """A writable directory inside a read-only one is bound after it (on top), and the reverse."""
    view = file_view(_inputs(read_only=("/srv/data", "/srv/out/config"), writable=("/srv/data/cache", "/srv/out")))
    assert [(v.path, v.writable) for v in view] == [
        ("/srv/data", False), ("/srv/out", True), ("/srv/data/cache", True), ("/srv/out/config", False)]


def test_a_writable_cwd_is_not_also_read_only() -> None:
    """A cwd listed in writable_paths is bound once, writable."""
    view = file_view(_inputs(cwd="/srv/work", writable=("/srv/work",)))
    assert view == (ViewPath("/srv/work", True, "declared"),)


def test_command_view_is_its_installation_prefix(tmp_path: Path) -> None:
    """<prefix>/bin/tool is given <prefix> (its libraries sit next to bin/); a tool elsewhere its directory."""
    (tmp_path / "node" / "bin").mkdir(parents=True)
    (tmp_path / "node" / "bin" / "node").touch()
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "server").touch()
    assert command_dirs(str(tmp_path / "node" / "bin" / "node")) == (str(tmp_path / "node"),)
    assert command_dirs(str(tmp_path / "tools" / "server")) == (str(tmp_path / "tools"),)


def test_spawn_record_names_the_confinement_but_no_environment_value() -> None:
    """The spawn record carries the backend, network, view, limits and the names of the variables only."""
    cfg = _service(writable_paths=["/srv/out"], max_processes=8)
    view = (ViewPath("/srv/out", True, "declared"),)
    c = confinement_for("billing", cfg, view, {"API_TOKEN": "s3cr3t-value", "PORTCULLIS_GATEWAY_JWKS": "{}"})
    fields = spawn_fields(c)
    assert fields["confinement"] == {
        "backend": "bubblewrap", "network": "none", "unsafe": [],
        "view": [{"path": "/srv/out", "mode": "rw", "origin": "declared"}],
        "limits": {"memory_mb": 4096, "max_processes": 8, "max_open_files": 256, "cpu_s": None,
                   "max_file_mb": 1024, "tmp_mb": 64}}
    assert fields["env_names"] == ["API_TOKEN", "PORTCULLIS_GATEWAY_JWKS"]
    assert "s3cr3t-value" not in repr(fields) and "s3cr3t-value" not in repr(log_fields(c))


@pytest.mark.parametrize(("sandbox", "backend", "network", "unsafe"), [
    ({}, "bubblewrap", "none", []),
    ({"unsafe_host_network": True}, "bubblewrap", "host", ["unsafe_host_network"]),
    ({"unsafe_no_sandbox": True}, "none", "host", ["unsafe_no_sandbox"]),
])
def test_unsafe_settings_show_in_the_spawn_record(sandbox: dict[str, Any], backend: str, network: str,
                                                  unsafe: list[str]) -> None:
    """Every weakening is named in the record; unconfined means no view and no limits."""
    fields = spawn_fields(confinement_for("svc", _service(**sandbox), (ViewPath("/x", False, "cwd"),), {}))
    confinement = fields["confinement"]
    assert (confinement["backend"], confinement["network"], confinement["unsafe"]) == (backend, network, unsafe)
    if backend == "none":
        assert confinement["view"] == [] and confinement["limits"] is None


def test_lint_warns_about_each_unsafe_setting_at_its_line(tmp_path: Path) -> None:
    """unsafe_no_sandbox and unsafe_host_network are warnings (not errors), each at its own line."""
    (tmp_path / "gateway.yaml").write_text(
        "version: 1\n"
        "identity:\n  allow_insecure_dev_issuer: true\n"
        "services:\n"
        "  raw:\n    transport: stdio\n    command: /bin/cat\n    sandbox:\n      unsafe_no_sandbox: true\n"
        "  net:\n    transport: stdio\n    command: /bin/cat\n    sandbox:\n      unsafe_host_network: true\n")
    found = sorted((p.line, p.severity, p.message.split(":")[0]) for p in lint_deployment(tmp_path)
                   if "unsafe_" in p.message)
    assert found == [(9, "warning", "services.raw.sandbox.unsafe_no_sandbox"),
                     (14, "warning", "services.net.sandbox.unsafe_host_network")]


def test_a_command_in_a_top_level_bin_is_given_its_directory_not_the_host(tmp_path: Path) -> None:
    """/bin/cat's prefix would be '/': it is given /bin (and /usr, where the link leads), never '/'."""
    dirs = command_dirs("/bin/cat")
    assert "/" not in dirs and "/bin" in dirs


def test_leftover_cgroups_of_a_stopped_gateway_are_removed_and_a_running_ones_kept(tmp_path: Path) -> None:
    """A cgroup a dead gateway left is removed when the next gateway starts; this gateway's are not touched."""
    proc = subprocess.Popen(["/bin/true"])  # a pid that has exited (and is very unlikely reused at once)
    proc.wait()
    (tmp_path / f"portcullis-{proc.pid}-svc-1").mkdir()
    (tmp_path / f"portcullis-{os.getpid()}-kept-1").mkdir()
    (tmp_path / "other-cgroup").mkdir()
    cgroups = PidsCgroups(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other-cgroup", f"portcullis-{os.getpid()}-kept-1"]
    procs = cgroups.create("svc", 8)
    assert Path(procs).parent.is_dir() and (Path(procs).parent / "pids.max").read_text() == "8"


@pytest.mark.parametrize(("args", "cwd", "sandbox", "unseen"), [
    (("/opt/srv/dist/index.js", "stdio"), None, {}, [0]),  # node's script, not declared: it would not start
    (("/opt/srv/dist/index.js",), None, {"read_only_paths": ["/opt/srv"]}, []),
    (("/srv/app/server.py",), "/srv/app", {}, []),  # inside its cwd
    (("/usr/share/app/main.js", "-c", "/etc/app.conf"), None, {}, [2]),  # /usr is visible, /etc is not
    (("/tmp/socket-of-the-host",), None, {}, [0]),  # the child's /tmp is its own
    (("-m", "pkg", "--root=/data"), None, {}, []),  # only whole arguments that are paths
    (("/opt/srv/index.js",), None, {"unsafe_no_sandbox": True}, []),
])
def test_path_arguments_the_child_will_not_see_are_found(args: tuple[str, ...], cwd: str | None,
                                                         sandbox: dict[str, Any], unseen: list[int]) -> None:
    """A script or file named by an absolute path outside the declared view is reported (lint and serve warn)."""
    assert unseen_path_arguments(args, cwd, _service(**sandbox).sandbox) == unseen


def test_lint_warns_about_an_undeclared_script_argument(tmp_path: Path) -> None:
    """`command: node` with its script outside the view is a warning at the argument's line."""
    (tmp_path / "gateway.yaml").write_text(
        "version: 1\nidentity:\n  allow_insecure_dev_issuer: true\nservices:\n"
        "  srv:\n    transport: stdio\n    command: /usr/bin/node\n    args:\n      - /opt/srv/index.js\n")
    found = [(p.line, p.severity) for p in lint_deployment(tmp_path) if "args[0]" in p.message]
    assert found == [(9, "warning")]


@pytest.mark.parametrize("cwd", ["/", "/tmp"])
def test_a_cwd_of_root_or_tmp_is_the_sandboxs_own(cwd: str) -> None:
    """cwd '/' would show the whole host, '/tmp' the host's /tmp: neither is bound, the child starts in its own."""
    assert file_view(_inputs(cwd=cwd)) == ()
