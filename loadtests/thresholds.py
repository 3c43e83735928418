"""Pass and fail thresholds of the load drills: the design's acceptance criteria, per scenario.

Each Locust scenario names its requests (`POST /v1/events [sustained]`, ...), and each name
has a bound on its failure ratio and on its 95th and 99th percentile response times. A
headless run ends with exit code 1 when any request name of a scenario that ran breaks its
bounds, or sent nothing at all, and the soak also fails when the service's resident memory
grew. This module has no Locust import, so the rules are tested without a load run.

| drill | criterion of the design |
|---|---|
| sustained | 1,000 events/s answered under 100 ms |
| burst | 5,000 events at once, answered under 200 ms |
| stress | 10,000 concurrent operations without pool exhaustion (no 5xx, no timeout) |
| soak | no memory growth under steady load |
| batch, queries | the batch and read paths stay fast and error-free |

Recovery under 30 s is the chaos drills' criterion (`auditkit drill chaos`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "MEMORY_GROWTH_LIMIT",
    "THRESHOLDS",
    "Observed",
    "Threshold",
    "evaluate",
    "memory_growth",
]


@dataclass(frozen=True)
class Threshold:
    """Bounds on one request name.

    Attributes:
        name: The request name as the scenario reports it to Locust.
        max_failure_ratio: Failed requests over all requests, at most.
        p95_ms: 95th percentile response time bound (None: not checked).
        p99_ms: 99th percentile response time bound (None: not checked).
    """

    name: str
    max_failure_ratio: float
    p95_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True)
class Observed:
    """What a run saw of one request name."""

    requests: int
    failures: int
    p95_ms: float
    p99_ms: float


# --8<-- [start:thresholds]
THRESHOLDS: dict[str, tuple[Threshold, ...]] = {
    "sustained": (Threshold("POST /v1/events [sustained]", 0.0, 100.0, 100.0),),
    "burst": (Threshold("POST /v1/events:batch [burst]", 0.0, 200.0, 200.0),),
    "batch": (Threshold("POST /v1/events:batch [batch]", 0.0, 500.0, 1000.0),),
    "queries": (
        Threshold("GET /v1/events [filter]", 0.0, 200.0, 500.0),
        Threshold("GET /v1/events [next page]", 0.0, 200.0, 500.0),
        Threshold("GET /v1/events/export", 0.0, 500.0, 1000.0),
    ),
    "stress": (Threshold("POST /v1/events [stress]", 0.0, None, 30_000.0),),
    "soak": (
        Threshold("POST /v1/events [soak]", 0.001, 100.0, 250.0),
        Threshold("GET /metrics [soak]", 0.0, None, None),
    ),
}
MEMORY_GROWTH_LIMIT = 0.10
"""The soak fails when resident memory at the end exceeds the start by more than this."""
# --8<-- [end:thresholds]


def evaluate(scenarios: Iterable[str], observed: Mapping[str, Observed]) -> list[str]:
    """The broken bounds of the scenarios that ran, one line each (empty: the run passes).

    Args:
        scenarios: Names of the scenarios whose users ran.
        observed: What the run saw, by request name.
    """
    problems: list[str] = []
    for scenario in sorted(set(scenarios)):
        for bound in THRESHOLDS[scenario]:
            seen = observed.get(bound.name)
            if seen is None or seen.requests == 0:
                problems.append(f"{scenario}: no '{bound.name}' request was made")
                continue
            ratio = seen.failures / seen.requests
            if ratio > bound.max_failure_ratio:
                problems.append(
                    f"{scenario}: '{bound.name}' failed {ratio:.2%} of {seen.requests} requests"
                    f" (at most {bound.max_failure_ratio:.2%})"
                )
            for label, value, limit in (
                ("p95", seen.p95_ms, bound.p95_ms),
                ("p99", seen.p99_ms, bound.p99_ms),
            ):
                if limit is not None and value > limit:
                    problems.append(
                        f"{scenario}: '{bound.name}' {label} {value:.0f} ms"
                        f" (at most {limit:.0f} ms)"
                    )
    return problems


def memory_growth(samples: Sequence[tuple[float, float]]) -> float | None:
    """Relative growth of resident memory over a run, from `(time, bytes)` samples.

    The median of the last quarter of the samples over the median of the first quarter,
    minus one: a single spike (a large response being built) does not count as growth, a
    leak does. None with fewer than 8 samples.
    """
    if len(samples) < 8:
        return None
    values = [v for _, v in sorted(samples)]
    quarter = len(values) // 4
    first = sorted(values[:quarter])[quarter // 2]
    last = sorted(values[-quarter:])[quarter // 2]
    return last / first - 1.0
