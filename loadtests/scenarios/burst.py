"""Burst traffic: 5,000 events arrive at once, as batches from every user together.

All users start together (spawn rate = users), each sends one batch of
`burst events / users` events the moment it starts, then waits for the run to end. The
design asks for the burst to be answered under 200 ms.
"""

from __future__ import annotations

from locust import constant, task

from loadtests.scenarios.common import AuditUser
from loadtests.scenarios.events import BurstBodies

__all__ = ["BurstIngest"]


# The batches of the burst, built by the first user to start (see `BurstBodies`).
_BODIES = BurstBodies()


# --8<-- [start:burst]
class BurstIngest(AuditUser):
    """One batch at start, then idle."""

    scenario = "burst"
    wait_time = constant(3600)

    def on_start(self) -> None:
        """Take this user's share of the burst, built before the clock matters."""
        super().on_start()
        runner = self.environment.runner
        users = max(1, runner.target_user_count if runner is not None else 1)
        self.body = _BODIES.take(self.factory, users, int(self.options.burst_events))

    @task
    def burst(self) -> None:
        """POST this user's batch once."""
        if getattr(self, "sent", False):
            return
        self.sent = True
        self.post_json("/v1/events:batch", self.body, "POST /v1/events:batch [burst]")


# --8<-- [end:burst]
