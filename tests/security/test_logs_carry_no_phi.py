"""No secret and no PHI reaches a log line, whatever the request does.

The suite's typical requests (valid, invalid, conflicting, queued, read, exported, failed
authentication) are sent with marked PHI values, with every logger of the service at DEBUG;
then every captured line is searched for the marks.
"""

from __future__ import annotations

import io
import logging

import pytest
import structlog

from reference_impl.core.settings import Settings
from reference_impl.observability.logging import configure_logging
from tests.conftest import new_tenant
from tests.support.apps import app_with
from tests.support.events import make_event
from tests.support.workers import drain, running_worker

pytestmark = pytest.mark.integration

MARKS = {
    "name": "PHI-NAME-Ramona-Quinterro",
    "mrn": "PHI-MRN-55119-0423",
    "ip": "198.51.100.231",
    "diagnosis": "PHI-DX-F32.2-severe-depression",
    "agent": "PHI-UA-Mozilla-patient-portal",
}


def _phi_event(**overrides: object) -> dict[str, object]:
    event = make_event(
        target={
            "resource_type": "Patient",
            "resource_id": MARKS["mrn"],
            "subject_id": MARKS["mrn"],
        },
        session={"session_id": "s-phi", "ip_address": MARKS["ip"], "user_agent": MARKS["agent"]},
        details={"patient_name": MARKS["name"], "diagnosis": MARKS["diagnosis"]},
        outcome_description=f"viewed chart of {MARKS['name']}",
    )
    event.update(overrides)
    return event


async def test_no_phi_or_secret_in_any_log_line(settings: Settings) -> None:
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    configure_logging("DEBUG", json=True)
    root = logging.getLogger()
    root.addHandler(handler)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sink))
    try:
        async with app_with(settings, record_access=True) as (app, client):
            tenant = await new_tenant(app, "phi")
            headers = {**tenant.headers, "X-Correlation-ID": "phi-check"}
            good = _phi_event()
            await client.post("/v1/events", json=good, headers=headers)
            await client.post("/v1/events", json=good, headers=headers)  # retry
            await client.post("/v1/events", json={**good, "outcome": "failure"}, headers=headers)
            await client.post("/v1/events", json=_phi_event(outcome="maybe"), headers=headers)
            await client.post(
                "/v1/events",
                json=_phi_event(details={"deep": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {
                    "h": MARKS["name"]}}}}}}}}}),
                headers=headers,
            )  # fmt: skip
            await client.post("/v1/events?mode=async", json=_phi_event(), headers=headers)
            async with running_worker(settings, "w-phi") as worker:
                await drain(worker)
            await client.get(f"/v1/events?subject_id={MARKS['mrn']}", headers=headers)
            await client.get(f"/v1/events/{good['event_id']}", headers=headers)
            await client.get("/v1/events/export?decrypt=true", headers=headers)
            await client.get("/v1/integrity/verify", headers=headers)
            await client.post("/v1/events", json=good, headers={"X-API-Key": tenant.key + "x"})
            await client.post("/v1/events", json=good)
    finally:
        root.removeHandler(handler)
        configure_logging("INFO", json=False)
    lines = sink.getvalue()
    assert "phi-check" in lines, "the capture saw the requests' log lines"
    for what, mark in MARKS.items():
        assert mark not in lines, f"{what} leaked into the logs"
    secret = tenant.key.split("_", 2)[2]
    assert secret not in lines, "an API key secret leaked into the logs"
