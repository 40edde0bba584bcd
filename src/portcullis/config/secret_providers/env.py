"""``secret://env/NAME``: a variable of the gateway's environment, read at every resolution."""

from __future__ import annotations

import os
from collections.abc import Mapping

from portcullis.config.secret_providers.base import SecretUnavailable, non_empty
from portcullis.config.secrets import SecretRef


class EnvProvider:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ  # None: the process's live environment

    def read(self, ref: SecretRef) -> str:
        value = (os.environ if self._environ is None else self._environ).get(ref.path)
        if value is None:
            raise SecretUnavailable("the environment variable is not set")
        return non_empty(value)
