"""`IngestService.commit` retries as stamina does, though its first attempt runs outside it.

The committer here is a stand-in that fails a given number of times: what is under test is
the retry loop around it (attempts, backoff, the retry hooks behind `stamina_retries_total`,
the deadline). The real committer failing against a stopped or frozen PostgreSQL is in
`tests/integration/pipeline/test_degradation.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import stamina.instrumentation
from stamina.instrumentation import RetryDetails

from reference_impl.core.errors import ConflictError, DatabaseUnavailableError
from reference_impl.core.settings import Settings
from reference_impl.pipeline.breakers import Breakers
from reference_impl.pipeline.service import Committed, IngestService


class _FailingCommitter:
    """Fails its first ``failures`` submits, taking ``delay`` seconds each."""

    def __init__(self, failures: int, delay: float = 0.0) -> None:
        self.failures = failures
        self.delay = delay
        self.calls = 0

    async def submit(self, tenant: str, events: Sequence[Any]) -> list[Any]:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.calls <= self.failures:
            raise DatabaseUnavailableError("the event store is unavailable; retry")
        return [f"receipt-{self.calls}"]


@pytest.fixture
def retries() -> Iterator[list[RetryDetails]]:
    """The retries stamina schedules, as its instrumentation hooks see them."""
    seen: list[RetryDetails] = []
    before = stamina.instrumentation.get_on_retry_hooks()
    stamina.instrumentation.set_on_retry_hooks([seen.append])
    try:
        yield seen
    finally:
        stamina.instrumentation.set_on_retry_hooks(before)


def _service(committer: _FailingCommitter, **settings: Any) -> IngestService:
    values = {"profile": "test", "retry_attempts": 3, "retry_timeout_s": 2.0, **settings}
    return IngestService(
        Settings(**values),
        committer,  # type: ignore[arg-type]
        queue=None,  # type: ignore[arg-type]
        breakers=Breakers(threshold=5, reset_s=30.0),
    )


async def test_a_first_attempt_that_succeeds_schedules_no_retry(
    retries: list[RetryDetails],
) -> None:
    committer = _FailingCommitter(failures=0)
    assert await _service(committer).commit("t", []) == Committed(["receipt-1"])
    assert (committer.calls, retries) == (1, [])


async def test_failures_are_retried_with_stamina_backoff_and_counted(
    retries: list[RetryDetails],
) -> None:
    committer = _FailingCommitter(failures=2)
    assert await _service(committer).commit("t", []) == Committed(["receipt-3"])
    assert committer.calls == 3
    assert [r.retry_num for r in retries] == [1, 2]
    assert all(isinstance(r.caused_by, DatabaseUnavailableError) for r in retries)
    # wait_initial 0.05 s, doubling, plus up to 0.1 s of jitter: as if stamina ran them all.
    assert 0.05 <= retries[0].wait_for <= 0.15
    assert 0.1 <= retries[1].wait_for <= 0.2


async def test_when_the_attempts_run_out_the_last_failure_is_raised(
    retries: list[RetryDetails],
) -> None:
    committer = _FailingCommitter(failures=10)
    with pytest.raises(DatabaseUnavailableError):
        await _service(committer).commit("t", [])
    assert committer.calls == 3
    assert [r.retry_num for r in retries] == [1, 2]


async def test_a_first_attempt_that_outlasts_the_deadline_is_not_retried(
    retries: list[RetryDetails],
) -> None:
    committer = _FailingCommitter(failures=10, delay=0.15)
    with pytest.raises(DatabaseUnavailableError):
        await _service(committer, retry_timeout_s=0.1).commit("t", [])
    assert (committer.calls, retries) == (1, [])


async def test_the_deadline_counts_from_the_first_attempt(retries: list[RetryDetails]) -> None:
    committer = _FailingCommitter(failures=10, delay=0.12)
    with pytest.raises(DatabaseUnavailableError):
        await _service(committer, retry_attempts=10, retry_timeout_s=0.3).commit("t", [])
    # 0.12 s for the first attempt leaves 0.18 s: one backoff and attempt fit, not three.
    assert committer.calls < 4
    assert len(retries) == committer.calls - 1


async def test_client_errors_are_not_retried(retries: list[RetryDetails]) -> None:
    class _Conflicting(_FailingCommitter):
        async def submit(self, tenant: str, events: Sequence[Any]) -> list[Any]:
            self.calls += 1
            raise ConflictError("event_id reused with other content")

    committer = _Conflicting(failures=0)
    with pytest.raises(ConflictError):
        await _service(committer).commit("t", [])
    assert (committer.calls, retries) == (1, [])
