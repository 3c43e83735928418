"""Stateful property: any sequence of ingest, worker steps, crashes and restarts leaves
stored == acknowledged, with no event stored twice and every chain valid."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import asyncpg
import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from reference_impl.core.settings import Settings
from reference_impl.events.validation import PreparedEvent, parse_event
from reference_impl.events.verification import verify_tenant
from reference_impl.pipeline.runner import worker_runtime
from reference_impl.pipeline.service import Queued
from reference_impl.pipeline.worker import Worker
from tests.support.events import make_event

pytestmark = [pytest.mark.integration, pytest.mark.property, pytest.mark.slow]

T = TypeVar("T")


class _Loop:
    """An event loop on its own thread, so synchronous rules can await."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def make_machine(base: Settings) -> type[RuleBasedStateMachine]:
    quick = base.model_copy(update={"queue_claim_idle_s": 0.0, "worker_max_attempts": 1000})

    class WorkerCrashes(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.io = _Loop()
            self.tenant = f"crash-{secrets.token_hex(5)}"
            self.sent: dict[str, PreparedEvent] = {}
            self.acknowledged: set[str] = set()
            self.consumer = f"c-{secrets.token_hex(3)}"
            self.cm = worker_runtime(quick, self.consumer)
            self.worker: Worker = self.io.run(self.cm.__aenter__())
            self.io.run(self.worker.queue.ensure_groups())
            db = base.database_url.get_secret_value()  # type: ignore[union-attr]
            self.db: asyncpg.Connection = self.io.run(asyncpg.connect(db))

        def _events(self, n: int) -> list[PreparedEvent]:
            return [parse_event(json.dumps(make_event()).encode(), quick) for _ in range(n)]

        def _ingest(self, events: list[PreparedEvent], mode: str) -> None:
            outcome = self.io.run(self.worker.ingest.ingest(self.tenant, events, mode))  # type: ignore[arg-type]
            assert isinstance(outcome, Queued) == (mode == "async")
            for e in events:
                self.sent[str(e.event_id)] = e
                self.acknowledged.add(str(e.event_id))

        @rule(n=st.integers(1, 6))
        def ingest_async(self, n: int) -> None:
            self._ingest(self._events(n), "async")

        @rule(n=st.integers(1, 3))
        def ingest_sync(self, n: int) -> None:
            self._ingest(self._events(n), "sync")

        @precondition(lambda self: self.sent)
        @rule(data=st.data(), mode=st.sampled_from(["sync", "async"]))
        def client_retries(self, data: st.DataObject, mode: str) -> None:
            event_id = data.draw(st.sampled_from(sorted(self.sent)))
            self._ingest([self.sent[event_id]], mode)

        @rule(count=st.integers(1, 8))
        def worker_step(self, count: int) -> None:
            async def step() -> None:
                entries = await self.worker.queue.read_own_pending(self.consumer, count)
                if not entries:
                    entries = await self.worker.queue.read(self.consumer, count, 10)
                await self.worker.process(entries)

            self.io.run(step())

        # --8<-- [start:crash-rule]
        @rule(count=st.integers(1, 8), committed=st.integers(0, 8))
        def worker_crashes_mid_batch(self, count: int, committed: int) -> None:
            """Read a batch, commit part of it, die before acknowledging anything."""

            async def crash() -> None:
                entries = await self.worker.queue.read(self.consumer, count, 10)
                for entry in entries[:committed]:
                    if entry.event is not None:
                        await self.worker.ingest.commit(entry.tenant, [entry.event])

            self.io.run(crash())
            self.io.run(self.cm.__aexit__(None, None, None))
            self.consumer = f"c-{secrets.token_hex(3)}"
            self.cm = worker_runtime(quick, self.consumer)
            self.worker = self.io.run(self.cm.__aenter__())

        # --8<-- [end:crash-rule]

        @rule()
        def worker_reclaims(self) -> None:
            async def reclaim() -> None:
                entries = await self.worker.queue.claim_stale(self.consumer, 0, 50)
                await self.worker.process(entries)

            self.io.run(reclaim())

        def _stored(self) -> list[str]:
            rows = self.io.run(
                self.db.fetch("SELECT event_id FROM audit_events WHERE tenant_id = $1", self.tenant)
            )
            return [str(r["event_id"]) for r in rows]

        @invariant()
        def nothing_unacknowledged_or_twice(self) -> None:
            stored = self._stored()
            assert len(stored) == len(set(stored)), "an event is stored twice"
            assert set(stored) <= self.acknowledged

        def teardown(self) -> None:
            try:

                async def drain() -> None:
                    for _ in range(200):
                        entries = await self.worker.queue.read_own_pending(self.consumer, 100)
                        entries += await self.worker.queue.claim_stale(self.consumer, 0, 100)
                        entries += await self.worker.queue.read(self.consumer, 100, 10)
                        if not entries and await self.worker.queue.depth() == 0:
                            return
                        await self.worker.process(entries)
                    raise AssertionError("the queue did not drain")

                self.io.run(drain())
                stored = self._stored()
                assert sorted(stored) == sorted(self.acknowledged)
                engine = self.worker.ingest.committer.engine
                verdict = self.io.run(
                    verify_tenant(engine, self.worker.ingest.committer.keyring, self.tenant)
                )
                assert verdict.result.valid, verdict.result.detail
            finally:
                self.io.run(self.db.close())
                self.io.run(self.cm.__aexit__(None, None, None))
                self.io.close()

    return WorkerCrashes


def test_ingest_crash_restart_sequences_lose_and_duplicate_nothing(settings: Settings) -> None:
    machine = make_machine(settings)
    machine.TestCase.settings = settings_profile
    machine.TestCase().runTest()


settings_profile = hypothesis_settings(
    max_examples=25,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
