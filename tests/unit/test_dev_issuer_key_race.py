"""Processes sharing a state directory end up with one development key, whoever creates it first."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from portcullis.identity import dev_issuer
from portcullis.identity.minting import jwk_thumbprint, public_jwk
from portcullis.identity.state_dir import create_private_once, write_private


def _thumb(state_dir: Path) -> str:
    return jwk_thumbprint(public_jwk(dev_issuer._load_or_create_key(state_dir)))


def test_a_creator_that_lost_the_race_reads_the_winners_key(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Both processes saw no key and both generated one: the second must not replace the first."""
    first = _thumb(tmp_path)
    monkeypatch.setattr(Path, "exists", lambda self: False)  # as if the check ran before the first write
    assert _thumb(tmp_path) == first


def test_concurrent_processes_agree_on_one_key(tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; from portcullis.identity import dev_issuer as d; "
            "from portcullis.identity.minting import jwk_thumbprint, public_jwk; "
            "print(jwk_thumbprint(public_jwk(d._load_or_create_key(Path(sys.argv[1])))))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
             for _ in range(6)]
    thumbs = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert thumbs == {_thumb(tmp_path)}
    assert [p.name for p in tmp_path.iterdir()] == ["dev-issuer-key.pem"]  # no temporary file left behind


def test_create_once_keeps_the_first_content_and_owner_only_mode(tmp_path: Path) -> None:
    target = tmp_path / "k"
    assert create_private_once(target, b"first")
    assert not create_private_once(target, b"second")
    assert target.read_bytes() == b"first"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    write_private(target, b"third")
    assert target.read_bytes() == b"third" and stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"]


def test_create_once_does_not_follow_a_planted_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"untouched")
    target = tmp_path / "k"
    target.symlink_to(outside)
    assert not create_private_once(target, b"key")
    assert outside.read_bytes() == b"untouched"
