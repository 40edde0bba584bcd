"""The sandbox's errors, a branch of the one tree in :mod:`portcullis.errors`.

::

    PortcullisError
    └── SandboxError              the sandbox refused to run something
        ├── SandboxSpecError        the spec itself is unsafe or malformed (a programming error)
        └── SandboxUnavailable      the host cannot confine a child right now (bwrap missing or
                                    failing, namespaces or seccomp refused): fail closed, never
                                    run unconfined

Messages are fixed short strings; ``detail`` (operator log only) never carries host paths raw.
"""

from __future__ import annotations

from portcullis.errors import PortcullisError


class SandboxError(PortcullisError):
    """Base of the sandbox's refusals."""

    message = "sandbox error"


class SandboxSpecError(SandboxError):
    """A spec that the builder will not turn into a command line."""

    message = "invalid sandbox spec"


class SandboxUnavailable(SandboxError):
    """The confinement could not be set up; nothing ran."""

    message = "sandbox unavailable"
