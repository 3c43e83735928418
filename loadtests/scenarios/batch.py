"""Batch ingest: clients that buffer events and send them in batches, steadily."""

from __future__ import annotations

from locust import constant_throughput, task

from loadtests.scenarios.common import AuditUser

__all__ = ["BatchIngest"]


class BatchIngest(AuditUser):
    """Two batches a second per user, `--batch-size` events each (100 by default)."""

    scenario = "batch"
    wait_time = constant_throughput(2)

    @task
    def batch(self) -> None:
        """POST one batch; a 201 means every event of it is committed."""
        self.post_json(
            "/v1/events:batch",
            self.factory.batch_body(int(self.options.batch_size)),
            "POST /v1/events:batch [batch]",
        )
