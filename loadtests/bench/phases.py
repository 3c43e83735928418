"""The measurements of one benchmark run, each against the run's own stack.

Every phase returns plain numbers (dataclasses that become the JSON report). Latencies are
in milliseconds, rates in events per second.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx

from loadtests.bench.cpu import CpuMeter
from loadtests.bench.floor import FloorServer
from loadtests.bench.http import (
    ACCEPTED,
    OPEN_LOOP_CONNECTIONS,
    HttpTarget,
    LoadResult,
    closed_loop,
    open_loop,
    request_bytes,
    spread_connections,
)
from loadtests.bench.stack import BenchStack, TenantKey
from loadtests.scenarios.events import (
    ACTIONS,
    CATEGORIES,
    EventFactory,
    principal_of,
    subject_of,
)

__all__ = [
    "LatencySummary",
    "QueuedResult",
    "RatePoint",
    "ThroughputResult",
    "batch_ingest",
    "http_floor",
    "percentile",
    "proof_latency",
    "queries",
    "queued_ingest",
    "single_event_sweep",
    "verification",
]

Progress = Callable[[int], None]

# The highest batch ingest rate the load generator prepares bodies for (events/s).
BATCH_EVENTS_PER_S_BOUND = 30_000


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass
class LatencySummary:
    """p50, p99 and p99.9 of a set of latencies, in milliseconds."""

    samples: int
    p50_ms: float
    p99_ms: float
    p999_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> LatencySummary:
        """Summarise latencies given in seconds."""
        return cls(
            len(seconds),
            round(percentile(seconds, 0.5) * 1000, 2),
            round(percentile(seconds, 0.99) * 1000, 2),
            round(percentile(seconds, 0.999) * 1000, 2),
        )


@dataclass
class RatePoint:
    """Single-event ingest at one offered rate.

    ``cpu_us``: microseconds of CPU per answered request, by part (`loadtests.bench.cpu`).
    """

    offered_per_s: float
    achieved_per_s: float
    latency: LatencySummary
    errors: int
    unanswered: int
    cpu_us: dict[str, float] = field(default_factory=dict)
    waited: int = 0


@dataclass
class ThroughputResult:
    """Events per second through one path; ``cpu_us``: CPU per event, by part."""

    events_per_s: float
    requests: int
    errors: int
    latency: LatencySummary
    cpu_us: dict[str, float] = field(default_factory=dict)


@dataclass
class QueuedResult:
    """Queued ingest: how fast the API accepts, how fast one worker drains."""

    accepted: int
    accept_per_s: float
    accept_latency: LatencySummary
    drain_per_s: float
    drain_seconds: float


@dataclass
class QueryResult:
    """One filter kind."""

    kind: str
    latency: LatencySummary
    errors: int
    rows_median: float = 0.0


@dataclass
class VerifyResult:
    """Chain verification of the large tenant."""

    events: int
    seconds: float
    valid: bool

    @property
    def events_per_s(self) -> float:
        """Events verified per second."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


def _headers(key: TenantKey) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.key}", "Content-Type": "application/json"}


def _errors(result: LoadResult) -> int:
    return sum(n for status, n in result.statuses.items() if status not in ACCEPTED)


async def single_event_sweep(
    stack: BenchStack,
    keys: Sequence[TenantKey],
    rates: Sequence[float],
    duration_s: float,
    *,
    connections: int = OPEN_LOOP_CONNECTIONS,
    on_rate: Callable[[float], None] | None = None,
    progress: Progress | None = None,
) -> list[RatePoint]:
    """Open-loop single-event ingest at each offered rate, lowest first.

    The requests of a rate are built before it starts (each with a fresh `event_id`); the
    run stops at the first rate whose achieved throughput falls below half the offer,
    since every higher rate would only queue more.
    """
    meter = CpuMeter(stack.cpu_parts())
    load = _Load(duration_s, connections, on_rate, progress)
    return await _sweep(stack.api_url, 3, keys, rates, meter, load)


async def http_floor(
    floor: FloorServer,
    keys: Sequence[TenantKey],
    rates: Sequence[float],
    duration_s: float,
    *,
    connections: int = OPEN_LOOP_CONNECTIONS,
    on_rate: Callable[[float], None] | None = None,
    progress: Progress | None = None,
) -> list[RatePoint]:
    """The single-event sweep's requests, at its pace, against the no-op server."""
    meter = CpuMeter({"server": floor.pid})
    load = _Load(duration_s, connections, on_rate, progress)
    return await _sweep(floor.url, 4, keys, rates, meter, load)


@dataclass(frozen=True)
class _Load:
    """How each rate of a sweep is offered, and who hears of its progress."""

    duration_s: float
    connections: int
    on_rate: Callable[[float], None] | None
    progress: Progress | None


async def _sweep(
    url: str,
    seed: int,
    keys: Sequence[TenantKey],
    rates: Sequence[float],
    meter: CpuMeter,
    load: _Load,
) -> list[RatePoint]:
    target = HttpTarget.from_url(url)
    factory = EventFactory(seed=seed)
    await _warm(target, keys, factory)
    cycle = itertools.cycle(keys)
    points: list[RatePoint] = []
    for rate in rates:
        if load.on_rate is not None:
            load.on_rate(rate)
        count = max(1, int(rate * load.duration_s))
        requests = [
            request_bytes("POST", "/v1/events", target.host, _headers(next(cycle)), factory.body())
            for _ in range(count)
        ]
        meter.start()
        result = await open_loop(
            target, requests, rate, connections=load.connections, progress=load.progress
        )
        meter.stop()
        points.append(
            RatePoint(
                offered_per_s=rate,
                achieved_per_s=round(result.events_per_s, 1),
                latency=LatencySummary.of(result.latencies_s),
                errors=_errors(result),
                unanswered=result.unanswered,
                cpu_us=meter.per_unit(result.ok),
                waited=result.waited,
            )
        )
        await asyncio.sleep(1.0)  # let the queues of this rate drain before the next
        if result.events_per_s < rate * 0.5:
            break
    return points


async def _warm(target: HttpTarget, keys: Sequence[TenantKey], factory: EventFactory) -> None:
    """One request per key at a gentle pace: key lookups and connections are made here."""
    requests = [
        request_bytes("POST", "/v1/events", target.host, _headers(k), factory.body())
        for k in list(keys) * 3
    ]
    await open_loop(target, requests, 50.0)


async def _spread(stack: BenchStack, target: HttpTarget, count: int) -> list[Any]:
    """``count`` connections spread evenly over the API processes, as a balancer would."""
    return await spread_connections(target, count, stack.api_workers, stack.api_process_of)


async def batch_ingest(
    stack: BenchStack,
    keys: Sequence[TenantKey],
    *,
    batch_size: int,
    concurrency: int,
    duration_s: float,
    progress: Progress | None = None,
) -> ThroughputResult:
    """Closed-loop batches of ``batch_size`` events from ``concurrency`` clients."""
    target = HttpTarget.from_url(stack.api_url)
    factory = EventFactory(seed=5)
    # Bodies are built ahead: the load generator shares the machine's cores with the
    # service, and building an event costs it about 7 µs of CPU, a tenth of what the
    # service spends storing one. Enough for BATCH_EVENTS_PER_S_BOUND events/s over the
    # whole run (about 600 bytes of memory per event); beyond that, bodies are built as
    # needed.
    needed = max(concurrency * 2, int(duration_s * BATCH_EVENTS_PER_S_BOUND / batch_size))
    bodies = [factory.batch_body(batch_size) for _ in range(needed + concurrency)]
    cycle = itertools.cycle(keys)
    fresh = iter(bodies)

    def next_request() -> bytes:
        body = next(fresh, None)
        if body is None:  # out of prepared bodies: build more (each event id is new)
            body = factory.batch_body(batch_size)
        return request_bytes("POST", "/v1/events:batch", target.host, _headers(next(cycle)), body)

    connections = await _spread(stack, target, concurrency)
    meter = CpuMeter(stack.cpu_parts())
    meter.start()
    result = await closed_loop(
        target,
        next_request,
        concurrency=concurrency,
        duration_s=duration_s,
        events_per_request=batch_size,
        progress=progress,
        connections=connections,
    )
    meter.stop()
    return ThroughputResult(
        round(result.events_per_s, 1),
        result.ok,
        _errors(result),
        LatencySummary.of(result.latencies_s),
        meter.per_unit(result.ok_events),
    )


async def queued_ingest(
    stack: BenchStack,
    keys: Sequence[TenantKey],
    *,
    duration_s: float,
    concurrency: int,
    progress: Progress | None = None,
    drain_timeout_s: float = 600.0,
) -> QueuedResult:
    """Queued single events with the worker stopped (accept rate), then the worker drains.

    The drain is timed from the worker's start until every accepted event is committed and
    the stream is empty.
    """
    stack.stop_worker()
    target = HttpTarget.from_url(stack.api_url)
    factory = EventFactory(seed=9)
    cycle = itertools.cycle(keys)
    bodies = [factory.body() for _ in range(int(duration_s * 6000) + 1000)]
    fresh = iter(bodies)

    def next_request() -> bytes:
        body = next(fresh, None) or factory.body()
        headers = _headers(next(cycle))
        return request_bytes("POST", "/v1/events?mode=async", target.host, headers, body)

    before = await _stored_events(stack)
    result = await closed_loop(
        target,
        next_request,
        concurrency=concurrency,
        duration_s=duration_s,
        progress=progress,
        connections=await _spread(stack, target, concurrency),
    )
    accepted = result.ok
    started = time.perf_counter()
    stack.start_worker()
    deadline = started + drain_timeout_s
    while time.perf_counter() < deadline:
        if await _stored_events(stack) - before >= accepted and await _queue_empty(stack):
            break
        await asyncio.sleep(0.2)
    drained = time.perf_counter() - started
    return QueuedResult(
        accepted=accepted,
        accept_per_s=round(result.events_per_s, 1),
        accept_latency=LatencySummary.of(result.latencies_s),
        drain_per_s=round(accepted / drained, 1) if drained > 0 else 0.0,
        drain_seconds=round(drained, 2),
    )


async def _stored_events(stack: BenchStack) -> int:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(stack.database_url)
    try:
        return int(await conn.fetchval("SELECT coalesce(sum(next_seq), 0) FROM chain_heads"))
    finally:
        await conn.close()


async def _queue_empty(stack: BenchStack) -> bool:
    import redis.asyncio as aioredis

    from reference_impl.pipeline.queue import IngestQueue

    client = aioredis.Redis.from_url(stack.valkey.url())
    try:
        for stream in IngestQueue(client, shards=1).streams:
            if int(await client.xlen(stream)) > 0:
                return False
        return True
    finally:
        await client.aclose()


async def verification(stack: BenchStack, tenant: str) -> VerifyResult:
    """Verify the tenant's whole chain (hashes and signatures) as `auditkit verify` does."""
    from reference_impl.core.db import create_engine
    from reference_impl.events.monitoring import IntegrityMonitor
    from reference_impl.integrity import KeyRing
    from reference_impl.observability.alerts import Alerter

    settings = stack.settings()
    engine = create_engine(settings)
    try:
        keyring = KeyRing(settings.signing_secrets, settings.active_signing_key)
        monitor = IntegrityMonitor(engine, keyring, Alerter(None))
        started = time.perf_counter()
        outcome = await monitor.check(tenant)
        seconds = time.perf_counter() - started
        return VerifyResult(outcome.result.checked, round(seconds, 2), outcome.result.valid)
    finally:
        await engine.dispose()


async def _paced_gets(
    base: str,
    keys: Sequence[TenantKey],
    paths: Sequence[str],
    *,
    rate: float,
    progress: Progress | None = None,
) -> tuple[list[float], int, list[int]]:
    """GET each path in turn at ``rate`` per second (under the query budgets), keys in turn."""
    latencies: list[float] = []
    errors = 0
    rows: list[int] = []
    cycle = itertools.cycle(keys)
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        next_at = time.perf_counter()
        for i, path in enumerate(paths):
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            next_at += 1.0 / rate
            key = next(cycle)
            started = time.perf_counter()
            resp = await client.get(path, headers={"Authorization": f"Bearer {key.key}"})
            body = resp.content
            latencies.append(time.perf_counter() - started)
            if resp.status_code != 200:
                errors += 1
            elif path.startswith("/v1/events/export"):
                rows.append(body.count(b"\n"))
            elif path.startswith("/v1/events"):
                rows.append(len(resp.json().get("items", [])))
            if progress is not None:
                progress(i + 1)
    return latencies, errors, rows


def query_paths(samples: int, seed: int = 1) -> dict[str, list[str]]:
    """The requests of each filter kind: ``samples`` each, values spread over the data."""
    import random

    rng = random.Random(seed)  # noqa: S311 - query shapes, not secrets
    out: dict[str, list[str]] = {}

    def page(**params: object) -> str:
        return "/v1/events?" + urlencode({"limit": 100, **params})

    out["newest page"] = [page() for _ in range(samples)]
    out["principal"] = [page(principal_id=principal_of(rng.randrange(500))) for _ in range(samples)]
    out["subject"] = [page(subject_id=subject_of(rng.randrange(50_000))) for _ in range(samples)]
    out["action prefix"] = [
        page(action_prefix=ACTIONS[rng.randrange(len(ACTIONS))][0].rsplit(".", 1)[0])
        for _ in range(samples)
    ]
    out["category"] = [
        page(category=CATEGORIES[rng.randrange(len(CATEGORIES))]) for _ in range(samples)
    ]
    out["outcome=failure"] = [page(outcome="failure") for _ in range(samples)]
    out["oldest first"] = [page(order="asc") for _ in range(samples)]
    out["export (subject)"] = [
        "/v1/events/export?" + urlencode({"subject_id": subject_of(rng.randrange(50_000))})
        for _ in range(samples)
    ]
    return out


async def queries(
    stack: BenchStack,
    keys: Sequence[TenantKey],
    samples: int,
    *,
    rate: float = 40.0,
    on_kind: Callable[[str], None] | None = None,
    progress: Progress | None = None,
) -> list[QueryResult]:
    """p50 / p99 of each filter kind against the large tenant, one request at a time."""
    out = []
    for kind, paths in query_paths(samples).items():
        if on_kind is not None:
            on_kind(kind)
        latencies, errors, rows = await _paced_gets(
            stack.api_url, keys, paths, rate=rate, progress=progress
        )
        median_rows = float(sorted(rows)[len(rows) // 2]) if rows else 0.0
        out.append(QueryResult(kind, LatencySummary.of(latencies), errors, median_rows))
    return out


async def proof_latency(
    stack: BenchStack,
    keys: Sequence[TenantKey],
    event_ids: Sequence[str],
    tree_size: int,
    *,
    rate: float = 40.0,
    progress: Progress | None = None,
) -> QueryResult:
    """Latency of RFC 9162 inclusion proofs of events spread over the large tree."""
    paths = [
        "/v1/log/proof/inclusion?" + urlencode({"event_id": e, "tree_size": tree_size})
        for e in event_ids
    ]
    latencies, errors, _ = await _paced_gets(
        stack.api_url, keys, paths, rate=rate, progress=progress
    )
    return QueryResult("inclusion proof", LatencySummary.of(latencies), errors)


@dataclass
class MemorySample:
    """Resident memory of the service's processes, in MiB."""

    api_mib: float
    worker_mib: float


def memory(stack: BenchStack) -> MemorySample:
    """RSS of the API (all its processes) and of the queue worker now."""
    return MemorySample(round(stack.api_rss() / 2**20, 1), round(stack.worker_rss() / 2**20, 1))


@dataclass
class Timeline:
    """When each phase started and ended (seconds since the run started)."""

    phases: dict[str, list[float]] = field(default_factory=dict)
