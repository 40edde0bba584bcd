"""What this build is: its commit, the policy revision it shipped with, and the digest of its SBOM.

The container image build (``Dockerfile``) writes ``build.json`` with :func:`main` and the CycloneDX SBOM
of the image's virtual environment next to it; ``GET /version`` on the admin listener and ``portcullis
version --json`` report them (docs/release.md). Both files are read **once** per process
(:func:`current`): a build does not change while it runs.

* ``PORTCULLIS_BUILD_INFO`` names ``build.json`` (default ``/usr/share/portcullis/build.json``):
  ``{"commit": …, "policy_revision": …}``; the version is always the running package's.
* ``PORTCULLIS_SBOM`` names the SBOM (default ``/usr/share/portcullis/sbom.cdx.json``); its SHA-256 is
  reported, so a running replica can be matched to the signed SBOM attestation of its image.

What cannot be read (no file, not JSON, a value that is not a short printable string) is reported as
``null``, never guessed: a development checkout has no build file and says so.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portcullis import __version__

BUILD_INFO_ENV = "PORTCULLIS_BUILD_INFO"
SBOM_ENV = "PORTCULLIS_SBOM"
DEFAULT_BUILD_INFO = "/usr/share/portcullis/build.json"
DEFAULT_SBOM = "/usr/share/portcullis/sbom.cdx.json"
MAX_BUILD_INFO_BYTES = 64 * 1024
# a commit id, a tag or a policy repository revision: printable ASCII without spaces, bounded
_VALUE = re.compile(r"[\x21-\x7e]{1,128}")


@dataclass(frozen=True, slots=True)
class BuildInfo:
    """The running build; ``None`` where it is not known."""

    version: str
    commit: str | None
    policy_revision: str | None
    sbom_sha256: str | None

    def report(self, policy_version: str | None) -> dict[str, Any]:
        """The ``/version`` body; ``policy_version`` is the active engine's (it changes on a policy reload)."""
        return {"version": self.version, "commit": self.commit, "policy_version": policy_version or None,
                "policy_revision": self.policy_revision, "sbom_sha256": self.sbom_sha256}


def _value(raw: object) -> str | None:
    return raw if isinstance(raw, str) and _VALUE.fullmatch(raw) else None


def _read_build_file(path: Path) -> Mapping[str, Any]:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BUILD_INFO_BYTES + 1)
        parsed = json.loads(data) if len(data) <= MAX_BUILD_INFO_BYTES else None
    except (OSError, ValueError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _sha256(path: Path) -> str | None:
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return None


def load(environ: Mapping[str, str] = os.environ) -> BuildInfo:
    """Read the build file and hash the SBOM named by ``environ`` (or the image's default paths)."""
    fields = _read_build_file(Path(environ.get(BUILD_INFO_ENV) or DEFAULT_BUILD_INFO))
    return BuildInfo(version=__version__, commit=_value(fields.get("commit")),
                     policy_revision=_value(fields.get("policy_revision")),
                     sbom_sha256=_sha256(Path(environ.get(SBOM_ENV) or DEFAULT_SBOM)))


@functools.cache
def current() -> BuildInfo:
    """This process's build, read on first use."""
    return load()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m portcullis.build_info --commit C --policy-revision R --output build.json`` (image builds)."""
    parser = argparse.ArgumentParser(prog="python -m portcullis.build_info", description=main.__doc__)
    parser.add_argument("--commit", default="")
    parser.add_argument("--policy-revision", default="")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    fields = {"version": __version__, "commit": args.commit, "policy_revision": args.policy_revision}
    for name in ("commit", "policy_revision"):
        if fields[name] and _value(fields[name]) is None:
            parser.error(f"--{name.replace('_', '-')}: printable ASCII without spaces, at most 128 characters")
    body = {name: value or None for name, value in fields.items()}
    args.output.write_text(json.dumps(body, sort_keys=True) + "\n", encoding="ascii")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
