"""The drill's load generator: steady ingest that retries by `event_id` and keeps a history.

Run as its own process (`python -m chaos.load RUN_DIR`), configured by `RUN_DIR/load.json`.
A few client tasks each send one kind of operation at a steady pace, spread over the
tenants and the API processes: synchronous events, queued (`mode=async`) events, or queued
batches, in the proportions of the configured mix.

Every attempt and every outcome goes to `RUN_DIR/history.ndjson`, written by this process
alone, one JSON object per line, in the spirit of a Jepsen history:

| record | when | meaning for the checker |
|---|---|---|
| `attempt` | every HTTP attempt | throughput, latency and errors over time |
| `ack` | 201, 200 (sync) or 202 (queued) for an event | must be stored, once |
| `reject` | 422 for an event | definitely not accepted: must not be stored |
| `unknown` | gave up retrying (the run ended first) | may or may not be stored |

An operation that is not acknowledged (a 5xx, a timeout, a dropped connection) is retried
with the same `event_id`s until it is, moving to the next API process when the connection
fails; so a retry of an event that was in fact stored gets its original receipt, never a
second copy. The wait between retries honours `Retry-After` up to `retry_cap_s`, so that the
drill measures when the service is back rather than how patient the client is.

The generator stops by itself: when `RUN_DIR/stop` appears it starts no new operation and
settles the ones in flight for at most `settle_s`; it never runs longer than `max_seconds`.
While `RUN_DIR/clock.json` exists, a share of events carry an `occurred_at` from a clock
that jumped (`chaos.actions.jump_clocks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import random
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO, cast

import httpx

__all__ = ["LoadConfig", "main", "make_event", "run"]

ACK_STATUSES = frozenset({200, 201, 202})


@dataclass(frozen=True)
class LoadConfig:
    """What `load.json` says.

    Attributes:
        apis: Base URLs of the API processes.
        tenants: `{"name", "key"}` of each tenant.
        clients: Concurrent client tasks.
        rate: Operations per second of each client (when nothing is retried).
        mix: Share of each operation: `sync`, `async` and `batch` (a queued batch).
        batch_size: Events in a batch operation.
        timeout_s: HTTP timeout of one attempt.
        retry_cap_s: Longest wait between two attempts of one operation.
        settle_s: After `stop`, how long operations in flight keep retrying.
        max_seconds: Hard limit of the whole run.
        seed: Random seed (operations, tenants, skew).
    """

    apis: list[str]
    tenants: list[dict[str, str]]
    clients: int = 8
    rate: float = 4.0
    mix: dict[str, float] = field(default_factory=lambda: {"sync": 0.5, "async": 0.5})
    batch_size: int = 10
    timeout_s: float = 10.0
    retry_cap_s: float = 1.0
    settle_s: float = 30.0
    max_seconds: float = 900.0
    seed: int = 8

    @classmethod
    def read(cls, run_dir: Path) -> LoadConfig:
        """The configuration of ``run_dir``."""
        return cls(**json.loads((run_dir / "load.json").read_text(encoding="utf-8")))


_BASE: dict[str, Any] = {
    "action": "fhir.patient.read",
    "category": "data_access",
    "fhir_action": "R",
    "outcome": "success",
    "principal": {"id": "dr.drill", "type": "user", "roles": ["physician"]},
    "target": {"resource_type": "Patient", "resource_id": "pat-drill", "subject_id": "pat-drill"},
    "data_classification": "PHI",
    "purpose_of_use": "TREAT",
    "session": {"session_id": "drill", "ip_address": "127.0.0.1", "user_agent": "chaos-drill"},
    "details": {"drill": True},
}


def make_event(skew_s: float = 0.0, now: datetime | None = None) -> dict[str, Any]:
    """A valid event with a fresh `event_id`, from a client clock ``skew_s`` seconds off."""
    occurred = (now or datetime.now(UTC)) + timedelta(seconds=skew_s)
    event = copy.deepcopy(_BASE)
    event["event_id"] = str(uuid.uuid4())
    event["occurred_at"] = occurred.isoformat().replace("+00:00", "Z")
    event["correlation_id"] = event["event_id"][:8]
    return event


class History:
    """The history file, line-buffered: a record is on disk once its line is written."""

    def __init__(self, path: Path) -> None:
        self._out: TextIO = path.open("a", encoding="utf-8", buffering=1)

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        self._out.write(json.dumps(record, separators=(",", ":")) + "\n")

    def close(self) -> None:
        """Close the file."""
        self._out.close()


@dataclass
class _Event:
    body: dict[str, Any]
    skew_s: float
    expect: str  # "accept" or "reject" (a clock beyond the service's bounds)


class Generator:
    """Client tasks, the stop and clock controls, and the history they write."""

    def __init__(self, run_dir: Path, config: LoadConfig) -> None:
        self.run_dir = run_dir
        self.config = config
        self.history = History(run_dir / "history.ndjson")
        self.random = random.Random(config.seed)  # noqa: S311 - load shape, not secrets
        self.started = time.time()
        self.stopping = asyncio.Event()
        self.settle_deadline = float("inf")
        self._op = 0

    def _stop_requested(self) -> bool:
        return (self.run_dir / "stop").exists() or (
            time.time() - self.started > self.config.max_seconds
        )

    def _clock(self) -> dict[str, Any] | None:
        path = self.run_dir / "clock.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return cast(dict[str, Any], data) if isinstance(data, dict) else None

    def _events(self, mode: str) -> list[_Event]:
        if mode == "batch":
            return [_Event(make_event(), 0.0, "accept") for _ in range(self.config.batch_size)]
        clock = self._clock()
        skew, expect = 0.0, "accept"
        if clock and self.random.random() < float(clock.get("fraction", 0.5)):
            skew = float(self.random.choice(clock["offsets_s"]))
            future, past = float(clock["future_s"]), float(clock["past_s"])
            expect = "accept" if -past < skew < future else "reject"
        return [_Event(make_event(skew), skew, expect)]

    def client_modes(self) -> list[str]:
        """The operation each client sends, in proportion to the mix.

        Each client keeps to one kind of operation: a client blocked retrying a synchronous
        event must not hold back queued ones, which the service keeps accepting when the
        database is away.
        """
        mix = {m: w for m, w in self.config.mix.items() if w > 0}
        total = sum(mix.values())
        modes: list[str] = []
        for mode, weight in mix.items():
            modes += [mode] * max(1, round(self.config.clients * weight / total))
        return [modes[i % len(modes)] for i in range(self.config.clients)]

    async def client(self, index: int, mode: str) -> None:
        """One client task: steady operations of one kind until told to stop."""
        api = index % len(self.config.apis)
        interval = 1.0 / self.config.rate
        next_at = time.monotonic() + self.random.random() * interval
        async with httpx.AsyncClient(timeout=self.config.timeout_s) as http:
            while not self.stopping.is_set():
                delay = next_at - time.monotonic()
                if delay > 0:
                    try:
                        await asyncio.wait_for(self.stopping.wait(), timeout=delay)
                        break
                    except TimeoutError:
                        pass
                next_at = max(next_at + interval, time.monotonic())
                tenant = self.random.choice(self.config.tenants)
                api = await self.operation(http, api, tenant, mode, self._events(mode))

    async def operation(
        self,
        http: httpx.AsyncClient,
        api: int,
        tenant: dict[str, str],
        mode: str,
        events: list[_Event],
    ) -> int:
        """Send one operation until it is acknowledged or refused; returns the API to use next."""
        self._op += 1
        op = self._op
        if mode == "batch":
            path, body = "/v1/events:batch?mode=async", {"events": [e.body for e in events]}
        else:
            path, body = f"/v1/events?mode={mode}", events[0].body
        headers = {"Authorization": f"Bearer {tenant['key']}"}
        attempt = 0
        while True:
            attempt += 1
            url = self.config.apis[api] + path
            t0 = time.time()
            status, error, reply, retry_after = 0, None, None, None
            try:
                resp = await http.post(url, json=body, headers=headers)
                status = resp.status_code
                retry_after = resp.headers.get("retry-after")
                if status in ACK_STATUSES:
                    reply = resp.json()
            except (httpx.HTTPError, ValueError) as exc:
                error = type(exc).__name__
            t1 = time.time()
            result = "ok" if status in ACK_STATUSES else "fail" if 400 <= status < 500 else "info"
            self.history.write(
                {
                    "k": "attempt",
                    "t0": round(t0, 4),
                    "t1": round(t1, 4),
                    "op": op,
                    "try": attempt,
                    "mode": mode,
                    "n": len(events),
                    "api": api,
                    "status": status,
                    "error": error,
                    "result": result,
                }
            )
            if result == "ok":
                self._acknowledged(tenant["name"], mode, status, events, reply, t1)
                return api
            if result == "fail":
                for e in events:
                    self._record("reject", tenant["name"], mode, status, e, t1)
                return api
            if error is not None:
                api = (api + 1) % len(self.config.apis)  # that process may be gone: fail over
            if self.stopping.is_set() and time.time() > self.settle_deadline:
                for e in events:
                    self._record("unknown", tenant["name"], mode, status, e, t1)
                return api
            await asyncio.sleep(self._backoff(attempt, retry_after))

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        wait = min(0.05 * 2**attempt, self.config.retry_cap_s)
        if retry_after is not None:
            with contextlib.suppress(ValueError):
                wait = max(wait, min(float(retry_after), self.config.retry_cap_s))
        return float(wait * (0.8 + 0.4 * self.random.random()))

    def _acknowledged(
        self,
        tenant: str,
        mode: str,
        status: int,
        events: list[_Event],
        reply: Any,
        t: float,
    ) -> None:
        receipts: list[dict[str, Any]] = []
        if isinstance(reply, dict) and isinstance(reply.get("receipts"), list):
            receipts = reply["receipts"]
        elif isinstance(reply, dict) and "seq" in reply:
            receipts = [reply]
        by_id = {r.get("event_id"): r for r in receipts if isinstance(r, dict)}
        for e in events:
            receipt = by_id.get(e.body["event_id"], {})
            self._record("ack", tenant, mode, status, e, t, receipt)

    def _record(
        self,
        kind: str,
        tenant: str,
        mode: str,
        status: int,
        event: _Event,
        t: float,
        receipt: dict[str, Any] | None = None,
    ) -> None:
        record: dict[str, Any] = {
            "k": kind,
            "t": round(t, 4),
            "event_id": event.body["event_id"],
            "tenant": tenant,
            "mode": mode,
            "status": status,
        }
        if event.skew_s:
            record["skew_s"] = event.skew_s
            record["expect"] = event.expect
        if receipt and "seq" in receipt:
            record["seq"] = receipt["seq"]
            record["hash"] = receipt.get("hash")
        self.history.write(record)

    async def watch(self) -> None:
        """Turn the stop file (or the time limit) into the stop event."""
        while not self._stop_requested() and not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=0.1)
        if self.stopping.is_set():
            return  # terminated: the settle deadline is already set
        self.settle_deadline = time.time() + self.config.settle_s
        self.stopping.set()

    async def run(self) -> None:
        """Run the clients until stopped and settled."""
        watcher = asyncio.create_task(self.watch())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._terminate)
        clients = [
            asyncio.create_task(self.client(i, mode)) for i, mode in enumerate(self.client_modes())
        ]
        try:
            await asyncio.gather(*clients)
        finally:
            watcher.cancel()
            self.history.close()

    def _terminate(self) -> None:
        # Asked to stop at once (a rollback): in-flight operations end as `unknown`.
        self.settle_deadline = 0.0
        self.stopping.set()


async def run(run_dir: Path) -> None:
    """Generate load for ``run_dir`` until it is stopped."""
    await Generator(run_dir, LoadConfig.read(run_dir)).run()


def main(argv: list[str] | None = None) -> int:
    """`python -m chaos.load RUN_DIR`."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m chaos.load RUN_DIR\n")
        return 2
    asyncio.run(run(Path(args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
