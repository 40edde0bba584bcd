"""The requester's recent decided calls of a tool, from the audit trail: context for an approver.

Built once by the composition root over an :class:`~portcullis.audit.reader.AuditReader` opener (the SQLite
file read-only, or the cluster's PostgreSQL store in READ ONLY transactions), so approvers see the same
history in embedded and cluster mode. The same agent's (else user's, else client's) ``decision`` records of
the tool in the last day, from the same issuer when the requester names one ("billing-bot" asserted by
another issuer is another caller); newest first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from portcullis.approvals.service import RecentCalls
from portcullis.audit.query import AuditQuery
from portcullis.audit.reader import AuditReader

DAY_S = 86400.0


def audit_recent_calls(open_reader: Callable[[], AbstractAsyncContextManager[AuditReader]],
                       clock: Callable[[], float]) -> RecentCalls:
    """A :data:`RecentCalls` reading the audit trail through ``open_reader``."""

    async def recent_calls(tool: str, requester: Mapping[str, Any], limit: int) -> list[dict[str, Any]]:
        who = next(((name, requester[name]) for name in ("agent_id", "user_id", "client_id")
                    if isinstance(requester.get(name), str)), None)
        if who is None:
            return []
        source = {"issuer_name": requester["issuer_name"]} if isinstance(requester.get("issuer_name"), str) else {}
        query = AuditQuery(tool=tool, principal={who[0]: who[1], **source}, kind="decision",
                           since=clock() - DAY_S, limit=limit)
        async with open_reader() as reader:
            records = await reader.search(query)
        return [{"at": record.ts, "request_id": record.request_id,
                 "effect": record.fields.get("decision", {}).get("effect"),
                 "arguments": record.fields.get("arguments")} for record in records]

    return recent_calls
