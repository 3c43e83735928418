"""Probes of the experiments' steady-state hypothesis (Chaos Toolkit `python` provider).

They run after the method, once the load has stopped and the queues are drained. The
history check comes first in every hypothesis, so that its verdict (`check.json`) is
written even when a later probe is out of tolerance.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import httpx

from chaos.checker import (
    NOT_RECOVERED,
    StoredRow,
    Verdict,
    check_history,
    percentile,
    verify_chains,
)
from chaos.harness import REPO_ROOT, get_stack, read_lines

__all__ = [
    "error_ratio",
    "history_is_consistent",
    "p99_latency_ms",
    "readiness",
    "recovery_seconds",
]

STORED_SQL = "SELECT tenant_id, seq, event_id, encode(hash, 'hex') FROM audit_events"


# --8<-- [start:history-probe]
def history_is_consistent(run_dir: str, p99_bound_ms: float = 1000.0) -> bool:
    """Run the checker on the drill's history and database; write `check.json`.

    True when every acknowledged event is stored once, each tenant's `seq` is gapless, every
    chain verifies and every answer the clients got holds.
    """
    stack = get_stack(Path(run_dir))
    stored = [StoredRow(t, int(s), e, h) for t, s, e, h in stack.sql(STORED_SQL)]
    verdict = check_history(
        read_lines(stack.run_dir / "history.ndjson"),
        stored,
        verify_chains(stack.env, cwd=REPO_ROOT),
        marks=read_lines(stack.run_dir / "marks.ndjson"),
        dead_lettered=_dead_lettered(stack),
        p99_bound_ms=p99_bound_ms,
    )
    (stack.run_dir / "check.json").write_text(
        json.dumps(verdict.as_dict(), indent=2), encoding="utf-8"
    )
    return verdict.ok


# --8<-- [end:history-probe]


def _dead_lettered(stack: Any) -> list[str]:
    client = stack.redis_client()
    out: list[str] = []
    try:
        for tenant in stack.tenants:
            for _, fields in client.xrange(f"auditkit:dlq:{{{tenant.name}}}"):
                out.append(fields.get(b"event_id", b"").decode())
    finally:
        client.close()
    return out


def readiness(run_dir: str) -> int:
    """The worst `/health/ready` status over the API processes (0: one did not answer)."""
    stack = get_stack(Path(run_dir))
    worst = 200
    for url in stack.api_urls():
        try:
            status = httpx.get(f"{url}/health/ready", timeout=5).status_code
        except httpx.HTTPError:
            status = 0
        if status != 200:
            worst = status if worst == 200 else min(worst, status)
    return worst


def _final_window(run_dir: Path, last_s: float) -> list[dict[str, Any]]:
    """Attempts started in the ``last_s`` seconds before the load was asked to stop."""
    marks = read_lines(run_dir / "marks.ndjson")
    stop = max((float(m["t"]) for m in marks if m["mark"] == "load_stop"), default=None)
    attempts = [r for r in read_lines(run_dir / "history.ndjson") if r["k"] == "attempt"]
    if stop is None:
        stop = max((float(a["t0"]) for a in attempts), default=0.0)
    return [a for a in attempts if stop - last_s <= float(a["t0"]) < stop]


def error_ratio(run_dir: str, last_s: float = 3.0) -> float:
    """Share of attempts not acknowledged (5xx, timeouts, dropped connections) in the last
    ``last_s`` seconds of load; 1.0 when there were none."""
    window = _final_window(Path(run_dir), last_s)
    if not window:
        return 1.0
    return round(sum(1 for a in window if a["result"] == "info") / len(window), 4)


def p99_latency_ms(run_dir: str, last_s: float = 3.0) -> float:
    """p99 latency (ms) of the attempts of the last ``last_s`` seconds of load."""
    window = _final_window(Path(run_dir), last_s)
    if not window:
        return float("inf")
    return round(percentile([(a["t1"] - a["t0"]) * 1000 for a in window], 0.99), 1)


def recovery_seconds(run_dir: str) -> float:
    """The slowest recovery (first success or p99, over every fault window) in `check.json`;
    a very large number when the service never recovered or nothing was checked."""
    with contextlib.suppress(OSError, ValueError):
        data = json.loads((Path(run_dir) / "check.json").read_text(encoding="utf-8"))
        verdict = Verdict.from_dict(data)
        worst = [verdict.recovery_first_success_s, verdict.recovery_p99_s]
        if verdict.recoveries and NOT_RECOVERED not in worst:
            return max(v for v in worst if v is not None)
    return 1e9
