"""CPU per event of parsing a batch, by way of models and by way of plain dictionaries.

    uv run python -m loadtests.bench.parsing [--batches 40] [--size 500] [--repeats 7]

Times, on batches of benchmark events in this one process: validating with the documented
model and dumping it (`AuditEventIn`, what ingest did before `PlainSchema`), validating
into plain dictionaries (`PlainSchema`), and the whole of `parse_batch` (validation,
sanitizing, timestamps, canonical bytes, idempotency digest). Each figure is the fastest of
``repeats`` passes over the same bodies: on a shared machine the fastest pass is the one
least disturbed by other work.
"""

from __future__ import annotations

import argparse
import base64
import time
from collections.abc import Callable

from loadtests.scenarios.events import EventFactory
from reference_impl.core.settings import Settings
from reference_impl.events.plain_schema import PlainSchema
from reference_impl.events.validation import BatchIn, parse_batch

__all__ = ["main", "per_event_us"]


def per_event_us(
    fn: Callable[[bytes], object], bodies: list[bytes], size: int, repeats: int
) -> float:
    """Fastest pass of ``fn`` over ``bodies``, in microseconds per event."""
    fn(bodies[0])  # warm: schemas built, code paths taken once
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for body in bodies:
            fn(body)
        best = min(best, time.perf_counter() - started)
    return best * 1e6 / (len(bodies) * size)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--size", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    factory = EventFactory(seed=1)
    bodies = [factory.batch_body(args.size) for _ in range(args.batches)]
    settings = Settings(api_key_pepper=base64.b64encode(bytes(32)).decode())
    plain = PlainSchema(BatchIn)

    def models(body: bytes) -> object:
        batch = BatchIn.model_validate_json(body, strict=True)
        return [event.model_dump(mode="json", exclude_none=True) for event in batch.events]

    cases: dict[str, Callable[[bytes], object]] = {
        "model validation + model_dump": models,
        "PlainSchema validation": plain.validate_json,
        "parse_batch (all of it)": lambda body: parse_batch(body, settings),
    }
    print(f"{args.batches} batches of {args.size} events, fastest of {args.repeats} passes")
    for name, fn in cases.items():
        print(f"  {name:32} {per_event_us(fn, bodies, args.size, args.repeats):6.2f} µs/event")


if __name__ == "__main__":
    main()
