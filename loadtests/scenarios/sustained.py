"""Sustained load: single events at a target rate (default 1,000 events/s), each under 100 ms.

Every user paces itself at `target rate / users` events per second, so the offered rate
holds whatever the number of users, as long as there are enough of them to keep requests in
flight while others wait for their answer (at 1,000 events/s and 100 ms each, 100 users).
"""

from __future__ import annotations

import time

from locust import task

from loadtests.scenarios.common import AuditUser

__all__ = ["PacedUser", "SustainedIngest"]


# --8<-- [start:sustained]
class PacedUser(AuditUser):
    """A user paced so that all users of its class together offer `--target-rate`."""

    abstract = True

    def wait_time(self) -> float:
        """Seconds until this user's next event, so that all users together hold the rate."""
        runner = self.environment.runner
        users = max(1, runner.user_count if runner is not None else 1)
        interval = users / float(self.options.target_rate)
        now = time.monotonic()
        # Paced by the schedule, not by the answers; behind schedule, go at once rather than
        # burst to catch up.
        self._due = max(getattr(self, "_due", now) + interval, now)
        return self._due - now


class SustainedIngest(PacedUser):
    """One synchronous event per task, paced to the target rate."""

    scenario = "sustained"

    @task
    def ingest(self) -> None:
        """POST one event; anything but 201 is a failure."""
        self.post_json("/v1/events", self.factory.body(), "POST /v1/events [sustained]")


# --8<-- [end:sustained]
