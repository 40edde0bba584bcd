"""Every console page module's ``register(app)``: the one list :func:`~portcullis.console.build.build_console`
walks. A new page module adds its function here (one line each)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from portcullis.console import (
    approvals_pages,
    audit_pages,
    containment_pages,
    live_pages,
    policy_pages,
    policy_replay_pages,
)

if TYPE_CHECKING:
    from portcullis.console.app import ConsoleApp

PAGES: list[Callable[[ConsoleApp], None]] = [
    approvals_pages.register,
    audit_pages.register,
    containment_pages.register,
    policy_pages.register,
    policy_replay_pages.register,
    live_pages.register,
]
