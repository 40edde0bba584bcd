"""What a service is, as far as the gateway can tell: the ``service_identity`` audit record.

Each time a session to a service is (re)established, the connector builds a
:class:`BuildIdentity` and the service's supervisor (:mod:`.registry`) writes it to the audit
trail, durable before the connection serves a call (no record, no calls on that connection).

1. **What the service said** in its handshake (``initialize`` or ``server/discover``):
   ``serverInfo.name`` and ``version`` and the protocol revision of the session. This is
   upstream-controlled text, recorded as data and never trusted: a non-string is ``null``; every
   control, format (bidi, zero-width), surrogate or other invisible character is shown as
   ``\\u{XXXX}`` (:func:`portcullis.text.escape_invisible`, so a NUL or a lone surrogate cannot
   break the record either); the escaped text is cut at :data:`MAX_TEXT_CHARS` (never inside an
   escape), and the names of cut values are listed in ``cut``.
2. **What the gateway ran** (stdio): the executable's resolved path and SHA-256, computed once per
   spawn in a worker thread (:func:`digest_launch`, never on the event loop). A module service
   (``module:``) records its module name; its file is not hashed (finding it would import its
   parent packages into the gateway). A command whose executable is a script interpreter
   (:data:`INTERPRETERS`) also records the first argument that is not an option, when it names a
   regular file (``python -u server.py``, ``node dist/index.js``; nothing after ``-m``, ``-c``
   or ``-e``; a relative path only when the service has a ``cwd``), as ``script`` with its own
   SHA-256.
3. **Where it was reached** (HTTP): the configured URL's origin, ``scheme://host[:port]``; no
   user, password, path, query or fragment.

:class:`IdentityLog` bounds the rate: a service's identity is recorded at each (re)connect,
except when it equals the one recorded for it less than :data:`MIN_REPEAT_S` ago.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from portcullis.text import escape_invisible

IDENTITY_KIND = "service_identity"
MAX_TEXT_CHARS = 256  # of each upstream-reported value, after escaping
MIN_REPEAT_S = 60.0  # an unchanged identity is recorded again at a reconnect at most this often
MAX_HASH_BYTES = 1 << 30  # larger files are named, not hashed ("too_large")
INTERPRETERS = re.compile(r"(python|pypy)[0-9.]*|node(js)?|deno|bun|ruby[0-9.]*|perl[0-9.]*|php[0-9.]*"
                          r"|(ba|da|k|z)?sh")
_NO_SCRIPT = frozenset({"-m", "-c", "-e", "--eval", "--command"})  # what follows is not a file to run
Transport = Literal["stdio", "http"]


@dataclass(frozen=True, slots=True)
class FileDigest:
    """One file the gateway ran: its resolved path and SHA-256, or why there is none."""

    path: str
    sha256: str | None
    error: str | None = None  # "unreadable", "not_a_file" or "too_large" when sha256 is None

    def fields(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, **({"error": self.error} if self.error else {})}


@dataclass(frozen=True, slots=True)
class LaunchDigest:
    """What a stdio spawn ran: the executable, and the script or module it was given."""

    executable: FileDigest
    script: FileDigest | None = None
    module: str | None = None


@dataclass(frozen=True, slots=True)
class BuildIdentity:
    """One service's identity on one connection (the ``service_identity`` record without its name)."""

    transport: Transport
    server_name: str | None
    server_version: str | None
    protocol_version: str | None
    cut: tuple[str, ...] = ()
    launch: LaunchDigest | None = None
    origin: str | None = None

    def fields(self, service: str) -> dict[str, Any]:
        """The record's fields (docs/audit.md, ``service_identity``)."""
        out: dict[str, Any] = {
            "event": "connected", "service": service, "transport": self.transport,
            "server_info": {"name": self.server_name, "version": self.server_version},
            "protocol_version": self.protocol_version}
        if self.cut:
            out["cut"] = list(self.cut)
        if self.launch is not None:
            out["executable"] = self.launch.executable.fields()
            if self.launch.script is not None:
                out["script"] = self.launch.script.fields()
            if self.launch.module is not None:
                out["module"] = self.launch.module
        if self.origin is not None:
            out["origin"] = self.origin
        return out


def shaped(value: object, max_chars: int = MAX_TEXT_CHARS) -> tuple[str | None, bool]:
    """Upstream text as recorded, and whether it was cut: ``None`` for a non-string; invisible
    characters escaped, then cut at ``max_chars`` characters between escapes."""
    if not isinstance(value, str):
        return None, False
    out: list[str] = []
    length = 0
    for char in value:
        piece = escape_invisible(char)
        if length + len(piece) > max_chars:
            return "".join(out), True
        out.append(piece)
        length += len(piece)
    return "".join(out), False


def _info(server_info: object, key: str) -> object:
    if isinstance(server_info, Mapping):
        return server_info.get(key)
    return getattr(server_info, key, None)


def build_identity(transport: Transport, server_info: object, protocol_version: object, *,
                   launch: LaunchDigest | None = None, origin: str | None = None) -> BuildIdentity:
    """Step 1 over a ``serverInfo`` mapping or SDK ``Implementation`` (or ``None``), with steps 2-3's facts."""
    values = {"server_info.name": _info(server_info, "name"), "server_info.version": _info(server_info, "version"),
              "protocol_version": protocol_version}
    shown = {key: shaped(value) for key, value in values.items()}
    return BuildIdentity(transport, shown["server_info.name"][0], shown["server_info.version"][0],
                         shown["protocol_version"][0], tuple(k for k, (_, cut) in shown.items() if cut),
                         launch, origin)


def url_origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: no credentials, path, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme.lower()}://{host}" + ("" if port is None else f":{port}")


def script_argument(argv: Sequence[str]) -> str | None:
    """The script an interpreter in ``argv[0]`` is told to run (step 2), as written, or ``None``."""
    if not argv or not INTERPRETERS.fullmatch(os.path.basename(argv[0])):
        return None
    for arg in argv[1:]:
        if arg in _NO_SCRIPT:
            return None
        if not arg.startswith("-"):
            return arg
    return None


def file_digest(path: str) -> FileDigest:
    """The resolved path and SHA-256 of ``path`` (blocking: call it in a worker thread)."""
    resolved = os.path.realpath(path)
    try:
        with open(resolved, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                return FileDigest(resolved, None, "not_a_file")
            if info.st_size > MAX_HASH_BYTES:
                return FileDigest(resolved, None, "too_large")
            digest = hashlib.file_digest(handle, "sha256")
    except OSError:
        return FileDigest(resolved, None, "unreadable")
    return FileDigest(resolved, digest.hexdigest())


def digest_launch(argv: Sequence[str], cwd: str | None, module: str | None) -> LaunchDigest:
    """Step 2 for one spawn of ``argv`` (``argv[0]`` absolute) started in ``cwd``; blocking."""
    script = None if module is not None else script_argument(argv)
    if script is not None and not os.path.isabs(script):
        script = None if cwd is None else os.path.join(cwd, script)  # no cwd: the child's own /tmp
    script_digest = file_digest(script) if script is not None and os.path.isfile(script) else None
    return LaunchDigest(file_digest(argv[0]), script_digest, module)


class IdentityLog:
    """Whether a service's identity is due to be recorded (per service; the caller passes the time)."""

    def __init__(self, min_repeat_s: float = MIN_REPEAT_S) -> None:
        self._min_repeat_s = min_repeat_s
        self._last: tuple[BuildIdentity, float] | None = None

    def due(self, identity: BuildIdentity, now: float) -> bool:
        """Changed since the last record, or that record is at least ``min_repeat_s`` old."""
        return self._last is None or self._last[0] != identity or now - self._last[1] >= self._min_repeat_s

    def recorded(self, identity: BuildIdentity, now: float) -> None:
        self._last = (identity, now)
