"""Tenant isolation of results: a result tagged with a tenant reaches only that tenant.

A result is tagged in either or both of two ways:

1. the upstream puts ``_meta["io.portcullis/tenant"]`` on its ``CallToolResult`` (the forwarder
   reads it before it drops the upstream's ``_meta``; the caller never sees it);
2. the manifest names ``output_tenant_pointer``, an RFC 6901 pointer into ``structuredContent``.

The rule, checked on the way back before the result reaches the caller (:func:`tenant_refusal`):

* every tag present must be a string equal, code point for code point, to the caller's verified
  ``principal.tenant``. No folding: ``ACME``, a fullwidth ``\uff41cme`` or ``acme`` with a zero-width
  space are *other* tenants here, since the gateway cannot know how the upstream compares them;
  the strict reading is the one that never releases data to a look-alike;
* a caller without a tenant gets no tagged result;
* a declared pointer with nothing (or no string) at it withholds the result (fail closed): the
  tool promised a tag, so a missing one is a fault, not a public result;
* a malformed tag (not a string, over 256 characters) withholds the result.

A withheld result is never sent, logged or recorded; the caller gets
:class:`~portcullis.errors.GovernanceWithheld` and the outcome record says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from portcullis.policy.native import POINTER_MISSING, resolve_pointer

TENANT_META = "io.portcullis/tenant"
MISMATCH = "tenant_mismatch"
MISSING = "tenant_tag_missing"
MALFORMED = "tenant_tag_malformed"
MAX_TENANT_CHARS = 256


def meta_tenant(raw: Any) -> Any:
    """The upstream's tenant tag on a raw ``CallToolResult`` (``_meta``), or :data:`None` when absent."""
    meta = raw.get("_meta") if isinstance(raw, Mapping) else None
    return meta.get(TENANT_META) if isinstance(meta, Mapping) else None


def tenant_refusal(*, caller_tenant: str | None, meta_tag: Any, structured: Any, pointer: str | None) -> str | None:
    """Why the result may not go to a caller of ``caller_tenant`` (a reason code), or None. Pure."""
    tags = [] if meta_tag is None else [meta_tag]
    if pointer is not None:
        found = resolve_pointer(structured, pointer)
        if found is POINTER_MISSING or found is None:
            return MISSING
        tags.append(found)
    for tag in tags:
        if not isinstance(tag, str) or not 0 < len(tag) <= MAX_TENANT_CHARS:
            return MALFORMED
        if caller_tenant is None or tag != caller_tenant:
            return MISMATCH
    return None
