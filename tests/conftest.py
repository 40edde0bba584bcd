"""Suite-wide settings.

Hypothesis: under CI (``CI`` set) property tests are derandomized, so a run is reproducible and a
landing never depends on the luck of a draw; locally they explore fresh examples every run.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
