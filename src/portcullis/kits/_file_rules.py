"""What a file kit may touch: allow-lists for reads and writes, a deny-list that wins, and limits."""

from __future__ import annotations

from dataclasses import dataclass, field

from portcullis.kits import _globs


@dataclass(frozen=True)
class FileRules:
    """What a kit may touch. Patterns are globs over the canonical relative path (see :mod:`._globs`)."""

    read: tuple[str, ...] = ("**",)
    write: tuple[str, ...] = ()  # no writes unless allowed
    deny: tuple[str, ...] = ()  # wins over read and write; also hides what it matches from listings
    max_read_bytes: int = 1024 * 1024
    max_write_bytes: int = 1024 * 1024
    max_entries: int = 1000
    file_mode: int = 0o640  # of written files, before the umask
    _compiled: tuple[tuple[tuple[str, ...], ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if min(self.max_read_bytes, self.max_write_bytes, self.max_entries) < 1:
            raise ValueError("file kit limits must be positive")
        if not 0 <= self.file_mode <= 0o777:
            raise ValueError("file_mode is a permission mode (0 to 0o777)")
        compiled = tuple(tuple(_globs.check_pattern(p) for p in group) for group in (self.read, self.write, self.deny))
        object.__setattr__(self, "_compiled", compiled)

    def may_read(self, segments: tuple[str, ...]) -> bool:
        """True if the rules let a file at ``segments`` be read."""
        read, _, deny = self._compiled
        return not _globs.denied(deny, segments) and _globs.matches_any(read, segments)

    def may_list(self, segments: tuple[str, ...]) -> bool:
        """True if the directory at ``segments`` is readable or on the way to something readable."""
        read, _, deny = self._compiled
        return not _globs.denied(deny, segments) and _globs.leads_to_any(read, segments)

    def may_write(self, segments: tuple[str, ...]) -> bool:
        """True if the rules let a file at ``segments`` be written."""
        _, write, deny = self._compiled
        return not _globs.denied(deny, segments) and _globs.matches_any(write, segments)
