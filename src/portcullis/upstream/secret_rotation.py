"""A stdio child's secrets follow a rotation: the child spawned with a changed value is restarted.

A child reads its environment once, so the new value of a ``secret://`` reference in its ``env`` reaches
it only through a new spawn (which resolves the references again, upstream/sdk_client.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from portcullis.config.model import ServiceConfig, StdioService
from portcullis.config.secrets import SecretRef, is_reference, parse_ref
from portcullis.upstream.registry import UpstreamRegistry


def rotation_recycler(upstreams: UpstreamRegistry,
                      services: Mapping[str, ServiceConfig]) -> Callable[[SecretRef], None]:
    """A secret store subscriber: recycles each stdio service whose ``env`` reads the changed reference."""
    readers = {name: frozenset(str(parse_ref(value)) for value in cfg.env.values() if is_reference(value))
               for name, cfg in services.items() if isinstance(cfg, StdioService)}

    def changed(ref: SecretRef) -> None:
        for handle in upstreams.handles():
            if str(ref) in readers.get(handle.name, ()):
                handle.recycle()

    return changed
