"""Audit events for load: valid, varied enough for every query filter to select something.

Shared by the Locust scenarios and the benchmark harness, and free of Locust imports so that
tests and the harness can use it in an ordinary Python process.

The spread of values is fixed (seeded), so a run can be repeated: a few hundred principals,
tens of thousands of data subjects, a handful of actions per category, mostly successful
outcomes. Query scenarios pick their filter values from the same tables.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

__all__ = [
    "ACTIONS",
    "CATEGORIES",
    "CLASSIFICATIONS",
    "OUTCOMES",
    "BurstBodies",
    "EventFactory",
    "principal_of",
    "subject_of",
]

# (action, category, FHIR action): the shapes of events an EHR sends most.
ACTIONS: tuple[tuple[str, str, str], ...] = (
    ("fhir.patient.read", "data_access", "R"),
    ("fhir.patient.search", "data_access", "E"),
    ("fhir.observation.read", "data_access", "R"),
    ("fhir.observation.create", "data_access", "C"),
    ("fhir.medication_request.update", "data_access", "U"),
    ("auth.login", "authentication", "E"),
    ("auth.logout", "authentication", "E"),
    ("authz.deny", "authorization", "E"),
    ("admin.user.update", "administration", "U"),
    ("system.backup.run", "system", "E"),
)
CATEGORIES = tuple(sorted({c for _, c, _ in ACTIONS}))
OUTCOMES = ("success", "failure", "attempt")
CLASSIFICATIONS = ("PUBLIC", "INTERNAL", "CONFIDENTIAL", "PHI")
PRINCIPALS = 500
SUBJECTS = 50_000


def principal_of(i: int) -> str:
    """The id of principal number ``i``."""
    return f"user-{i % PRINCIPALS:04d}"


def subject_of(i: int) -> str:
    """The id of data subject number ``i``."""
    return f"pat-{i % SUBJECTS:06d}"


class EventFactory:
    """Makes events from a seeded generator.

    Args:
        seed: Seed of the value choices (event ids are always fresh UUIDs).
        with_ip: Include `session.ip_address`, which the service encrypts by default.
    """

    def __init__(self, seed: int = 7, *, with_ip: bool = True) -> None:
        self.random = random.Random(seed)  # noqa: S311 - load shape, not secrets
        self.with_ip = with_ip

    def event(self, now: datetime | None = None) -> dict[str, Any]:
        """One valid event with a fresh `event_id`, occurred up to a minute before ``now``."""
        r = self.random
        action, category, fhir_action = ACTIONS[r.randrange(len(ACTIONS))]
        outcome = "success" if r.random() < 0.9 else OUTCOMES[r.randrange(1, 3)]
        subject = subject_of(r.randrange(SUBJECTS))
        occurred = (now or datetime.now(UTC)) - timedelta(seconds=r.random() * 60)
        event_id = str(uuid.uuid4())
        session: dict[str, Any] = {"session_id": f"s-{r.randrange(10_000)}", "user_agent": "EHR/7"}
        if self.with_ip:
            session["ip_address"] = f"10.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(256)}"
        event: dict[str, Any] = {
            "event_id": event_id,
            "occurred_at": occurred.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "action": action,
            "category": category,
            "fhir_action": fhir_action,
            "outcome": outcome,
            "principal": {
                "id": principal_of(r.randrange(PRINCIPALS)),
                "type": "user",
                "roles": ["physician"],
            },
            "target": {"resource_type": "Patient", "resource_id": subject, "subject_id": subject},
            "data_classification": CLASSIFICATIONS[r.randrange(len(CLASSIFICATIONS))],
            "purpose_of_use": "TREAT",
            "session": session,
            "correlation_id": event_id[:8],
            "details": {"reason": "scheduled visit", "ward": f"w{r.randrange(40)}"},
        }
        if outcome != "success":
            event["outcome_description"] = "access denied by policy"
        return event

    def body(self) -> bytes:
        """One event as a request body."""
        return orjson.dumps(self.event())

    def batch_body(self, size: int) -> bytes:
        """A batch body `{"events": [...]}` of ``size`` events."""
        now = datetime.now(UTC)
        return orjson.dumps({"events": [self.event(now) for _ in range(size)]})


class BurstBodies:
    """The batches of one burst, built together before the first of them is sent.

    Locust runs a drill's users one at a time in a single process (`scenarios.burst`): a
    user that built its batch in its own `on_start` did so while the batches of the users
    before it were already in flight, spending the generator's CPU (about 3 ms a batch of
    500) on the cores the service was answering on, and sending its batch that much later.
    """

    def __init__(self) -> None:
        self._ready: list[bytes] = []

    def take(self, factory: EventFactory, users: int, events: int) -> bytes:
        """A batch of ``events // users`` events (at most 1,000); the first call builds all."""
        users = max(1, users)
        if not self._ready:
            share = min(max(1, events // users), 1000)
            self._ready = [factory.batch_body(share) for _ in range(users)]
        return self._ready.pop()
