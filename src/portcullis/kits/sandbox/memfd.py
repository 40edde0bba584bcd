"""In-memory files bwrap reads on a passed descriptor: its seccomp filter and its options.

What goes through one never appears on a command line (``/proc/<pid>/cmdline`` and ``ps`` show
every local user a process's arguments); ``/proc/<pid>/fd/N`` is open only to bwrap's own user.
"""

from __future__ import annotations

import os


def memory_fd(name: str, data: bytes) -> int:
    """A close-on-exec in-memory file holding ``data``, positioned at 0 (pass it with ``pass_fds``)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        os.close(fd)
        raise
    return fd
