"""Approval requests the gateway makes itself: a proposed containment waits for a person.

An alert rule whose containment is ``mode: proposed`` (docs/alerts.md) asks for a kill switch through
the same :class:`~portcullis.approvals.service.ApprovalService` path a held call takes: an approval for
the synthetic tool :data:`KILL_SWITCH_TOOL` with the arguments ``{kind, target, reason}``, requested by
:data:`ALERTS`, so the notice, signed links, quorum, expiry and audit records are the ones approvers
already use. When it is approved, the service *executes* it once (``approved`` → ``executed`` through the
store's transition) by the action registered for the tool; a client's call never does (see below).

:data:`ALERTS` is a principal no credential yields: the issuer ``portcullis://internal`` and the
authentication method ``internal`` come from no token or certificate the authenticator verifies. It is
not a person (it names an agent), so it can never approve anything, and its user id makes a person of
the same name "the requester" as well. An approval it requested is never bound to a client's call
(:func:`made_by_gateway`): redeeming one answers the same ``ApprovalInvalid`` as a wrong id, even for a
deployment whose own service happens to expose a tool of the same name; and an approval of that name
requested by anyone else is never executed by the gateway.
"""

from __future__ import annotations

from portcullis.approvals.model import Approval, identity_key
from portcullis.identity.principal import Principal

SYSTEM_NAME = "portcullis-alerts"
KILL_SWITCH_TOOL = "portcullis.kill_switch"
#: the ``policy_version`` of a gateway-made approval: no policy version has this form (the request is the
#: alert rule's, not a policy's), so no decision ever matches it either
POLICY_MARKER = "portcullis:containment"
RULE_ID = "alerts/containment"

ALERTS = Principal(client_id=SYSTEM_NAME, user_id=SYSTEM_NAME, agent_id=SYSTEM_NAME, auth_method="internal",
                   issuer="portcullis://internal")
ALERTS_KEY = identity_key(ALERTS)


def made_by_gateway(approval: Approval) -> bool:
    """Whether ``approval`` is one of the gateway's own requests (never a client call's)."""
    return approval.requester_key == ALERTS_KEY and approval.policy_version == POLICY_MARKER
