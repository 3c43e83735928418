"""The query mix: filtered pages, the next page by cursor, and NDJSON exports.

Reads have their own rate-limit budget (50 requests/s per key by default), so each user
reads at most twice a second; give the drill as many keys as it has users over 25.
"""

from __future__ import annotations

import random
from urllib.parse import urlencode

from locust import constant_throughput, task

from loadtests.scenarios.common import AuditUser
from loadtests.scenarios.events import ACTIONS, CATEGORIES, OUTCOMES, principal_of, subject_of

__all__ = ["QueryMix"]


class QueryMix(AuditUser):
    """Filtered pages (most), next pages by cursor, and small exports."""

    scenario = "queries"
    wait_time = constant_throughput(2)

    def on_start(self) -> None:
        """Seed this user's choice of filters."""
        super().on_start()
        self.random = random.Random(self.key)  # noqa: S311 - query shapes, not secrets

    def _filters(self) -> dict[str, object]:
        r = self.random
        kind = r.randrange(5)
        if kind == 0:
            return {"principal_id": principal_of(r.randrange(500))}
        if kind == 1:
            return {"subject_id": subject_of(r.randrange(50_000))}
        if kind == 2:
            return {"action_prefix": ACTIONS[r.randrange(len(ACTIONS))][0].rsplit(".", 1)[0]}
        if kind == 3:
            return {"category": CATEGORIES[r.randrange(len(CATEGORIES))]}
        return {"outcome": OUTCOMES[r.randrange(len(OUTCOMES))]}

    @task(6)
    def page(self) -> None:
        """One filtered page of 50."""
        query = urlencode({"limit": 50, **self._filters()})
        self.client.get(f"/v1/events?{query}", headers=self.headers, name="GET /v1/events [filter]")

    @task(3)
    def next_page(self) -> None:
        """The newest page, then the page after it by its cursor."""
        first = self.client.get(
            "/v1/events?limit=50", headers=self.headers, name="GET /v1/events [filter]"
        )
        cursor = first.json().get("next_cursor") if first.status_code == 200 else None
        if cursor:
            query = urlencode({"limit": 50, "cursor": cursor})
            self.client.get(
                f"/v1/events?{query}", headers=self.headers, name="GET /v1/events [next page]"
            )

    @task(1)
    def export(self) -> None:
        """The NDJSON export of one data subject's events."""
        query = urlencode({"subject_id": subject_of(self.random.randrange(50_000))})
        self.client.get(
            f"/v1/events/export?{query}", headers=self.headers, name="GET /v1/events/export"
        )
