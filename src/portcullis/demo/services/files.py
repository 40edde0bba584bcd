"""Demo file service: read-only access to one directory tree, done carefully.

Run it with ``python -m portcullis.demo.services.files``; it speaks MCP over stdio and, being a
service kit app (:mod:`portcullis.service`), serves only calls carrying a gateway-minted actor
token: started without the gateway's trust variables it refuses to start. The root is
``$PORTCULLIS_DEMO_FILES_ROOT`` when set, else the bundled ``demo/data/files``. A path is a
relative, '/'-separated name under the root, judged by the same function as the gateway's
``within_root`` policy (:func:`portcullis.policy.paths.canonical_segments`: no decoding; control
and lookalike characters, percent escapes, absolute paths, '~', ':' and backslashes refused;
'..' may not climb above the root), and only its canonical segments are opened. Also refused:
anything that resolves outside the root, symbolic links anywhere along the way, non-regular
files and files over 256 KiB. The final open walks the tree one component at a time with
``O_NOFOLLOW`` relative to the parent's descriptor, so a link swapped in after the checks is
still refused. Error messages are fixed short strings that never reveal where the root is.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from mcp.server.mcpserver import UserMessage
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import Completion, ToolAnnotations
from pydantic import BaseModel

from portcullis.demo.services._common import new_service, serve
from portcullis.policy.paths import PathRefused, canonical_segments
from portcullis.service import GatewayTokenVerifier, ServiceApp

ROOT_ENV = "PORTCULLIS_DEMO_FILES_ROOT"
MAX_READ_BYTES = 256 * 1024
MAX_ENTRIES = 1000
_REFUSALS = {"empty": "path must not be empty", "too long": "path too long",
             "absolute": "absolute paths are not allowed", "home-relative": "home-relative paths are not allowed",
             "outside the root": "path outside the allowed root"}
_SUPPORTED = os.open in os.supports_dir_fd and hasattr(os, "O_NOFOLLOW") and hasattr(os, "O_DIRECTORY")
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_FILE_FLAGS = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)

READ_ONLY = ToolAnnotations(readOnlyHint=True, destructiveHint=False, idempotentHint=True, openWorldHint=False)
SERVICE = "files"
INSTRUCTIONS = "Demo file service: read-only access to a shared folder."


class FileContent(BaseModel):
    """The text of one file."""

    path: str
    size: int
    content: str


class DirEntry(BaseModel):
    """One entry of a directory listing (symbolic links are never listed)."""

    name: str
    type: Literal["file", "dir"]
    size: int | None


class DirListing(BaseModel):
    """The entries of one directory, sorted by name."""

    path: str
    entries: list[DirEntry]
    truncated: bool


def _root() -> Path:
    configured = os.environ.get(ROOT_ENV)
    base = Path(configured) if configured else Path(str(resources.files("portcullis.demo") / "data" / "files"))
    try:
        root = base.resolve(strict=True)
    except (OSError, RuntimeError):
        raise ToolError("file root unavailable") from None
    if not root.is_dir():
        raise ToolError("file root unavailable")
    return root


def _parts(path: str) -> tuple[str, ...]:
    """The canonical components of a caller's path (the gateway's ``within_root`` decision), or refuse it."""
    try:
        return canonical_segments(path)
    except PathRefused as refused:
        raise ToolError(_REFUSALS.get(refused.reason, "invalid path")) from None


def _check_inside(root: Path, parts: tuple[str, ...]) -> None:
    """Refuse a path that does not exist or resolves to somewhere outside the root."""
    try:
        resolved = root.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError):
        raise ToolError("not found") from None
    if not resolved.is_relative_to(root):
        raise ToolError("path outside the allowed root")


def _refusal(exc: OSError) -> ToolError:
    if exc.errno in (errno.ELOOP, errno.EMLINK):
        return ToolError("symbolic links are not allowed")
    if exc.errno == errno.ENOENT:
        return ToolError("not found")
    if exc.errno == errno.ENOTDIR:
        return ToolError("not a directory")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return ToolError("permission denied")
    return ToolError("cannot open path")


def _open_at(name: str, flags: int, dir_fd: int) -> int:
    """Open one component relative to its parent, refusing a symbolic link."""
    try:
        if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            raise ToolError("symbolic links are not allowed")
        return os.open(name, flags | _NOFOLLOW, dir_fd=dir_fd)
    except OSError as exc:
        raise _refusal(exc) from None


@contextmanager
def _walk(root: Path, parts: tuple[str, ...]) -> Iterator[int]:
    """Yield a descriptor of the directory ``root/parts``, reached without following any link."""
    if not _SUPPORTED:
        raise ToolError("unsupported platform")
    try:
        fd = os.open(root, _DIR_FLAGS)
    except OSError:
        raise ToolError("file root unavailable") from None
    try:
        for name in parts:
            child = _open_at(name, _DIR_FLAGS, fd)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def read_file(path: str) -> FileContent:
    """Read a UTF-8 text file (at most 256 KiB) by its path relative to the shared folder."""
    parts = _parts(path)
    root = _root()
    _check_inside(root, parts)
    if not parts:
        raise ToolError("not a regular file")
    with _walk(root, parts[:-1]) as parent:
        fd = _open_at(parts[-1], _FILE_FLAGS, parent)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ToolError("not a regular file")
        if info.st_size > MAX_READ_BYTES:
            raise ToolError("file too large")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(MAX_READ_BYTES + 1)
    if len(data) > MAX_READ_BYTES:
        raise ToolError("file too large")
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise ToolError("file is not valid UTF-8 text") from None
    return FileContent(path="/".join(parts), size=len(data), content=text)


def list_dir(path: str = ".") -> DirListing:
    """List a directory of the shared folder ('.' is the top): names, types and file sizes."""
    parts = _parts(path)
    root = _root()
    _check_inside(root, parts)
    entries: list[DirEntry] = []
    with _walk(root, parts) as fd, os.scandir(fd) as scan:
        for entry in scan:
            try:
                entry.name.encode("utf-8")
                if entry.is_symlink():
                    continue
                if entry.is_dir(follow_symlinks=False):
                    entries.append(DirEntry(name=entry.name, type="dir", size=None))
                elif entry.is_file(follow_symlinks=False):
                    size = entry.stat(follow_symlinks=False).st_size
                    entries.append(DirEntry(name=entry.name, type="file", size=size))
            except (OSError, UnicodeEncodeError):
                continue
    entries.sort(key=lambda e: e.name)
    return DirListing(path="/".join(parts) or ".", entries=entries[:MAX_ENTRIES], truncated=len(entries) > MAX_ENTRIES)


def handbook_index() -> str:
    """The staff handbook's topics, one per line (a resource: ``handbook://index``)."""
    listing = list_dir("handbook")
    return "\n".join(e.name.removesuffix(".txt") for e in listing.entries if e.name.endswith(".txt"))


def handbook_page(topic: str) -> str:
    """One handbook page by topic (a resource template: ``handbook://pages/{topic}``), with the same
    path checks as ``read_file``."""
    return read_file(f"handbook/{topic}.txt").content


def summarize_file(path: str) -> list[UserMessage]:
    """A prompt that asks for a short summary of one file of the shared folder, the file's text included."""
    text = read_file(path).content
    return [UserMessage(f"Summarize this file ({path}) in three bullet points for a new colleague:\n\n{text}")]


async def complete(ref: Any, argument: Any, context: Any) -> Completion | None:
    """Completions: handbook topics for ``handbook://pages/{topic}``, file paths for ``summarize_file(path)``
    (the names that start with what was typed, at most 20)."""
    typed = str(argument.value)
    if getattr(ref, "uri", None) == "handbook://pages/{topic}" and argument.name == "topic":
        names = handbook_index().splitlines()
    elif getattr(ref, "name", None) == "summarize_file" and argument.name == "path":
        folder, _, _ = typed.rpartition("/")
        try:
            listing = list_dir(folder or ".")  # the same path checks as the tool
        except ToolError:
            return Completion(values=[])
        names = [f"{folder}/{e.name}" if folder else e.name for e in listing.entries]
    else:
        return None
    matches = [name for name in names if name.startswith(typed)]
    return Completion(values=matches[:20], total=len(matches), has_more=len(matches) > 20)


def build_server(verifier: GatewayTokenVerifier) -> ServiceApp:
    """The file service, accepting only calls whose actor token ``verifier`` accepts."""
    app = new_service(SERVICE, verifier, instructions=INSTRUCTIONS)
    app.add_tool(read_file, annotations=READ_ONLY)
    app.add_tool(list_dir, annotations=READ_ONLY)
    app.resource("handbook://index", name="handbook-index", description="The staff handbook's topics, one per line.",
                 mime_type="text/plain")(handbook_index)
    app.resource("handbook://pages/{topic}", name="handbook-page",
                 description="One page of the staff handbook, by topic.", mime_type="text/plain")(handbook_page)
    app.prompt(name="summarize_file", description="Ask for a short summary of one file of the shared folder.")(
        summarize_file)
    app.completion()(complete)  # type: ignore[no-untyped-call]  # the SDK decorator is unannotated
    return app


def main() -> None:
    """Serve over stdio, trusting the gateway named in the environment; refuse to start without it."""
    serve(SERVICE, build_server)


if __name__ == "__main__":
    main()
