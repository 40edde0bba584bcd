"""``secret://file/<path>[#field]``: a mounted secret file, whole or one key of its JSON/YAML mapping.

Read at every resolution, so a rotated mount (a Kubernetes Secret volume, an agent's sink file) is
seen by the store's next refresh. The parser's own messages are never passed on: they can quote the file.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from portcullis.config.secret_providers.base import SecretUnavailable, non_empty, pick_field, read_bounded, utf8
from portcullis.config.secrets import SecretRef


class FileProvider:
    def read(self, ref: SecretRef) -> str:
        text = utf8(read_bounded(Path(ref.path)))
        if ref.field is None:
            return non_empty(text.strip())
        try:
            mapping = yaml.safe_load(text)  # JSON is read as the YAML it also is
        except yaml.YAMLError:
            raise SecretUnavailable("the file is not a JSON or YAML mapping") from None
        return pick_field(mapping, ref.field)
