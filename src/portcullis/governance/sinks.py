"""Allowed sinks per data class, and where a Restricted result may go.

``governance.sinks`` maps each class (Public, Internal, Confidential, Restricted) to the sinks its
data may reach (:class:`~portcullis.config.model.Sink`): the caller, the audit trail in clear,
the SIEM export in clear, the response cache, approval views, logs. A class not listed reaches
none. Enforced today: ``caller`` (a tool whose output class lacks it is refused before it is
forwarded), ``audit``/``siem`` (a tool whose *input* class lacks either has every argument value
keyed-hashed in its records), ``approval_view`` (likewise in a held call's stored approval), and the
environment rule below; the response cache asks :func:`sink_allowed` before it stores.

"Restricted never leaves its environment": a tool's environment is the environment of the gateway
that serves it (``authorization.environment``); a caller is in it when its verified principal has
the attribute ``environment`` (from a token claim the identity configuration maps) equal to it.
A caller without the attribute, or from another environment, never gets a Restricted result: the
call is refused before anything is forwarded (:func:`restricted_refusal`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from portcullis.config.model import Classification, GovernanceConfig, Sink, ToolManifest
from portcullis.identity.principal import Principal

ENVIRONMENT_ATTRIBUTE = "environment"
RESTRICTED_RULE_ID = "content.restricted_environment"
SINK_RULE_ID = "content.sink"
_DEFAULTS = GovernanceConfig().sinks


def sink_allowed(classification: Classification | str, sink: Sink | str,
                 sinks: Mapping[Classification, Sequence[Sink]] | None = None) -> bool:
    """Whether data of ``classification`` may reach ``sink`` under ``sinks`` (default: the defaults).
    An unknown class or sink is never allowed (fail closed)."""
    try:
        level, target = Classification(classification), Sink(sink)
    except ValueError:
        return False
    return target in (_DEFAULTS if sinks is None else sinks).get(level, ())


def restricted_refusal(manifest: ToolManifest, principal: Principal, environment: str,
                       sinks: Mapping[Classification, Sequence[Sink]]) -> str | None:
    """Why ``principal`` may not receive this tool's result here, or None. Pure."""
    output = manifest.classification.output
    if not sink_allowed(output, Sink.CALLER, sinks):
        return SINK_RULE_ID
    if output is Classification.RESTRICTED and principal.attributes.get(ENVIRONMENT_ATTRIBUTE) != environment:
        return RESTRICTED_RULE_ID
    return None


def arguments_in_clear(manifest: ToolManifest, sinks: Mapping[Classification, Sequence[Sink]]) -> bool:
    """Whether the audit trail (and so the SIEM export) may hold this tool's argument values in clear."""
    level = manifest.classification.input
    return sink_allowed(level, Sink.AUDIT, sinks) and sink_allowed(level, Sink.SIEM, sinks)
