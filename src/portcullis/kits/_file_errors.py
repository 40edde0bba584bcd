"""The file kit's one error tree: a closed set of reasons, each with a fixed short message.

::

    FileKitError          reason: one of REASONS
    ├── FileRefused       the request itself is refused (path, rules, link, kind, size, exists, text)
    └── FileUnavailable   the file system cannot serve it (missing, permission, root, I/O)

Messages never name the root or echo the caller's path; ``errno`` values from the kernel are
translated here and nowhere else.
"""

from __future__ import annotations

import errno
from typing import Literal, get_args

Reason = Literal["bad_path", "not_allowed", "link", "hard_link", "not_regular", "not_directory", "too_large",
                 "exists", "not_text", "not_found", "permission", "unavailable", "io"]
REASONS: frozenset[str] = frozenset(get_args(Reason))
_MESSAGES: dict[str, str] = {
    "bad_path": "invalid path", "not_allowed": "path not allowed", "link": "symbolic links are not allowed",
    "hard_link": "hard-linked files are not allowed", "not_regular": "not a regular file",
    "not_directory": "not a directory", "too_large": "file too large", "exists": "file already exists",
    "not_text": "file is not valid UTF-8 text", "not_found": "not found", "permission": "permission denied",
    "unavailable": "file root unavailable", "io": "cannot open path"}
# The canonicaliser's reasons worded for a caller (a closed set, so still fixed strings).
_PATH_MESSAGES = {"empty": "path must not be empty", "too long": "path too long",
                  "absolute": "absolute paths are not allowed", "home-relative": "home-relative paths are not allowed",
                  "outside the root": "path outside the allowed root"}
_REFUSED = frozenset({"bad_path", "not_allowed", "link", "hard_link", "not_regular", "not_directory", "too_large",
                      "exists", "not_text"})
_ERRNO: dict[int, Reason] = {errno.ELOOP: "link", errno.EXDEV: "link", errno.EMLINK: "link",
                             errno.ENOENT: "not_found", errno.ENOTDIR: "not_directory", errno.EISDIR: "not_regular",
                             errno.ENXIO: "not_regular", errno.EOPNOTSUPP: "not_regular", errno.EACCES: "permission",
                             errno.EPERM: "permission", errno.ENAMETOOLONG: "bad_path", errno.EEXIST: "exists"}


class FileKitError(Exception):
    """A refused or failed file request; ``reason`` is one of :data:`REASONS`, the message is fixed."""

    def __init__(self, reason: Reason, message: str | None = None) -> None:
        super().__init__(message or _MESSAGES[reason])
        self.reason: Reason = reason


class FileRefused(FileKitError):
    """The request itself is refused: its path, the rules, a link, the file's kind or size."""


class FileUnavailable(FileKitError):
    """The file system cannot serve the request: missing, not permitted, root or kernel unavailable."""


def error(reason: Reason, message: str | None = None) -> FileKitError:
    """The error for ``reason``, of the subclass its kind belongs to."""
    return (FileRefused if reason in _REFUSED else FileUnavailable)(reason, message)


def os_error(exc: OSError) -> FileKitError:
    """The kernel's refusal as a kit error (an unlisted errno is the generic ``io``)."""
    return error(_ERRNO.get(exc.errno or 0, "io"))


def path_error(reason: str) -> FileKitError:
    """The canonicaliser's refusal ``reason`` as a ``bad_path`` error worded for the caller."""
    return error("bad_path", _PATH_MESSAGES.get(reason))
