"""The history checker: did the service keep every promise it made during the drill?

A timer cannot tell whether data was lost; a history can. The load generator recorded every
acknowledged receipt (`chaos.load`); once the queues are drained, the checker reads what
PostgreSQL holds and compares:

- every acknowledged event is stored, under its tenant (acknowledged ⊆ stored);
- no `event_id` is stored twice;
- each tenant's `seq` runs 0, 1, 2, ... without a gap or a repeat;
- every tenant's chain verifies (`auditkit verify --json`: hashes and signatures);
- a synchronous receipt names the `seq` and `hash` that are stored;
- an event answered `422` is not stored, and the service accepted exactly the skewed
  events within its clock bounds.

Stored events nobody saw acknowledged are reported apart: they are allowed (the client gave
up, or the answer was lost after the commit) and never counted as a failure.

It also measures recovery after each fault window: seconds from the end of the fault to the
first acknowledged ingest, and to the first one-second window whose requests all succeeded
with a p99 latency under the steady-state bound.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "FaultWindow",
    "Recovery",
    "StoredRow",
    "Verdict",
    "check_history",
    "fault_windows",
    "measure_recovery",
    "percentile",
    "verify_chains",
]

NOT_RECOVERED = -1.0
"""Recovery seconds reported when the service never recovered within the run."""


# --8<-- [start:records]
@dataclass(frozen=True, slots=True)
class StoredRow:
    """One row of `audit_events` as the checker needs it."""

    tenant: str
    seq: int
    event_id: str
    hash: str


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """When a fault was injected and when it ended (epoch seconds)."""

    start: float
    end: float
    what: str = ""


@dataclass(frozen=True, slots=True)
class Recovery:
    """Recovery after one fault window, in seconds from its end (-1: never recovered)."""

    what: str
    first_success_s: float
    p99_s: float


# --8<-- [end:records]


@dataclass
class Verdict:
    """What the checker found. `ok` is false on any loss, duplicate, gap or broken chain."""

    acknowledged: int = 0
    stored: int = 0
    lost: list[str] = field(default_factory=list)
    lost_in_dlq: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    seq_problems: list[str] = field(default_factory=list)
    chains: dict[str, bool] = field(default_factory=dict)
    receipt_mismatches: list[str] = field(default_factory=list)
    rejected: int = 0
    rejected_but_stored: list[str] = field(default_factory=list)
    unexpected_rejections: list[str] = field(default_factory=list)
    wrongly_accepted: list[str] = field(default_factory=list)
    unknown: int = 0
    stored_unacknowledged: int = 0
    attempts: int = 0
    errors: int = 0
    steady_p99_ms: float | None = None
    p99_bound_ms: float = 0.0
    recoveries: list[Recovery] = field(default_factory=list)

    @property
    def chain_valid(self) -> bool:
        """Every tenant's chain verified (and there was at least one)."""
        return bool(self.chains) and all(self.chains.values())

    @property
    def recovery_first_success_s(self) -> float | None:
        """The slowest recovery to a first success over the fault windows."""
        return _worst(r.first_success_s for r in self.recoveries)

    @property
    def recovery_p99_s(self) -> float | None:
        """The slowest recovery to p99 under the bound over the fault windows."""
        return _worst(r.p99_s for r in self.recoveries)

    @property
    def ok(self) -> bool:
        """Nothing acknowledged is lost or doubled, every chain is whole, every answer held."""
        return (
            not (
                self.lost
                or self.duplicates
                or self.seq_problems
                or self.receipt_mismatches
                or self.rejected_but_stored
                or self.unexpected_rejections
                or self.wrongly_accepted
            )
            and self.chain_valid
        )

    def problems(self) -> list[str]:
        """One line per kind of failure, with a few examples."""
        out = []
        for label, items in (
            ("acknowledged but not stored", self.lost),
            ("stored more than once", self.duplicates),
            ("seq gaps or repeats", self.seq_problems),
            ("receipt differs from the stored row", self.receipt_mismatches),
            ("answered 422 yet stored", self.rejected_but_stored),
            ("refused though valid", self.unexpected_rejections),
            ("accepted though beyond the clock bounds", self.wrongly_accepted),
        ):
            if items:
                out.append(f"{len(items)} {label}: {', '.join(items[:3])}")
        broken = sorted(t for t, valid in self.chains.items() if not valid)
        if broken:
            out.append(f"chain does not verify for {', '.join(broken)}")
        elif not self.chains:
            out.append("no chain was verified")
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON form (`check.json`), with the derived figures."""
        data = asdict(self)
        data.update(
            ok=self.ok,
            chain_valid=self.chain_valid,
            recovery_first_success_s=self.recovery_first_success_s,
            recovery_p99_s=self.recovery_p99_s,
            problems=self.problems(),
        )
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        """Read `check.json` back."""
        names = set(cls.__dataclass_fields__)
        values = {k: v for k, v in data.items() if k in names}
        values["recoveries"] = [Recovery(**r) for r in data.get("recoveries", [])]
        return cls(**values)


def _worst(values: Iterable[float]) -> float | None:
    found = list(values)
    if not found:
        return None
    if any(v == NOT_RECOVERED for v in found):
        return NOT_RECOVERED
    return max(found)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by the nearest-rank method."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def fault_windows(
    marks: Iterable[Mapping[str, Any]], *, merge_gap_s: float = 1.0
) -> list[FaultWindow]:
    """Pair `fault_start` and `fault_end` marks, in order.

    Faults injected back to back (the next starts within ``merge_gap_s`` of the end of the
    previous one) are one window: the service cannot recover from the first while the second
    is under way, so recovery is measured from the end of the last.
    """
    out: list[FaultWindow] = []
    start: Mapping[str, Any] | None = None
    for m in sorted(marks, key=lambda m: float(m["t"])):
        if m.get("mark") == "fault_start":
            start = m
        elif m.get("mark") == "fault_end" and start is not None:
            window = FaultWindow(float(start["t"]), float(m["t"]), str(start.get("what", "")))
            if out and window.start - out[-1].end < merge_gap_s:
                previous = out.pop()
                window = FaultWindow(previous.start, window.end, f"{previous.what}, {window.what}")
            out.append(window)
            start = None
    return out


def _healthy(window: Sequence[Mapping[str, Any]], bound_ms: float) -> bool:
    if not window or any(a["result"] == "info" for a in window):
        return False
    latencies = [(float(a["t1"]) - float(a["t0"])) * 1000 for a in window]
    return percentile(latencies, 0.99) < bound_ms


# --8<-- [start:recovery]
def measure_recovery(
    attempts: Sequence[Mapping[str, Any]],
    window: FaultWindow,
    p99_bound_ms: float,
    *,
    until: float | None = None,
    width_s: float = 1.0,
    step_s: float = 0.1,
) -> Recovery:
    """Seconds from the end of ``window`` to the first acknowledged ingest, and to the first
    ``width_s`` window of requests that all succeeded with p99 latency under the bound."""
    after = [a for a in attempts if float(a["t1"]) >= window.end]
    acked = [float(a["t1"]) for a in after if a["result"] == "ok"]
    first = min(acked) - window.end if acked else NOT_RECOVERED
    end = until if until is not None else max((float(a["t0"]) for a in attempts), default=0.0)
    started = sorted(after, key=lambda a: float(a["t0"]))
    starts = [float(a["t0"]) for a in started]
    p99 = NOT_RECOVERED
    k = 0
    while (t := window.end + k * step_s) + width_s <= end + 1e-9:
        eps = 1e-9  # steps of 0.1 s are not exact in binary
        inside = started[bisect_left(starts, t - eps) : bisect_left(starts, t + width_s - eps)]
        if _healthy(inside, p99_bound_ms):
            p99 = t - window.end
            break
        k += 1
    return Recovery(window.what, round(max(first, NOT_RECOVERED), 3), round(p99, 3))


# --8<-- [end:recovery]


# --8<-- [start:check]
def check_history(
    history: Iterable[Mapping[str, Any]],
    stored: Iterable[StoredRow],
    chains: Mapping[str, bool],
    *,
    marks: Iterable[Mapping[str, Any]] = (),
    dead_lettered: Iterable[str] = (),
    p99_bound_ms: float = 1000.0,
) -> Verdict:
    """Compare what the clients were told with what the database holds.

    Args:
        history: Records of the load generator (`attempt`, `ack`, `reject`, `unknown`).
        stored: Every row of `audit_events` of the drill's tenants, queues drained.
        chains: Verification result (valid or not) of each tenant's chain.
        marks: Timeline marks of the run; `fault_start`/`fault_end` pairs delimit faults.
        dead_lettered: `event_id`s found in the dead-letter queue.
        p99_bound_ms: The steady-state latency bound recovery is measured against.
    """
    records = list(history)
    rows = list(stored)
    verdict = Verdict(chains=dict(chains), p99_bound_ms=p99_bound_ms)
    acks: dict[tuple[str, str], Mapping[str, Any]] = {}
    rejects: dict[tuple[str, str], Mapping[str, Any]] = {}
    unknown: set[tuple[str, str]] = set()
    for r in records:
        key = (str(r.get("tenant")), str(r.get("event_id")))
        if r["k"] == "ack":
            acks.setdefault(key, r)
        elif r["k"] == "reject":
            rejects[key] = r
        elif r["k"] == "unknown":
            unknown.add(key)
    by_key: dict[tuple[str, str], list[StoredRow]] = defaultdict(list)
    for row in rows:
        by_key[(row.tenant, row.event_id)].append(row)
    dlq = set(dead_lettered)

    verdict.acknowledged = len(acks)
    verdict.stored = len(rows)
    verdict.unknown = len(unknown - acks.keys())
    for key, ack in sorted(acks.items(), key=lambda kv: float(kv[1]["t"])):
        found = by_key.get(key)
        if not found:
            verdict.lost.append(key[1])
            if key[1] in dlq:
                verdict.lost_in_dlq.append(key[1])
        elif "seq" in ack and (found[0].seq, found[0].hash) != (ack["seq"], ack.get("hash")):
            verdict.receipt_mismatches.append(key[1])
        if ack.get("expect") == "reject":
            verdict.wrongly_accepted.append(key[1])
    verdict.duplicates = sorted(k[1] for k, found in by_key.items() if len(found) > 1)
    verdict.stored_unacknowledged = sum(1 for k in by_key if k not in acks)
    for key, reject in rejects.items():
        if key in by_key:
            verdict.rejected_but_stored.append(key[1])
        if reject.get("status") == 422 and reject.get("expect") == "reject":
            verdict.rejected += 1
        else:
            verdict.unexpected_rejections.append(f"{key[1]} ({reject.get('status')})")
    verdict.seq_problems = _seq_problems(rows)

    attempts = [r for r in records if r["k"] == "attempt"]
    verdict.attempts = len(attempts)
    verdict.errors = sum(1 for a in attempts if a["result"] == "info")
    marks_seen = list(marks)
    windows = fault_windows(marks_seen)
    if attempts:
        # Steady state: from the load's first acknowledgement to the first fault.
        begun = min((float(m["t"]) for m in marks_seen if m.get("mark") == "load_start"), default=0)
        ended = windows[0].start if windows else float("inf")
        steady = [a for a in attempts if begun <= float(a["t0"]) and float(a["t1"]) < ended]
        latencies = [
            (float(a["t1"]) - float(a["t0"])) * 1000 for a in steady if a["result"] == "ok"
        ]
        if latencies:
            verdict.steady_p99_ms = round(percentile(latencies, 0.99), 1)
    verdict.recoveries = [measure_recovery(attempts, w, p99_bound_ms) for w in windows]
    return verdict


# --8<-- [end:check]


def _seq_problems(rows: Iterable[StoredRow]) -> list[str]:
    seqs: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        seqs[row.tenant].append(row.seq)
    problems = []
    for tenant, values in sorted(seqs.items()):
        counts = Counter(values)
        repeated = sorted(s for s, n in counts.items() if n > 1)
        missing = sorted(set(range(max(values) + 1)) - counts.keys())
        if repeated:
            problems.append(f"{tenant}: seq {repeated[:5]} stored more than once")
        if missing:
            problems.append(f"{tenant}: seq {missing[:5]} missing")
    return problems


def verify_chains(env: Mapping[str, str], cwd: Path | None = None) -> dict[str, bool]:
    """Run `auditkit verify --json` against the drill's database; valid or not per tenant.

    Raises:
        RuntimeError: the command printed no JSON (it could not run).
    """
    done = subprocess.run(
        [sys.executable, "-m", "reference_impl", "verify", "--json"],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    try:
        results = json.loads(done.stdout)
    except ValueError:
        raise RuntimeError(f"auditkit verify failed: {done.stderr.strip()[-500:]}") from None
    return {str(r["tenant"]): bool(r["valid"]) for r in results}
