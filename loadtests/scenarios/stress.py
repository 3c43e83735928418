"""Database stress: 10,000 operations in flight at once, without exhausting the pool.

Every user sends one event as soon as it starts and then waits a long time, so the number of
requests in flight is the number of users. Ingest shares a few group-commit transactions
rather than taking a connection each, and key lookups are made once per key however many
requests wait for it: a pool that ran dry would show as `503` answers or timeouts, which the
threshold counts as failures.
"""

from __future__ import annotations

from locust import constant, task

from loadtests.scenarios.common import AuditUser

__all__ = ["DatabaseStress"]


class DatabaseStress(AuditUser):
    """One synchronous event per user, all at once."""

    scenario = "stress"
    wait_time = constant(3600)
    # Many connections at once: the answers queue behind group commits, not the network.
    network_timeout = 120.0
    connection_timeout = 60.0

    @task
    def ingest(self) -> None:
        """POST one event."""
        if getattr(self, "sent", False):
            return
        self.sent = True
        self.post_json("/v1/events", self.factory.body(), "POST /v1/events [stress]")
