"""What every scenario shares: command-line options, API keys, the base user, the verdict.

Keys are secrets, so they come from the environment (`AUDITKIT_LOAD_API_KEYS`, comma
separated, one tenant or several) rather than the command line. Each user takes the next
key, so the load spreads over the tenants and their rate-limit budgets.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any, ClassVar

from locust import FastHttpUser, events
from locust.env import Environment

from loadtests.scenarios.events import EventFactory
from loadtests.thresholds import MEMORY_GROWTH_LIMIT, Observed, evaluate, memory_growth

__all__ = ["AuditUser", "memory_samples"]

_keys_lock = threading.Lock()
_key_cycle: itertools.cycle[str] | None = None

memory_samples: list[tuple[float, float]] = []
"""`(time, resident bytes)` samples of the service, collected by the soak's sampler."""


@events.init_command_line_parser.add_listener  # type: ignore[untyped-decorator]
def _options(parser: Any) -> None:
    parser.add_argument(
        "--api-keys",
        env_var="AUDITKIT_LOAD_API_KEYS",
        default="",
        help="API keys to send with (comma separated); better set in the environment",
        include_in_web_ui=False,
    )
    parser.add_argument(
        "--target-rate",
        type=float,
        env_var="AUDITKIT_LOAD_TARGET_RATE",
        default=1000.0,
        help="Events per second the sustained and soak scenarios offer, all users together",
    )
    parser.add_argument(
        "--burst-events",
        type=int,
        env_var="AUDITKIT_LOAD_BURST_EVENTS",
        default=5000,
        help="Events the burst scenario sends at once, split over its users",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        env_var="AUDITKIT_LOAD_BATCH_SIZE",
        default=100,
        help="Events per request of the batch scenario",
    )
    parser.add_argument(
        "--sample-every",
        type=float,
        env_var="AUDITKIT_LOAD_SAMPLE_EVERY",
        default=10.0,
        help="Seconds between two samples of the service's memory in the soak",
    )


def _next_key(environment: Environment) -> str:
    global _key_cycle
    with _keys_lock:
        if _key_cycle is None:
            options = environment.parsed_options
            keys = [k.strip() for k in (options.api_keys if options else "").split(",")]
            keys = [k for k in keys if k]
            if not keys:
                raise RuntimeError("no API key: set AUDITKIT_LOAD_API_KEYS")
            _key_cycle = itertools.cycle(keys)
        return next(_key_cycle)


class AuditUser(FastHttpUser):
    """A client of the audit API with one key and its own event factory."""

    abstract = True
    scenario: ClassVar[str] = ""
    """The scenario this user belongs to; its thresholds decide the run."""

    def on_start(self) -> None:
        """Take a key and a seeded event factory."""
        self.key = _next_key(self.environment)
        self.factory = EventFactory(seed=hash(self.key) % 1000)
        self.headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}

    @property
    def options(self) -> Any:
        """The parsed command line."""
        return self.environment.parsed_options

    def post_json(self, path: str, body: bytes, name: str) -> None:
        """POST a JSON body; anything but a 2xx answer counts as a failure."""
        # Locust annotates `data` as text, and sends bytes as they are, which spares the
        # generator an encode per request.
        self.client.post(path, data=body, headers=self.headers, name=name)  # type: ignore[arg-type]


# --8<-- [start:quitting]
@events.quitting.add_listener  # type: ignore[untyped-decorator]
def _verdict(environment: Environment, **_: Any) -> None:
    """Set the exit code from the thresholds of the scenarios that ran."""
    scenarios = {
        getattr(cls, "scenario", "")
        for cls in environment.user_classes
        if getattr(cls, "scenario", "")
    }
    observed = {
        entry.name: Observed(
            requests=entry.num_requests,
            failures=entry.num_failures,
            p95_ms=entry.get_response_time_percentile(0.95) or 0.0,
            p99_ms=entry.get_response_time_percentile(0.99) or 0.0,
        )
        for entry in environment.stats.entries.values()
    }
    problems = evaluate(scenarios, observed)
    if "soak" in scenarios:
        growth = memory_growth(memory_samples)
        if growth is None:
            problems.append("soak: fewer than 8 memory samples; run longer")
        else:
            print(f"soak: resident memory grew {growth:.1%} over {len(memory_samples)} samples")
        if growth is not None and growth > MEMORY_GROWTH_LIMIT:
            problems.append(
                f"soak: resident memory grew {growth:.1%} (at most {MEMORY_GROWTH_LIMIT:.0%})"
            )
    for problem in problems:
        print(f"THRESHOLD FAILED {problem}")
    if not problems:
        print(f"THRESHOLDS MET for {', '.join(sorted(scenarios))}")
    environment.process_exit_code = 1 if problems else 0


# --8<-- [end:quitting]
