"""The sandbox's pure parts: spec validation, the bwrap command line, status parsing, classification."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from portcullis.kits.code import tenant_key
from portcullis.kits.sandbox import (
    Bind,
    Limits,
    SandboxHost,
    SandboxSpec,
    SandboxSpecError,
    build_argv,
    bwrap_options,
    classify,
    compile_filter,
    detect_host,
    launch_argv,
    limit_args,
    options_fd,
)
from portcullis.kits.sandbox.run import parse_status

HOST = SandboxHost()
PY = ("/usr/bin/python3", "-I", "-S", "-c", "print(1)")


def _argv(**kw: object) -> list[str]:
    """bwrap's options as they are read from its descriptor, then its command line's command part."""
    spec = SandboxSpec(argv=PY, **kw)  # type: ignore[arg-type]
    command = build_argv(spec, HOST, args_fd=5)
    assert command[:3] == [HOST.bwrap, "--args", "5"]
    return [*bwrap_options(spec, HOST, seccomp_fd=7, status_fd=8), *command[3:]]


def _pairs(argv: list[str], flag: str) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a == flag]


def test_argv_confines_by_default() -> None:
    """Every namespace, no further user namespaces, no capabilities, no inherited environment."""
    argv = _argv()
    head = argv[: argv.index("--")]
    for flag in ("--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
                 "--clearenv"):
        assert flag in head
    assert "--share-net" not in head
    assert head[head.index("--cap-drop") + 1] == "ALL"
    assert head[head.index("--seccomp") + 1] == "7" and head[head.index("--json-status-fd") + 1] == "8"
    assert ("/usr", "/usr") in _pairs(argv, "--ro-bind")
    assert "--bind" not in head  # nothing writable unless declared
    remounts = [head[i + 1] for i, a in enumerate(head) if a == "--remount-ro"]
    assert remounts == ["/dev", "/"]  # bwrap's own unbounded tmpfs root and /dev end read-only
    assert [head[i + 2] for i, a in enumerate(head) if a == "--size"] == ["--tmpfs", "--tmpfs"]
    assert argv[-len(PY):] == list(PY)


def test_argv_shares_network_only_when_asked() -> None:
    """``network: shared`` is the only way to keep the host's network namespace."""
    assert "--share-net" in _argv(network="shared")


def test_argv_applies_limits_inside_the_namespace() -> None:
    """prlimit runs after bwrap (inside the user namespace) and before the child's argv."""
    argv = _argv(limits=Limits(cpu_s=3, memory_bytes=1 << 28, max_processes=9, max_open_files=20, max_file_bytes=99))
    tail = argv[argv.index("--") + 1:]
    assert tail[0] == HOST.prlimit
    assert tail[1:8] == ["--cpu=3:4", f"--as={1 << 28}", "--nproc=9", "--nofile=20", "--fsize=99", "--core=0", "--"]


def test_argv_binds_and_environment_are_exactly_the_declared_ones() -> None:
    """Declared binds, scratch at /scratch as the working directory, env only by --setenv."""
    argv = _argv(ro_binds=(Bind("/data/in", "/in"),), rw_binds=(Bind("/data/out", "/out"),),
                 scratch="/var/scratch/abc", env=(("LANG", "C.UTF-8"),))
    assert ("/data/in", "/in") in _pairs(argv, "--ro-bind")
    assert _pairs(argv, "--bind") == [("/data/out", "/out"), ("/var/scratch/abc", "/scratch")]
    assert argv[argv.index("--chdir") + 1] == "/scratch"
    assert _pairs(argv, "--setenv") == [("LANG", "C.UTF-8")]


def test_the_command_line_holds_no_option_and_no_environment_value() -> None:
    """bwrap's command line is ``--args FD``, prlimit's limits and the child's argv: the options, the
    environment among them, are read from the descriptor (every local user can read a command line)."""
    spec = SandboxSpec(argv=PY, env=(("API_KEY", "canary-value-1f9e"),), ro_binds=(Bind("/data/in", "/in"),))
    argv = build_argv(spec, HOST, args_fd=11)
    assert argv == [HOST.bwrap, "--args", "11", "--", HOST.prlimit, *limit_args(spec.limits), "--", *PY]
    fd = options_fd(bwrap_options(spec, HOST, seccomp_fd=7))
    try:
        data = os.read(fd, 1 << 20)
    finally:
        os.close(fd)
    assert data.split(b"\0")[:-1] == [os.fsencode(o) for o in bwrap_options(spec, HOST, seccomp_fd=7)]
    assert data.endswith(b"\0") and b"canary-value-1f9e" in data


@pytest.mark.parametrize("options", [["--setenv", "A", "x\x00--bind"], ["--ro-bind\x00/", "/x"]])
def test_an_option_with_a_nul_is_never_split_into_two(options: list[str]) -> None:
    """A NUL inside an option would make bwrap read two options from one: refused."""
    with pytest.raises(SandboxSpecError):
        options_fd(options)


def test_launch_argv_opens_the_filter_and_drops_root() -> None:
    """The self-contained form: sh opens the filter on fd 9, setpriv drops to the host id, then bwrap."""
    argv = launch_argv(SandboxSpec(argv=PY), HOST, seccomp_file="/run/f.bpf", as_root=True)
    assert argv[:2] == ["/bin/sh", "-c"] and argv[3] == "/run/f.bpf"
    assert argv[4] == "/usr/bin/setpriv" and f"--reuid={HOST.host_uid}" in argv and "--clear-groups" in argv
    assert argv[argv.index(HOST.bwrap):][argv[argv.index(HOST.bwrap):].index("--seccomp") + 1] == "9"
    assert "/usr/bin/setpriv" not in launch_argv(SandboxSpec(argv=PY), HOST, seccomp_file="/f", as_root=False)


def test_launch_argv_refuses_an_environment() -> None:
    """launch_argv has no descriptor for bwrap's options: an environment would be on its command line."""
    with pytest.raises(SandboxSpecError):
        launch_argv(SandboxSpec(argv=PY, env=(("API_KEY", "x"),)), HOST, seccomp_file="/f", as_root=False)


BAD_SPECS = [
    ({"argv": ()}, "empty argv"),
    ({"argv": ("python3",)}, "relative program"),
    ({"argv": ("/usr/bin/python3", "a\x00b")}, "NUL in argv"),
    ({"env": (("LD_PRELOAD=x", "1"),)}, "= in name"),
    ({"env": (("1X", "1"),)}, "name starts with a digit"),
    ({"env": (("A", "x\x00y"),)}, "NUL in value"),
    ({"env": (("A", "1"), ("A", "2"))}, "duplicate name"),
    ({"scratch": "relative/dir"}, "relative scratch"),
    ({"scratch": "/a/../etc"}, "dot-dot scratch"),
    ({"network": "host"}, "unknown network"),
    ({"ro_binds": (Bind("/a", "/x"), Bind("/b", "/x"))}, "two binds on one destination"),
]


@pytest.mark.parametrize(("kw", "why"), BAD_SPECS, ids=[w for _, w in BAD_SPECS])
def test_spec_refuses(kw: dict[str, object], why: str) -> None:
    """Malformed or unsafe specs never reach a command line."""
    args: dict[str, object] = {"argv": PY, **kw}
    with pytest.raises(SandboxSpecError):
        SandboxSpec(**args)  # type: ignore[arg-type]


BAD_BINDS = [("/etc", "/usr"), ("/etc", "/usr/lib/x"), ("/etc", "/proc"), ("/etc", "/dev/shm"), ("/etc", "/"),
             ("/etc", "/tmp"), ("/etc", "/scratch"), ("etc", "/x"), ("/etc", "x"), ("/etc/../root", "/x"),
             ("/etc/", "/x"), ("/e\x00", "/x")]


@pytest.mark.parametrize(("source", "dest"), BAD_BINDS)
def test_bind_refuses_reserved_or_malformed(source: str, dest: str) -> None:
    """A bind may not shadow the system view, nor use relative, dot-dot or NUL paths."""
    with pytest.raises(SandboxSpecError):
        Bind(source, dest)


@pytest.mark.parametrize("kw", [{"cpu_s": 0}, {"memory_bytes": -1}, {"max_processes": True}, {"wall_s": 0},
                                {"max_open_files": 3}, {"max_output_bytes": 1.5}])
def test_limits_refuse_nonsense(kw: dict[str, object]) -> None:
    """Zero, negative, boolean and fractional limits are refused."""
    with pytest.raises(SandboxSpecError):
        Limits(**kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("exit_code", "killed", "expected"), [
    (0, None, None), (1, None, None), (128 + 24, None, "cpu"), (128 + 9, None, "cpu"),
    (None, "wall", "wall"), (None, "output", "output"), (152, "output", "output"),
])
def test_classify(exit_code: int | None, killed: str | None, expected: str | None) -> None:
    """Our own kill names the limit; otherwise SIGXCPU/SIGKILL of the child mean the CPU limit."""
    assert classify(exit_code, killed) == expected  # type: ignore[arg-type]


def test_parse_status_needs_an_exit_record() -> None:
    """Only bwrap's ``exit-code`` record counts; a child-pid record alone means setup failed."""
    assert parse_status(b'{ "child-pid": 5 }\n{ "exit-code": 3 }\n') == 3
    assert parse_status(b'{ "child-pid": 5 }\n') is None
    assert parse_status(b"garbage\n[1]\n") is None


def test_seccomp_filter_compiles_per_network() -> None:
    """Both filters compile to whole BPF instructions, and they differ."""
    none, shared = compile_filter("none"), compile_filter("shared")
    assert none and len(none) % 8 == 0 and len(shared) % 8 == 0 and none != shared


def test_detect_host_binds_real_dirs_and_links_merged_ones(tmp_path: Path) -> None:
    """A merged-/usr layout becomes symlinks; a real /lib64 directory is bound read-only."""
    (tmp_path / "usr" / "bin").mkdir(parents=True)
    os.symlink("usr/bin", tmp_path / "bin")
    (tmp_path / "lib64").mkdir()
    host = detect_host(root=str(tmp_path))
    assert ("usr/bin", "/bin") in host.symlinks and "/lib64" in host.system_ro


@pytest.mark.parametrize("tenant", ["acme", "../../etc", "a/b", "\u00e9t\u00e9", "x" * 10_000, "\ud800"])
def test_tenant_key_is_a_fixed_hex_name(tenant: str) -> None:
    """Any tenant id becomes 32 hex characters: never a path, never the raw id."""
    key = tenant_key(tenant)
    assert len(key) == 32 and all(c in "0123456789abcdef" for c in key)


def test_tenant_key_refuses_empty() -> None:
    """An empty tenant id is a programming error, not a shared directory."""
    with pytest.raises(SandboxSpecError):
        tenant_key("")
