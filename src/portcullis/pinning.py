"""Tool-definition pinning: a stable hash of what an upstream says a tool is.

The hash covers the fields a rug pull would change — name, description, input and output
schemas, annotations — in canonical JSON (sorted keys, no insignificant whitespace, UTF-8), so
the same definition always hashes the same whatever order the upstream serialises it in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

_PINNED_FIELDS = ("name", "description", "inputSchema", "outputSchema", "annotations")


def canonical_json(value: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, compact separators, UTF-8, NaN refused."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def pinned_view(tool: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a wire-format tool definition that the pin covers (absent/None fields dropped)."""
    view = {key: tool[key] for key in _PINNED_FIELDS if tool.get(key) is not None}
    annotations = view.get("annotations")
    if isinstance(annotations, Mapping):
        view["annotations"] = {k: v for k, v in annotations.items() if v is not None}
        if not view["annotations"]:
            del view["annotations"]
    return view


def definition_hash(tool: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of a wire-format tool definition (camelCase keys, as in ``tools/list``)."""
    return "sha256:" + hashlib.sha256(canonical_json(pinned_view(tool))).hexdigest()


# What a resource, a resource template and a prompt pin covers (``size`` is left out: it follows the content).
SURFACE_FIELDS = {
    "resource": ("uri", "name", "title", "description", "mimeType", "annotations", "icons"),
    "template": ("uriTemplate", "name", "title", "description", "mimeType", "annotations", "icons"),
    "prompt": ("name", "title", "description", "arguments", "icons"),
}


def surface_hash(kind: str, definition: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of a wire-format resource (``kind`` ``resource``), resource template (``template``) or
    prompt (``prompt``) definition, as its list method returns it."""
    view = {key: definition[key] for key in SURFACE_FIELDS[kind] if definition.get(key) is not None}
    return "sha256:" + hashlib.sha256(canonical_json({"kind": kind, **view})).hexdigest()
