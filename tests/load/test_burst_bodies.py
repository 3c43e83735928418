"""The burst drill's batches are all built by the first user, before any is sent."""

from __future__ import annotations

import orjson
import pytest

from loadtests.scenarios.events import BurstBodies, EventFactory

pytestmark = pytest.mark.load


class CountingFactory(EventFactory):
    def __init__(self) -> None:
        super().__init__(seed=1)
        self.built: list[int] = []

    def batch_body(self, size: int) -> bytes:
        self.built.append(size)
        return super().batch_body(size)


def _ids(body: bytes) -> list[str]:
    return [e["event_id"] for e in orjson.loads(body)["events"]]


def test_the_first_take_builds_every_users_batch_and_the_rest_only_take() -> None:
    bodies, factory = BurstBodies(), CountingFactory()
    taken = [bodies.take(factory, users=10, events=5000)]
    assert factory.built == [500] * 10
    taken += [bodies.take(factory, users=10, events=5000) for _ in range(9)]
    assert factory.built == [500] * 10  # nothing more was built while the burst went out
    ids = [i for body in taken for i in _ids(body)]
    assert len(ids) == 5000 and len(set(ids)) == 5000
    bodies.take(factory, users=10, events=5000)  # an eleventh user: a new set is built
    assert len(factory.built) == 20


def test_a_share_is_capped_at_the_batch_limit_and_never_empty() -> None:
    bodies, factory = BurstBodies(), CountingFactory()
    bodies.take(factory, users=2, events=5000)
    assert factory.built == [1000, 1000]
    bodies, factory = BurstBodies(), CountingFactory()
    bodies.take(factory, users=8, events=3)
    assert factory.built == [1] * 8
