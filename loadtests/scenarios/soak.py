"""Memory pressure: steady ingest for a long time while the service's memory is sampled.

`SoakIngest` users offer `--target-rate` events/s between them (use a rate the service holds
comfortably, e.g. 200); one `MemorySampler` reads `process_resident_memory_bytes` from the
service's `/metrics` every `--sample-every` seconds. The drill fails when memory at the end
is more than 10 % above memory at the start (medians of the first and last quarters).

`/metrics` reports the process that answers: soak a single-process API (`serve --workers
1`), or every process behind a load balancer separately.
"""

from __future__ import annotations

import time

from locust import task

from loadtests.scenarios.common import AuditUser, memory_samples
from loadtests.scenarios.sustained import PacedUser

__all__ = ["MemorySampler", "SoakIngest"]

METRIC = "process_resident_memory_bytes"


class SoakIngest(PacedUser):
    """Sustained single events, named apart so the soak has its own thresholds."""

    scenario = "soak"

    @task
    def ingest(self) -> None:
        """POST one event."""
        self.post_json("/v1/events", self.factory.body(), "POST /v1/events [soak]")


# --8<-- [start:sampler]
class MemorySampler(AuditUser):
    """Reads the service's resident memory from `/metrics` now and then."""

    scenario = "soak"
    fixed_count = 1

    def wait_time(self) -> float:
        """The sampling interval."""
        return float(self.options.sample_every)

    @task
    def sample(self) -> None:
        """One sample of `process_resident_memory_bytes`."""
        with self.client.get("/metrics", name="GET /metrics [soak]", catch_response=True) as resp:
            for line in resp.text.splitlines():
                if line.startswith(METRIC + " "):
                    memory_samples.append((time.time(), float(line.split()[1])))
                    resp.success()
                    return
            resp.failure(f"no {METRIC} in /metrics")


# --8<-- [end:sampler]
