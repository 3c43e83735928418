"""Actions the experiments in `chaos/experiments/` call (Chaos Toolkit `python` provider).

Each takes the run directory first, finds the drill's live stack there, and records a
timeline mark when a fault starts or ends: recovery is measured from `fault_end`. Actions
that freeze something (PostgreSQL, PgBouncer) undo it themselves before they return, and the
rollback (`stop_stack`) resumes and stops everything in any case.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from chaos.harness import DrillError, DrillInterrupted, Stack, StackSpec, mark, stop_run
from chaos.harness import get_stack as _get_stack

__all__ = [
    "drain_queue",
    "exhaust_valkey_memory",
    "freeze_postgres",
    "interrupt",
    "jump_clocks",
    "kill_api",
    "kill_pgbouncer",
    "kill_postgres",
    "kill_valkey",
    "kill_worker_mid_batch",
    "pause_pgbouncer",
    "restart_api",
    "restart_pgbouncer",
    "restart_postgres",
    "restart_valkey",
    "restart_worker",
    "restore_clocks",
    "restore_valkey_memory",
    "start_load",
    "start_stack",
    "stop_load",
    "stop_stack",
    "terminate_connections",
    "wait",
]


def interrupt(message: str) -> DrillInterrupted:
    """Stop the Chaos Toolkit run after this action (rollbacks still play) and return the
    error for the action to raise.

    The Chaos Toolkit turns an exception of an action into a failed activity and goes on with
    the method; a drill whose servers did not start or whose fault was not injected must not
    go on. Its documented way to stop a run is SIGUSR1 to itself, which it handles only while
    it runs an experiment: outside one, the signal is not sent.
    """
    handler = signal.getsignal(signal.SIGUSR1)
    if handler not in (signal.SIG_DFL, signal.SIG_IGN, None):
        from chaoslib.exit import exit_gracefully  # type: ignore[import-untyped]

        exit_gracefully()
    return DrillInterrupted(message)


def get_stack(run_dir: Path) -> Stack:
    """The run's live stack; without one, the run is stopped."""
    try:
        return _get_stack(run_dir)
    except DrillInterrupted as exc:
        raise interrupt(str(exc)) from None


# ------------------------------------------------------------------------------ the stack


# --8<-- [start:start-stack]
def start_stack(
    run_dir: str,
    apis: int = 1,
    workers: int = 1,
    pgbouncer: str | None = None,
    tenants: int = 3,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Start PostgreSQL, Valkey (and PgBouncer), migrate, create tenants, run the service.

    Args:
        run_dir: The drill's run directory (created).
        apis: `auditkit serve` processes.
        workers: `auditkit worker` processes.
        pgbouncer: Pool mode of a PgBouncer between the service and PostgreSQL, or None.
        tenants: Tenants the load is spread over.
        settings: Extra service settings, `AUDIT_` prefix left out (`{"breaker_reset_s": 5}`).
    """
    spec = StackSpec(
        apis=apis,
        workers=workers,
        pgbouncer=pgbouncer,
        tenants=tenants,
        settings={k: str(v) for k, v in (settings or {}).items()},
    )
    stack = Stack(Path(run_dir), spec)
    try:
        stack.start()
    except Exception as exc:
        stack.stop()
        raise interrupt(f"the drill's stack did not start: {exc}") from exc
    mark(stack.run_dir, "stack_up")
    return {"apis": stack.api_urls(), "postgres": stack.postgres.port, "valkey": stack.valkey.port}


# --8<-- [end:start-stack]


def stop_stack(run_dir: str) -> None:
    """Rollback: stop every process and server of the run (paused ones included)."""
    stop_run(Path(run_dir))


# ------------------------------------------------------------------------------- the load


def start_load(
    run_dir: str,
    clients: int = 8,
    rate: float = 4.0,
    mix: Mapping[str, float] | None = None,
    batch_size: int = 10,
    settle_s: float = 30.0,
    max_seconds: float = 900.0,
) -> int:
    """Start steady load on every API process; return once the first event is acknowledged.

    Args:
        run_dir: The run directory.
        clients: Concurrent clients.
        rate: Operations per second of each client.
        mix: Share of `sync`, `async` and `batch` operations.
        batch_size: Events of a batch operation.
        settle_s: After `stop_load`, how long unacknowledged operations keep retrying.
        max_seconds: The generator stops by itself after this long whatever happens.
    """
    stack = get_stack(Path(run_dir))
    stack.start_load(
        {
            "apis": stack.api_urls(),
            "tenants": [{"name": t.name, "key": t.key} for t in stack.tenants],
            "clients": clients,
            "rate": rate,
            "mix": dict(mix or {"sync": 0.5, "async": 0.5}),
            "batch_size": batch_size,
            "settle_s": settle_s,
            "max_seconds": max_seconds,
        }
    )
    history = stack.run_dir / "history.ndjson"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if history.exists() and '"k":"ack"' in history.read_text(encoding="utf-8"):
            mark(stack.run_dir, "load_start")
            return clients
        if stack.load is not None and stack.load.poll() is not None:
            break
        time.sleep(0.1)
    raise interrupt("the load generator acknowledged nothing; see logs/load.log")


def stop_load(run_dir: str, timeout_s: float = 60.0) -> float:
    """Ask the load generator to stop and settle; return the seconds it took."""
    stack = get_stack(Path(run_dir))
    started = mark(stack.run_dir, "load_stop")
    (stack.run_dir / "stop").touch()
    if stack.load is not None:
        try:
            stack.load.wait(timeout_s)
        except Exception:
            stack.load.kill()
            raise DrillError("the load generator did not settle in time") from None
    return round(time.time() - started, 3)


def wait(seconds: float) -> float:
    """Let the load run for ``seconds``."""
    time.sleep(float(seconds))
    return float(seconds)


# --8<-- [start:drain]
def drain_queue(run_dir: str, timeout_s: float = 90.0) -> float:
    """Wait until the workers have emptied the ingest streams; return the seconds it took.

    Raises:
        DrillError: entries are still queued after ``timeout_s``.
    """
    stack = get_stack(Path(run_dir))
    started = time.monotonic()
    while (depth := stack.queue_depth()) > 0:
        if time.monotonic() - started > timeout_s:
            raise DrillError(f"{depth} entries still queued after {timeout_s:.0f}s")
        time.sleep(0.2)
    return round(time.monotonic() - started, 3)


# --8<-- [end:drain]


# ---------------------------------------------------------------------------- PostgreSQL


# --8<-- [start:postgres-kill]
def kill_postgres(run_dir: str) -> None:
    """SIGKILL PostgreSQL and all its backends, as a crash of its host would."""
    stack = get_stack(Path(run_dir))
    mark(stack.run_dir, "fault_start", what="postgresql SIGKILL")
    stack.postgres.kill()


def restart_postgres(run_dir: str) -> float:
    """Start PostgreSQL again (crash recovery runs); return the seconds it took."""
    stack = get_stack(Path(run_dir))
    started = time.monotonic()
    stack.postgres.start()
    mark(stack.run_dir, "fault_end", what="postgresql SIGKILL")
    stack.save()
    return round(time.monotonic() - started, 3)


# --8<-- [end:postgres-kill]


# --8<-- [start:postgres-freeze]
def freeze_postgres(run_dir: str, seconds: float) -> None:
    """SIGSTOP PostgreSQL and every backend for ``seconds``, then SIGCONT."""
    stack = get_stack(Path(run_dir))
    mark(stack.run_dir, "fault_start", what=f"postgresql SIGSTOP {seconds:g}s")
    stack.postgres.pause()
    try:
        time.sleep(float(seconds))
    finally:
        stack.postgres.resume()
        mark(stack.run_dir, "fault_end", what=f"postgresql SIGSTOP {seconds:g}s")


# --8<-- [end:postgres-freeze]


# --8<-- [start:terminate]
TERMINATE_SQL = """
SELECT count(pg_terminate_backend(pid))
FROM pg_stat_activity
WHERE application_name LIKE 'auditkit%' AND pid <> pg_backend_pid()
"""


def terminate_connections(run_dir: str, rounds: int = 1, interval_s: float = 1.0) -> int:
    """`pg_terminate_backend` every connection of the service (application_name `auditkit*`),
    ``rounds`` times ``interval_s`` apart; return how many were terminated."""
    stack = get_stack(Path(run_dir))
    what = f"pg_terminate_backend x{rounds}"
    mark(stack.run_dir, "fault_start", what=what)
    total = 0
    for i in range(rounds):
        if i:
            time.sleep(float(interval_s))
        total += int(stack.sql(TERMINATE_SQL)[0][0])
    mark(stack.run_dir, "fault_end", what=what, terminated=total)
    return total


# --8<-- [end:terminate]


# -------------------------------------------------------------------------------- Valkey


def kill_valkey(run_dir: str) -> None:
    """SIGKILL Valkey (its append-only file holds every acknowledged write)."""
    stack = get_stack(Path(run_dir))
    mark(stack.run_dir, "fault_start", what="valkey SIGKILL")
    stack.valkey.kill()


def restart_valkey(run_dir: str) -> float:
    """Start Valkey again from its append-only file; return the seconds it took."""
    stack = get_stack(Path(run_dir))
    started = time.monotonic()
    stack.valkey.start()
    mark(stack.run_dir, "fault_end", what="valkey SIGKILL")
    stack.save()
    return round(time.monotonic() - started, 3)


# --8<-- [start:valkey-oom]
def exhaust_valkey_memory(run_dir: str, maxmemory: str = "128kb") -> str:
    """Shrink `maxmemory` below what Valkey already uses: with `noeviction`, every write is
    refused with OOM from now on. Returns the policy (it must be `noeviction`)."""
    stack = get_stack(Path(run_dir))
    client = stack.redis_client()
    try:
        policy = str(_config(client, "maxmemory-policy"))
        if policy != "noeviction":
            raise DrillError(f"valkey runs with maxmemory-policy {policy}, not noeviction")
        previous = _config(client, "maxmemory")
        (stack.run_dir / "maxmemory.previous").write_text(previous, encoding="utf-8")
        mark(stack.run_dir, "fault_start", what=f"valkey maxmemory {maxmemory}")
        client.config_set("maxmemory", maxmemory)
    finally:
        client.close()
    return policy


def restore_valkey_memory(run_dir: str) -> None:
    """Give Valkey its memory back."""
    stack = get_stack(Path(run_dir))
    previous = (stack.run_dir / "maxmemory.previous").read_text(encoding="utf-8")
    client = stack.redis_client()
    try:
        client.config_set("maxmemory", previous)
    finally:
        client.close()
    mark(stack.run_dir, "fault_end", what="valkey maxmemory")


# --8<-- [end:valkey-oom]


def _config(client: Any, name: str) -> str:
    reply = client.config_get(name)
    value = reply.get(name, reply.get(name.encode(), b""))
    return value.decode() if isinstance(value, bytes) else str(value)


# ------------------------------------------------------------------------------- workers


# --8<-- [start:worker-kill]
def kill_worker_mid_batch(
    run_dir: str, index: int = 0, min_pending: int = 5, timeout_s: float = 15.0
) -> int:
    """SIGKILL worker ``index`` while it holds at least ``min_pending`` delivered,
    unacknowledged entries, or after ``timeout_s`` the next time it holds any; return how
    many. They stay pending until a worker takes them over.

    Raises:
        DrillInterrupted: the worker held no entry at all within twice ``timeout_s``.
    """
    stack = get_stack(Path(run_dir))
    worker = stack.workers[index]
    consumer = f"drill-w{index}"
    deadline = time.monotonic() + timeout_s
    pending = stack.pending_of(consumer)
    while pending < min_pending and time.monotonic() < deadline:
        time.sleep(0.002)
        pending = stack.pending_of(consumer)
    # A worker that keeps up with the load takes a few entries at a time and holds them
    # only while it commits them, so the deadline can fall between two batches: then any
    # batch in hand will do.
    grace = deadline + timeout_s
    while pending == 0 and time.monotonic() < grace:
        time.sleep(0.001)
        pending = stack.pending_of(consumer)
    if pending == 0:
        raise interrupt(f"{consumer} never held a batch within {2 * timeout_s:g}s")
    mark(stack.run_dir, "fault_start", what=f"worker {consumer} SIGKILL", pending=pending)
    worker.kill()
    return pending


def restart_worker(run_dir: str, index: int = 0) -> None:
    """Start worker ``index`` again under the same consumer name: it reads its own pending
    entries first."""
    stack = get_stack(Path(run_dir))
    stack.workers[index].start()
    mark(stack.run_dir, "fault_end", what=f"worker drill-w{index} SIGKILL")
    stack.save()


# --8<-- [end:worker-kill]


# ------------------------------------------------------------------------- API processes


def kill_api(run_dir: str, index: int = 0) -> None:
    """SIGKILL API process ``index`` under load (requests in flight are cut)."""
    stack = get_stack(Path(run_dir))
    mark(stack.run_dir, "fault_start", what=f"api-{index} SIGKILL")
    stack.apis[index].kill()


def restart_api(run_dir: str, index: int = 0) -> None:
    """Start API process ``index`` again on its port; return once it is ready."""
    stack = get_stack(Path(run_dir))
    stack.apis[index].start()
    mark(stack.run_dir, "fault_end", what=f"api-{index} SIGKILL")
    stack.save()


# ----------------------------------------------------------------------------- PgBouncer


def _bouncer(stack: Stack) -> Any:
    if stack.pgbouncer is None:
        raise DrillError("this drill runs no PgBouncer")
    return stack.pgbouncer


# --8<-- [start:pgbouncer]
def pause_pgbouncer(run_dir: str, seconds: float) -> bool:
    """`PAUSE auditkit` on PgBouncer's admin console, held ``seconds``, then `RESUME`.

    PAUSE completes once every server connection is released: at the end of each
    transaction under transaction pooling, when the client disconnects under session
    pooling. Until RESUME, new logins wait in PgBouncer. Returns whether PAUSE completed.
    """
    stack = get_stack(Path(run_dir))
    bouncer = _bouncer(stack)
    what = f"pgbouncer PAUSE {seconds:g}s"
    mark(stack.run_dir, "fault_start", what=what)
    pausing = bouncer.admin_async("PAUSE auditkit")
    try:
        time.sleep(float(seconds))
        completed = bool(pausing.poll() == 0)
    finally:
        with contextlib.suppress(DrillError):
            bouncer.admin("RESUME auditkit")
        with contextlib.suppress(Exception):
            pausing.wait(1)
        if pausing.poll() is None:
            pausing.kill()
            pausing.wait(1)
    mark(stack.run_dir, "fault_end", what=what, pause_completed=completed)
    return completed


def kill_pgbouncer(run_dir: str) -> None:
    """SIGKILL PgBouncer: every client connection of the service drops at once."""
    stack = get_stack(Path(run_dir))
    mark(stack.run_dir, "fault_start", what="pgbouncer SIGKILL")
    _bouncer(stack).kill()


def restart_pgbouncer(run_dir: str) -> None:
    """Start PgBouncer again on its port."""
    stack = get_stack(Path(run_dir))
    _bouncer(stack).start()
    mark(stack.run_dir, "fault_end", what="pgbouncer SIGKILL")
    stack.save()


# --8<-- [end:pgbouncer]


# -------------------------------------------------------------------------------- clocks


# --8<-- [start:clocks]
def jump_clocks(
    run_dir: str, fraction: float = 0.5, offsets_s: Sequence[float] | None = None
) -> dict[str, Any]:
    """Make a share of the clients' clocks jump: their events carry `occurred_at` off by one
    of ``offsets_s`` (default: within the service's bounds and beyond them, both ways).

    The bounds come from the service's settings (`max_future_skew_s`, `max_event_age_days`):
    within them an event must be accepted and stored, beyond them refused with 422.
    """
    stack = get_stack(Path(run_dir))
    future = float(stack.env.get("AUDIT_MAX_FUTURE_SKEW_S", "300"))
    past = float(stack.env.get("AUDIT_MAX_EVENT_AGE_DAYS", "30")) * 86400
    offsets = list(offsets_s or [future / 2, -past / 2, future * 12, -past * 1.5])
    clock = {"fraction": fraction, "offsets_s": offsets, "future_s": future, "past_s": past}
    mark(stack.run_dir, "fault_start", what="client clocks jump")
    (stack.run_dir / "clock.json").write_text(_json(clock), encoding="utf-8")
    return clock


def restore_clocks(run_dir: str) -> None:
    """Clients' clocks are right again."""
    stack = get_stack(Path(run_dir))
    (stack.run_dir / "clock.json").unlink(missing_ok=True)
    mark(stack.run_dir, "fault_end", what="client clocks jump")


# --8<-- [end:clocks]


def _json(data: Any) -> str:
    import json

    return json.dumps(data, indent=2)
