"""Demo file service: read-only access to one directory tree, done carefully.

Run it with ``python -m portcullis.demo.services.files``; it speaks MCP over stdio and, being a
service kit app (:mod:`portcullis.service`), serves only calls carrying a gateway-minted actor
token: started without the gateway's trust variables it refuses to start. The root is
``$PORTCULLIS_DEMO_FILES_ROOT`` when set, else the bundled ``demo/data/files``. A path is a
relative, '/'-separated name under the root. All file access goes through the file kit
(:mod:`portcullis.kits.files`), read-only: the path is judged by the same function as the
gateway's ``within_root`` policy, and only its canonical segments are opened, relative to the
root's descriptor with no link followed at any component (``openat2`` or an ``O_NOFOLLOW`` walk),
so a link swapped in at any moment is refused. Also refused: hard-linked files, non-regular files
and files over 256 KiB. Error messages are fixed short strings that never reveal where the root is.
"""

from __future__ import annotations

import os
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
from portcullis.kits.files import FileKit, FileKitError, FileRules, canonical
from portcullis.service import GatewayTokenVerifier, ServiceApp

ROOT_ENV = "PORTCULLIS_DEMO_FILES_ROOT"
MAX_READ_BYTES = 256 * 1024
MAX_ENTRIES = 1000
RULES = FileRules(read=("**",), max_read_bytes=MAX_READ_BYTES, max_entries=MAX_ENTRIES)  # read-only: no write rule

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
    return Path(configured) if configured else Path(str(resources.files("portcullis.demo") / "data" / "files"))


def _parts(path: str) -> tuple[str, ...]:
    """The canonical components of a caller's path (the gateway's ``within_root`` decision), or refuse it."""
    try:
        return canonical(path)
    except FileKitError as refused:
        raise ToolError(str(refused)) from None


@contextmanager
def _kit() -> Iterator[FileKit]:
    """The file kit over the configured root; its fixed refusals become tool errors."""
    try:
        with FileKit(_root(), RULES) as kit:
            yield kit
    except FileKitError as refused:
        raise ToolError(str(refused)) from None


def read_file(path: str) -> FileContent:
    """Read a UTF-8 text file (at most 256 KiB) by its path relative to the shared folder."""
    parts = _parts(path)  # judged before the root is touched
    with _kit() as kit:
        text = kit.read_text(path)
    return FileContent(path="/".join(parts), size=len(text.encode("utf-8")), content=text)


def list_dir(path: str = ".") -> DirListing:
    """List a directory of the shared folder ('.' is the top): names, types and file sizes."""
    _parts(path)  # judged before the root is touched
    with _kit() as kit:
        listing = kit.list_dir(path)
    entries = [DirEntry(name=e.name, type=e.kind, size=e.size) for e in listing.entries]
    return DirListing(path=listing.path, entries=entries, truncated=listing.truncated)


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
