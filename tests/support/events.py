"""Valid audit events for tests, with overrides."""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["make_event"]

_BASE: dict[str, Any] = {
    "action": "fhir.patient.read",
    "category": "data_access",
    "fhir_action": "R",
    "outcome": "success",
    "principal": {"id": "dr.alice", "type": "user", "roles": ["physician"]},
    "target": {"resource_type": "Patient", "resource_id": "pat-1", "subject_id": "pat-1"},
    "data_classification": "PHI",
    "purpose_of_use": "TREAT",
    "session": {"session_id": "s-1", "ip_address": "10.0.0.7", "user_agent": "EHR/1.0"},
    "correlation_id": "corr-1",
    "details": {"reason": "scheduled visit"},
}


def make_event(**overrides: Any) -> dict[str, Any]:
    """A valid event with a fresh `event_id` and `occurred_at` a second ago."""
    event = copy.deepcopy(_BASE)
    event["event_id"] = str(uuid.uuid4())
    event["occurred_at"] = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    for key, value in overrides.items():
        if value is None:
            event.pop(key, None)
        else:
            event[key] = value
    return event
