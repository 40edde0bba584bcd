"""Where data of a class may go: the one decision "may data of class C reach sink S".

Configuration-free at run time (it imports nothing of ``portcullis`` outside this module), so the
configuration model — the manifest validator that ``serve`` and ``lint`` both run — and the
pipeline share it without an import cycle: :mod:`portcullis.config.model` takes :class:`Sink` and
:data:`DEFAULT_SINKS` from here for ``governance.sinks``, and :func:`cache_refusal` for a manifest's
``cache`` key.

``governance.sinks`` maps each class (Public, Internal, Confidential, Restricted) to the sinks its
data may reach: the caller, the audit trail in clear, the SIEM export in clear, the response cache,
approval views, operator logs. A class not listed reaches none. Enforced: ``caller`` (a tool whose
output class lacks it is refused before it is forwarded), ``audit``/``siem`` (a tool whose *input*
class lacks either has every argument value keyed-hashed in its records), ``approval_view``
(likewise in a held call's stored approval), ``cache`` (the response cache asks
:func:`sink_allowed` before it stores; Restricted never, whatever the table says), ``logs`` (log
lines about a call of a tool whose input or output class lacks it carry no value of it:
:func:`values_in_logs`), and the environment rule below.

"Restricted never leaves its environment": a tool's environment is the environment of the gateway
that serves it (``authorization.environment``); a caller is in it when its verified principal has
the attribute ``environment`` (from a token claim the identity configuration maps) equal to it.
A caller without the attribute, or from another environment, never gets a Restricted result: the
call is refused before anything is forwarded (:func:`restricted_refusal`), and the tool is not
listed to it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: importing these at run time would make config.model import itself
    from portcullis.config.model import ToolManifest
    from portcullis.identity.principal import Principal


class Sink(StrEnum):
    """Where data of a class may go (``governance.sinks``; :mod:`portcullis.governance.sinks`)."""

    CALLER = "caller"  # the result returned to the caller (Restricted: only inside the gateway's environment)
    AUDIT = "audit"  # argument values in clear in the audit trail (else keyed hashes only)
    SIEM = "siem"  # argument values in clear in records exported to SIEMs (needs ``audit``: the same records)
    CACHE = "cache"  # the response cache may hold the result
    APPROVAL_VIEW = "approval_view"  # argument values in clear in approval views and notifications
    LOGS = "logs"  # values in operator log lines (arguments, results, upstream stderr, error details)


CLASSES = ("Public", "Internal", "Confidential", "Restricted")  # least to most sensitive
RESTRICTED = "Restricted"
CACHE_SINK = Sink.CACHE
# The defaults of ``governance.sinks``: Public and Internal everywhere; Confidential not in logs;
# Restricted only to the caller (inside the environment) and approval views.
DEFAULT_SINKS: Mapping[str, tuple[Sink, ...]] = {
    "Public": tuple(Sink), "Internal": tuple(Sink),
    "Confidential": (Sink.CALLER, Sink.AUDIT, Sink.SIEM, Sink.CACHE, Sink.APPROVAL_VIEW),
    "Restricted": (Sink.CALLER, Sink.APPROVAL_VIEW),
}
_SINKS = frozenset(Sink)
_NEVER = {RESTRICTED: frozenset({Sink.CACHE})}  # whatever a configuration says

ENVIRONMENT_ATTRIBUTE = "environment"
RESTRICTED_RULE_ID = "content.restricted_environment"
SINK_RULE_ID = "content.sink"

SinkTable = Mapping[Any, Sequence[str]]  # class -> sinks; keys are class names or config's Classification (a StrEnum)


def sink_allowed(classification: str, sink: str, sinks: SinkTable | None = None) -> bool:
    """Whether data of ``classification`` may reach ``sink`` under ``sinks`` (default: the defaults).
    An unknown class or sink (mis-cased included) is never allowed (fail closed); Restricted data
    never reaches the cache, whatever ``sinks`` says."""
    if classification not in CLASSES or sink not in _SINKS:
        return False
    if sink in _NEVER.get(classification, ()):
        return False
    table = DEFAULT_SINKS if sinks is None else sinks
    return sink in table.get(classification, ())


def cache_refusal(read_only_hint: bool | None, output_classification: str) -> str | None:
    """Why a tool with these annotations and this output class may not be cached; ``None`` if it may.

    Only a tool its manifest declares read-only (``readOnlyHint: true``, not merely absent) may be
    answered from a cache: serving a stored answer to a call with side effects would skip them.
    """
    if read_only_hint is not True:
        return "only a tool with annotations.readOnlyHint: true may be cached"
    if not sink_allowed(output_classification, CACHE_SINK):  # the defaults: the gateway's table may narrow them
        return f"{output_classification} output is never cached"
    return None


def restricted_refusal(manifest: ToolManifest, principal: Principal, environment: str,
                       sinks: SinkTable) -> str | None:
    """Why ``principal`` may not receive this tool's result here, or None. Pure."""
    output = str(manifest.classification.output)
    if not sink_allowed(output, Sink.CALLER, sinks):
        return SINK_RULE_ID
    if outside_environment(output, principal.attributes, environment):
        return RESTRICTED_RULE_ID
    return None


def outside_environment(output_classification: str, attributes: Mapping[str, str], environment: str) -> bool:
    """Whether a caller with these verified principal ``attributes`` is outside ``environment`` for a tool
    whose output is ``output_classification``: only Restricted output stays in its environment. Such a
    tool is hidden from the caller like a tool its policy never admits (not listed; a call is answered
    as for an unknown tool). Pure."""
    return output_classification == RESTRICTED and attributes.get(ENVIRONMENT_ATTRIBUTE) != environment


def arguments_in_clear(manifest: ToolManifest, sinks: SinkTable) -> bool:
    """Whether the audit trail (and so the SIEM export) may hold this tool's argument values in clear."""
    level = str(manifest.classification.input)
    return sink_allowed(level, Sink.AUDIT, sinks) and sink_allowed(level, Sink.SIEM, sinks)


def values_in_logs(manifest: ToolManifest, sinks: SinkTable | None = None) -> bool:
    """Whether operator log lines about a call of this tool may carry its values (arguments, result,
    upstream stderr, error details): both its input and its output class must reach ``logs``."""
    return (sink_allowed(str(manifest.classification.input), Sink.LOGS, sinks)
            and sink_allowed(str(manifest.classification.output), Sink.LOGS, sinks))


def services_withholding_logs(manifests: Iterable[ToolManifest], sinks: SinkTable | None = None) -> frozenset[str]:
    """The services serving a tool whose values may not reach logs: their stderr is logged value-free
    (a line on stderr cannot be told apart by call, so the whole service is treated as the tool)."""
    return frozenset(m.service for m in manifests if not values_in_logs(m, sinks))


_WITHHELD_MARK = "_portcullis_log_values_withheld"


def mark_values_withheld(exc: BaseException) -> None:
    """Mark an exception raised by a call of a tool whose values may not reach logs: whoever logs it
    logs its type only (its message or traceback could quote a value)."""
    try:
        setattr(exc, _WITHHELD_MARK, True)
    except AttributeError:  # an exception type without a __dict__: cannot be marked
        pass


def values_withheld(exc: BaseException) -> bool:
    """Whether :func:`mark_values_withheld` marked ``exc``."""
    return getattr(exc, _WITHHELD_MARK, False) is True


def logs_hash_key(audit_key: bytes) -> bytes:
    """The key of the keyed hashes in value-free log lines: derived from the gateway's audit HMAC key,
    used for nothing else."""
    return hmac.new(audit_key, b"portcullis/logs/withheld", hashlib.sha256).digest()
