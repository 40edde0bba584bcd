"""Fuzz target: the path canonicaliser behind ``within_root`` (:mod:`portcullis.policy.paths`).

``fuzz_one`` builds a path from the bytes (UTF-8, lone surrogates kept), runs the one decision the
gateway, the service kit and the demo files service share, and raises ``AssertionError`` only when
a property breaks: an accepted path must canonicalise under the root by segments, hold no ``..``,
``.`` or empty segment, no separator or lookalike of one, nothing a percent-decoder would change,
and canonicalise to itself again. Any other exception than :class:`PathRefused` is a bug too.
"""

from __future__ import annotations

import posixpath
import unicodedata
from urllib.parse import unquote

from portcullis.policy import path_within_root
from portcullis.policy.paths import PathRefused, canonical_path, canonical_segments

ROOT = "/srv/files"


def fuzz_one(data: bytes) -> None:
    """Check the canonicaliser's invariants on the path spelled by ``data``."""
    path = data.decode("utf-8", "surrogatepass") if _utf8ish(data) else data.decode("latin-1")
    try:
        segments = canonical_segments(path)
    except PathRefused:
        if path_within_root(ROOT, path):
            raise AssertionError("refused by canonical_segments but accepted by path_within_root") from None
        return
    if not path_within_root(ROOT, path):
        raise AssertionError("accepted by canonical_segments but refused by path_within_root")
    joined = posixpath.normpath(posixpath.join(ROOT, *segments))
    if joined != ROOT and not joined.startswith(ROOT + "/"):
        raise AssertionError(f"accepted path leaves the root: {path!r}")
    for segment in segments:
        folded = unicodedata.normalize("NFKC", segment)
        if segment in ("", ".", "..") or "/" in segment or "\\" in segment or "/" in folded or folded in (".", ".."):
            raise AssertionError(f"bad canonical segment {segment!r} from {path!r}")
    canonical = canonical_path(path)
    if unquote(canonical) != canonical:
        raise AssertionError(f"canonical form still decodes: {canonical!r}")
    if canonical_path(canonical) != canonical:
        raise AssertionError(f"canonicalising is not idempotent: {canonical!r}")


def _utf8ish(data: bytes) -> bool:
    try:
        data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return False
    return True
