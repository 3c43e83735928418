"""Burst traffic: 5,000 events arrive at once, as batches from every user together.

All users start together (spawn rate = users), each sends one batch of
`burst events / users` events the moment it starts, then waits for the run to end. The
design asks for the burst to be answered under 200 ms.
"""

from __future__ import annotations

from locust import constant, task

from loadtests.scenarios.common import AuditUser

__all__ = ["BurstIngest"]


# --8<-- [start:burst]
class BurstIngest(AuditUser):
    """One batch at start, then idle."""

    scenario = "burst"
    wait_time = constant(3600)

    def on_start(self) -> None:
        """Build this user's share of the burst before the clock matters."""
        super().on_start()
        runner = self.environment.runner
        users = max(1, runner.target_user_count if runner is not None else 1)
        share = max(1, int(self.options.burst_events) // users)
        self.body = self.factory.batch_body(min(share, 1000))

    @task
    def burst(self) -> None:
        """POST this user's batch once."""
        if getattr(self, "sent", False):
            return
        self.sent = True
        self.post_json("/v1/events:batch", self.body, "POST /v1/events:batch [burst]")


# --8<-- [end:burst]
