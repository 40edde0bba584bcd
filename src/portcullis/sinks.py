"""Where data of a classification may go, and whether a tool may use the response cache.

Two pure decisions, free of configuration imports so that the configuration model (the manifest
validator run by both ``serve`` and ``lint``) and the pipeline share them:

- :func:`sink_allowed` — may data of ``classification`` be written to ``sink``? Today one sink is
  decided here, ``"cache"`` (the gateway's response cache): Restricted never; every other class
  may, subject to the gateway's ``response_cache.classifications``. Issue 12's classification work
  adds a general sink table with a function of the same shape; the cache then calls that one
  (see docs/decisions.md, "Response cache").
- :func:`cache_refusal` — why a tool's manifest may not declare ``cache`` (``None``: it may).
"""

from __future__ import annotations

CACHE_SINK = "cache"
_NEVER_CACHED = frozenset({"Restricted"})
_KNOWN_SINKS = frozenset({CACHE_SINK})


def sink_allowed(classification: str, sink: str) -> bool:
    """Whether data classified ``classification`` may be written to ``sink``. An unknown sink or an
    unknown class is refused (fail closed)."""
    if sink not in _KNOWN_SINKS or classification not in ("Public", "Internal", "Confidential", "Restricted"):
        return False
    return classification not in _NEVER_CACHED


def cache_refusal(read_only_hint: bool | None, output_classification: str) -> str | None:
    """Why a tool with these annotations and this output class may not be cached; ``None`` if it may.

    Only a tool its manifest declares read-only (``readOnlyHint: true``, not merely absent) may be
    answered from a cache: serving a stored answer to a call with side effects would skip them.
    """
    if read_only_hint is not True:
        return "only a tool with annotations.readOnlyHint: true may be cached"
    if not sink_allowed(output_classification, CACHE_SINK):
        return f"{output_classification} output is never cached"
    return None
