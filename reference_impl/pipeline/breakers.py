"""Circuit breakers around PostgreSQL and Redis, built on purgatory.

A breaker counts consecutive failures of one dependency. At `threshold` it opens: calls
fail at once with a 503 and `Retry-After`, instead of each waiting for a timeout and piling
up. After `reset_s` one trial call goes through (half-open); success closes the breaker.
Client errors (a validation problem, a conflict) are not failures of the dependency and do
not count.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from reference_impl.core.errors import AuditError, ServiceUnavailableError
from reference_impl.observability.metrics import BREAKER_STATE, BREAKER_TRANSITIONS

__all__ = ["POSTGRESQL", "REDIS", "BreakerOpenError", "Breakers"]

POSTGRESQL = "postgresql"
REDIS = "redis"

_STATE_VALUE = {"closed": 0, "half-opened": 1, "opened": 2}
_STATE_NAME = {"closed": "closed", "half-opened": "half-open", "opened": "open"}


class BreakerOpenError(Exception):
    """The breaker is open: the dependency is not called."""

    def __init__(self, name: str, retry_after: int) -> None:
        super().__init__(f"{name} circuit breaker is open")
        self.name = name
        self.retry_after = retry_after


@dataclass
class _Status:
    state: str = "closed"
    failures: int = 0
    opened_at: float | None = None


def _is_client_error(exc: BaseException) -> bool:
    return isinstance(exc, AuditError) and not isinstance(exc, ServiceUnavailableError)


class Breakers:
    """The service's breakers, their states for `/health/ready`, and their metrics.

    Args:
        threshold: Consecutive failures that open a breaker.
        reset_s: Seconds an open breaker waits before a trial call.
    """

    def __init__(self, threshold: int, reset_s: float) -> None:
        self.reset_s = reset_s
        self._factory = AsyncCircuitBreakerFactory(
            default_threshold=threshold,
            default_ttl=reset_s,
            exclude=[(AuditError, _is_client_error)],
        )
        self._factory.add_listener(self._on_event)
        self._breakers: dict[str, Any] = {}  # name → purgatory's AsyncCircuitBreaker
        self._status: dict[str, _Status] = {POSTGRESQL: _Status(), REDIS: _Status()}
        for name in self._status:
            BREAKER_STATE.labels(name).set(0)

    def _on_event(self, name: str, event_name: str, event: Any) -> None:
        status = self._status.setdefault(name, _Status())
        if event_name == "state_changed":
            status.state = _STATE_NAME[event.state]
            status.opened_at = event.opened_at
            BREAKER_STATE.labels(name).set(_STATE_VALUE[event.state])
            BREAKER_TRANSITIONS.labels(name, status.state).inc()
            if status.state == "closed":
                status.failures = 0
        elif event_name == "failed":
            status.failures = event.failure_count
        elif event_name == "recovered":
            status.failures = 0

    # --8<-- [start:guard]
    @asynccontextmanager
    async def guard(self, name: str) -> AsyncIterator[None]:
        """Run the block under breaker ``name``.

        Raises:
            BreakerOpenError: the breaker is open; the block did not run.
        """
        breaker = self._breakers.get(name) or await self._breaker(name)
        try:
            async with breaker:
                yield
        except OpenedState:
            raise BreakerOpenError(name, self.retry_after(name)) from None

    # --8<-- [end:guard]

    async def _breaker(self, name: str) -> Any:
        # The factory keeps each breaker's state in its in-process storage and hands out a
        # new wrapper of the same state at every call (a unit of work and a lookup, on every
        # request): one wrapper per name is kept instead.
        breaker = self._breakers[name] = await self._factory.get_breaker(name)
        return breaker

    def retry_after(self, name: str) -> int:
        """Whole seconds until breaker ``name`` lets a trial call through (at least 1)."""
        status = self._status.get(name)
        if status is None or status.opened_at is None:
            return 1
        return max(1, round(status.opened_at + self.reset_s - time.time()))

    def state(self, name: str) -> str:
        """`closed`, `open` or `half-open`."""
        return self._status.get(name, _Status()).state

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every breaker's state and consecutive failures, for the readiness probe."""
        return {n: {"state": s.state, "failures": s.failures} for n, s in self._status.items()}
