"""Prometheus metrics the service emits, and the `/metrics` route.

Every metric an alert rule or a dashboard names is defined here, in one place, so a test can
check that the shipped alert rules only name metrics that exist. Retries are counted by
stamina's own Prometheus hook as `stamina_retries_total{callable, retry_num, error_type}`.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

__all__ = [
    "BREAKER_STATE",
    "BREAKER_TRANSITIONS",
    "CHECKPOINTS",
    "COMMIT_SECONDS",
    "DLQ_DEPTH",
    "DLQ_EVENTS",
    "INGEST_EVENTS",
    "MERKLE_LAG",
    "QUEUE_DEPTH",
    "QUEUE_FALLBACKS",
    "TAMPER_DETECTED",
    "TENANT_COMPROMISED",
    "VERIFICATION_RUNS",
    "WITNESS_SUBMISSIONS",
    "WORKER_EVENTS",
    "router",
]

INGEST_EVENTS = Counter(
    "auditkit_ingest_events_total",
    "Events answered by the ingest API, by mode and outcome.",
    ["mode", "outcome"],
)
COMMIT_SECONDS = Histogram(
    "auditkit_ingest_commit_seconds",
    "Duration of one group-commit transaction.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
COMMIT_BATCH_EVENTS = Histogram(
    "auditkit_ingest_commit_batch_events",
    "Events written by one group-commit transaction.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
)
BREAKER_STATE = Gauge(
    "auditkit_circuit_breaker_state",
    "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
    ["breaker"],
)
BREAKER_TRANSITIONS = Counter(
    "auditkit_circuit_breaker_transitions_total",
    "Circuit breaker state changes, by the state entered.",
    ["breaker", "state"],
)
QUEUE_DEPTH = Gauge(
    "auditkit_queue_depth", "Entries in the ingest streams not yet acknowledged.", ["stream"]
)
QUEUE_FALLBACKS = Counter(
    "auditkit_queue_fallbacks_total",
    "Queued-mode requests served synchronously because the queue was unavailable.",
)
WORKER_EVENTS = Counter(
    "auditkit_worker_events_total", "Queue entries handled by workers, by outcome.", ["outcome"]
)
DLQ_EVENTS = Counter(
    "auditkit_dlq_events_total", "Entries written to the dead-letter queue, by reason.", ["reason"]
)
DLQ_DEPTH = Gauge("auditkit_dlq_depth", "Entries waiting in the dead-letter queue.")
VERIFICATION_RUNS = Counter(
    "auditkit_verification_runs_total", "Chain verifications run, by result.", ["result"]
)
TAMPER_DETECTED = Counter(
    "auditkit_tamper_detected_total", "Verifications that found a broken chain.", ["kind"]
)
TENANT_COMPROMISED = Gauge(
    "auditkit_tenants_compromised", "Tenants whose log is marked compromised."
)
MERKLE_LAG = Gauge(
    "auditkit_merkle_lag_events",
    "Most committed events of any tenant not yet in its Merkle tree (0 by construction).",
)
CHECKPOINTS = Counter("auditkit_checkpoints_total", "Checkpoint requests, by result.", ["result"])
WITNESS_SUBMISSIONS = Counter(
    "auditkit_witness_submissions_total",
    "Checkpoints sent to witnesses, by witness and outcome.",
    ["witness", "outcome"],
)

router = APIRouter(tags=["health"])


@router.get("/metrics", summary="Prometheus metrics of this process")
async def metrics() -> Response:
    """Prometheus text exposition of this process's metrics."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
