"""The audit of the audit: reading, exporting or verifying audit data is itself recorded.

Each such request becomes an audit event (category `compliance`) in the reader's own tenant,
committed through the same group committer as every other event, before the response is
sent. Who read what is then part of the same tamper-evident log.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import Request

from reference_impl.core.settings import Settings
from reference_impl.events.validation import PreparedEvent, content_digest, format_timestamp
from reference_impl.integrity import canonicalize
from reference_impl.security.service import Caller

__all__ = ["access_event", "record_access"]

_PURPOSES = {"HOPERAT", "HCOMPL", "HLEGAL", "HSYSADMIN", "TREAT", "PATRQT", "HRESCH", "PUBHLTH"}


def access_event(
    caller: Caller,
    action: str,
    *,
    category: str = "compliance",
    fhir_action: str,
    resource_id: str,
    details: dict[str, Any],
    purpose: str = "HOPERAT",
    correlation_id: str | None = None,
) -> PreparedEvent:
    """The audit event recording one access to audit data."""
    content: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "occurred_at": format_timestamp(datetime.now(UTC)),
        "action": action,
        "category": category,
        "fhir_action": fhir_action,
        "outcome": "success",
        "principal": {
            "id": caller.subject,
            "type": "user" if caller.credential == "jwt" else "service",
            "roles": sorted(str(r) for r in caller.roles),
        },
        "target": {"resource_type": "AuditEvent", "resource_id": resource_id},
        "data_classification": "PHI",
        "purpose_of_use": purpose,
        "details": {k: v for k, v in details.items() if v is not None},
    }
    if correlation_id:
        content["correlation_id"] = correlation_id
    return PreparedEvent(
        event_id=uuid.UUID(content["event_id"]),
        content=content,
        digest=content_digest(canonicalize(content), None),
    )


# --8<-- [start:record-access]
async def record_access(
    request: Request,
    caller: Caller,
    action: str,
    *,
    resource_id: str,
    details: dict[str, Any] | None = None,
    fhir_action: str = "R",
    category: str = "compliance",
) -> None:
    """Record that ``caller`` accessed audit data (or administered the tenant), in the
    caller's tenant, before answering.

    The purpose comes from the optional `X-Purpose-Of-Use` header (an HL7 v3 code;
    `HOPERAT` when absent or unknown).
    """
    from reference_impl.observability.logging import correlation_id

    settings: Settings = request.app.state.settings
    if not settings.record_access:
        return
    purpose = request.headers.get("x-purpose-of-use", "HOPERAT").upper()
    event = access_event(
        caller,
        action,
        category=category,
        fhir_action=fhir_action,
        resource_id=resource_id,
        details=details or {},
        purpose=purpose if purpose in _PURPOSES else "HOPERAT",
        correlation_id=correlation_id.get(),
    )
    await request.app.state.ingest.commit(caller.tenant, [event])


# --8<-- [end:record-access]
