"""The load generator sends events the service accepts, and skewed clocks where the drill
says: within the service's bounds accepted, beyond them refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chaos.load import Generator, LoadConfig, make_event
from reference_impl.core.errors import ValidationFailedError
from reference_impl.core.settings import Settings
from reference_impl.events.validation import parse_event


@contextmanager
def _generator(tmp_path: Path, **config: object) -> Iterator[Generator]:
    values: dict[str, object] = {"apis": ["http://127.0.0.1:9"], "tenants": [], **config}
    gen = Generator(tmp_path, LoadConfig(**values))  # type: ignore[arg-type]
    try:
        yield gen
    finally:
        gen.history.close()


def test_generated_events_are_valid() -> None:
    event = make_event()
    prepared = parse_event(json.dumps(event).encode(), Settings())
    assert str(prepared.event_id) == event["event_id"]


@pytest.mark.parametrize(
    ("skew_s", "accepted"),
    [(150.0, True), (-15 * 86400.0, True), (3600.0, False), (-45 * 86400.0, False)],
)
def test_the_default_clock_jumps_straddle_the_service_bounds(skew_s: float, accepted: bool) -> None:
    raw = json.dumps(make_event(skew_s)).encode()
    if accepted:
        parse_event(raw, Settings())
    else:
        with pytest.raises(ValidationFailedError):
            parse_event(raw, Settings())


def test_each_client_keeps_to_one_kind_of_operation(tmp_path: Path) -> None:
    mix = {"sync": 0.5, "async": 0.25, "batch": 0.25}
    with _generator(tmp_path, clients=8, mix=mix) as gen:
        modes = gen.client_modes()
    assert len(modes) == 8
    assert modes.count("sync") == 4 and modes.count("async") == 2 and modes.count("batch") == 2


def test_clock_file_marks_what_the_service_must_refuse(tmp_path: Path) -> None:
    clock = {"fraction": 1.0, "offsets_s": [3600.0], "future_s": 300.0, "past_s": 86400.0}
    (tmp_path / "clock.json").write_text(json.dumps(clock), encoding="utf-8")
    with _generator(tmp_path) as gen:
        [event] = gen._events("sync")
        assert (event.skew_s, event.expect) == (3600.0, "reject")
        (tmp_path / "clock.json").unlink()
        [event] = gen._events("sync")
        assert (event.skew_s, event.expect) == (0.0, "accept")
        assert len(gen._events("batch")) == gen.config.batch_size
