"""A lean HTTP/1.1 client for the benchmark: open-loop and closed-loop load on keep-alive.

The load generator shares two cores with the service it measures, so every microsecond it
spends is one the service does not get. Requests are built once as bytes; a connection is an
`asyncio.Protocol` that parses only the status line, `Content-Length` and the body length.

**Open loop.** Request *i* of a run at rate *r* is due at `start + i / r`, whether or not
earlier requests were answered, and its latency is measured from that due time, not from
when it could be sent. A service that stalls for a second therefore shows a second of
latency on every request that was due meanwhile; a closed-loop client would simply have sent
fewer requests and hidden it (coordinated omission). Requests that are due while every
connection is busy wait for one, and that wait counts.

**The population of clients.** Connections are opened as requests need them, up to
`OPEN_LOOP_CONNECTIONS`, as clients of an audit service (EHR nodes, gateways, each with its
own connections) would be. Past that bound the loop closes: a request waits for an answer
to another before it can be sent, and the rate the service sees is set by the client's
connections divided by the latency. Each run counts the requests that waited
(`LoadResult.waited`), so a report shows where that happened.

**The client's own pauses.** A pause of the load generator is counted as the service's
latency, so the timed part of a run holds the generator's garbage collector off
(`collector_paused`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field

__all__ = [
    "ACCEPTED",
    "OPEN_LOOP_CONNECTIONS",
    "HttpTarget",
    "LoadResult",
    "closed_loop",
    "collector_paused",
    "open_loop",
    "request_bytes",
    "spread_connections",
]


# The answers that acknowledge a request's events: stored, a retry's receipt, queued.
ACCEPTED = frozenset({200, 201, 202})


# --8<-- [start:population]
# The open loop's bound on connections. Group commit makes an event cheaper the more requests
# share a transaction, so at saturation a service answers more events per second the more
# requests are in flight. With 256, as in the benchmark runs before 2026-11-25 02:00 UTC,
# most requests at 5,000 and 6,000 offered waited for a connection, and 1,024 reached 0 to
# 16 % more events per second in each of seven alternating pairs of 10-15 s runs.
OPEN_LOOP_CONNECTIONS = 1024
# --8<-- [end:population]


@dataclass(frozen=True)
class HttpTarget:
    """Where requests go."""

    host: str
    port: int

    @classmethod
    def from_url(cls, url: str) -> HttpTarget:
        """Parse `http://host:port`."""
        rest = url.removeprefix("http://").rstrip("/")
        host, _, port = rest.partition(":")
        return cls(host, int(port or 80))


def request_bytes(
    method: str, path: str, host: str, headers: dict[str, str], body: bytes = b""
) -> bytes:
    """One complete HTTP/1.1 keep-alive request."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body or method in {"POST", "PUT"}:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# --8<-- [start:collector-paused]
@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Hold the garbage collector off while a measurement runs, and collect afterwards.

    The load generator is a Python process holding every request of a run, every latency
    and, in `auditkit bench`, what the earlier phases left. A full collection of that
    heap took it 86 ms (timed with `gc.callbacks` beside an open-loop run at 500 events/s),
    and every answer that arrived meanwhile was read late: the run put the pause on the
    service's p99. As `timeit` does, the timed stretch runs without the collector;
    reference counting still frees all that is not a cycle, and the cycles wait for the
    collection at the end.
    """
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        gc.collect()


# --8<-- [end:collector-paused]


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight.

    An answer goes to the waiter of `send` (closed loop), or, with no waiter, to
    `on_answer` (the open loop's `_Schedule`, which needs no future or task per request).
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False
        self.in_flight = False
        self.on_answer: Callable[[_Connection, int], None] | None = None
        self.on_lost: Callable[[_Connection], None] | None = None
        self.due = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))
        if self.on_lost is not None:
            self.on_lost(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._parse()

    def _parse(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or not self.in_flight:
            return
        head = bytes(self.buffer[:end]).decode("latin-1")
        lines = head.split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if len(self.buffer) < end + 4 + length:
            return
        del self.buffer[: end + 4 + length]
        self.in_flight = False
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(status)
        elif self.on_answer is not None:
            self.on_answer(self, status)

    def write(self, request: bytes) -> None:
        """Send one request; its answer goes to `on_answer`."""
        assert self.transport is not None
        self.in_flight = True
        self.transport.write(request)

    async def send(self, request: bytes) -> int:
        """Send one request and wait for its status."""
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.in_flight = True
        self.transport.write(request)
        return await self.waiter


class _Pool:
    """Connections to one target, opened on demand up to a bound."""

    def __init__(self, target: HttpTarget, limit: int) -> None:
        self.target = target
        self.limit = limit
        self.idle: deque[_Connection] = deque()
        self.open = 0
        self.waiting: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> _Connection:
        while True:
            while self.idle:
                conn = self.idle.pop()
                if not conn.closed:
                    return conn
                self.open -= 1
            if self.open < self.limit:
                self.open += 1
                try:
                    _, conn = await asyncio.get_running_loop().create_connection(
                        _Connection, self.target.host, self.target.port
                    )
                except OSError:
                    self.open -= 1
                    raise
                return conn
            waiter = asyncio.get_running_loop().create_future()
            self.waiting.append(waiter)
            await waiter

    def release(self, conn: _Connection) -> None:
        if conn.closed:
            self.open -= 1
        else:
            self.idle.append(conn)
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    def close(self) -> None:
        for conn in self.idle:
            if conn.transport is not None:
                conn.transport.close()
        self.idle.clear()


@dataclass
class LoadResult:
    """What one load run saw.

    Attributes:
        sent: Requests scheduled (open loop) or sent (closed loop).
        statuses: Count of each HTTP status; `0` is a connection error or a request that was
            still unanswered when the run gave up on it.
        latencies_s: Latency of each answered request (open loop: from its due time).
        elapsed_s: From the first due time to the last answer.
        ok_events: Events in requests answered 200, 201 or 202.
        waited: Requests (open loop) that found every connection of the client busy when
            they were due and waited for one: for them the loop was closed, and a rate
            where many waited measured the client's connections as much as the service.
    """

    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    ok_events: int = 0
    waited: int = 0

    @property
    def ok(self) -> int:
        """Requests answered 200, 201 or 202."""
        return sum(n for s, n in self.statuses.items() if s in ACCEPTED)

    @property
    def unanswered(self) -> int:
        """Requests with no HTTP answer (connection error, or gave up)."""
        return self.statuses.get(0, 0)

    @property
    def events_per_s(self) -> float:
        """Acknowledged events per second of the run."""
        return self.ok_events / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def _count(self, status: int, events: int = 0) -> None:
        """Count an answer's status (`0`: none), and its ``events`` if it was accepted."""
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status in ACCEPTED:
            self.ok_events += events


async def open_loop(
    target: HttpTarget,
    requests: Sequence[bytes],
    rate: float,
    *,
    events_per_request: int = 1,
    connections: int = OPEN_LOOP_CONNECTIONS,
    grace_s: float = 10.0,
    progress: Callable[[int], None] | None = None,
) -> LoadResult:
    """Send ``requests`` at ``rate`` per second on schedule, whatever the answers.

    Args:
        target: The service.
        requests: Complete requests, one per slot (each with its own event ids).
        rate: Requests per second offered.
        events_per_request: Events each request carries (for events/s).
        connections: Most connections open at once: the population of clients. A request
            due when all are busy waits for one (counted in `LoadResult.waited`).
        grace_s: After the last due time, how long answers are still awaited; requests
            unanswered by then count as status 0 and have no latency.
        progress: Called with the number of requests answered so far, now and then.
    """
    loop = asyncio.get_running_loop()
    result = LoadResult(sent=len(requests))
    schedule = _Schedule(target, requests, connections, result, events_per_request, progress)
    interval = 1.0 / rate
    with collector_paused():  # its collection is not timed: the clock starts inside
        start = schedule.last = loop.time() + 0.05
        for i in range(len(requests)):
            due = start + i * interval
            delay = due - loop.time()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            schedule.send(i, due)
        await schedule.answered(grace_s)
    result.elapsed_s = max(schedule.last - start, 1e-9)
    return result


class _Schedule:
    """The open loop's connections, and the requests that wait for one.

    A request due goes out at once on an idle connection, or on a new one while fewer than
    the bound are open; otherwise it queues (counted in `LoadResult.waited`) and goes out
    on the first connection whose answer comes in. Answers arrive as callbacks of the
    connections, with no task or future per request: against the no-op app at 6,000
    requests/s, 37.5 µs of the client's CPU per request against 44.1 with a task each (six
    alternating 5-s runs), CPU that the service it measures, on the same cores, gets back.
    """

    def __init__(
        self,
        target: HttpTarget,
        requests: Sequence[bytes],
        limit: int,
        result: LoadResult,
        events_per_request: int,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.target = target
        self.requests = requests
        self.limit = limit
        self.result = result
        self.events_per_request = events_per_request
        self.progress = progress
        self.connections: list[_Connection] = []
        self.idle: list[_Connection] = []
        self.open = 0  # connections open or being opened
        self.queued: deque[tuple[int, float]] = deque()
        self.outstanding = 0
        self.last = 0.0
        self.done: asyncio.Future[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def send(self, i: int, due: float) -> None:
        """Send request ``i`` (due at ``due``) now, or queue it until a connection frees."""
        self.outstanding += 1
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                self._write(conn, i, due)
                return
        if self.open < self.limit:
            self._connect(i, due)
            return
        self.result.waited += 1
        self.queued.append((i, due))

    async def answered(self, grace_s: float) -> None:
        """Wait up to ``grace_s`` for every request sent; count the rest as unanswered."""
        self.done = self.loop.create_future()
        if self.outstanding == 0:
            self.done.set_result(None)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.done), grace_s)
        for _ in range(self.outstanding):
            self.result._count(0)
        for task in self.tasks:
            task.cancel()
        for conn in self.connections:
            conn.on_answer = conn.on_lost = None
            if conn.transport is not None:
                conn.transport.close()

    def _write(self, conn: _Connection, i: int, due: float) -> None:
        conn.due = due
        conn.write(self.requests[i])

    def _connect(self, i: int, due: float) -> None:
        self.open += 1
        task = self.loop.create_task(self._open_and_write(i, due))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _open_and_write(self, i: int, due: float) -> None:
        try:
            _, conn = await self.loop.create_connection(
                _Connection, self.target.host, self.target.port
            )
        except OSError:
            self.open -= 1
            self._finished(0)
            return
        if conn.closed:  # closed before this coroutine resumed: nobody told us
            self.open -= 1
            self._finished(0)
            return
        conn.on_answer = self._on_answer
        conn.on_lost = self._on_lost
        self.connections.append(conn)
        self._write(conn, i, due)

    def _on_answer(self, conn: _Connection, status: int) -> None:
        now = self.loop.time()
        self.result.latencies_s.append(now - conn.due)
        self.last = now
        self._finished(status)
        if self.progress is not None and len(self.result.latencies_s) % 500 == 0:
            self.progress(len(self.result.latencies_s))
        if self.queued:
            self._write(conn, *self.queued.popleft())
        else:
            self.idle.append(conn)

    def _on_lost(self, conn: _Connection) -> None:
        self.open -= 1
        if conn.in_flight:
            conn.in_flight = False
            self._finished(0)
        if self.queued and self.open < self.limit:
            self._connect(*self.queued.popleft())

    def _finished(self, status: int) -> None:
        self.result._count(status, self.events_per_request)
        self.outstanding -= 1
        if self.outstanding == 0 and self.done is not None and not self.done.done():
            self.done.set_result(None)


# --8<-- [start:spread]
async def spread_connections(
    target: HttpTarget,
    count: int,
    processes: int,
    owner: Callable[[int], Awaitable[int | None]],
) -> list[_Connection]:
    """Open ``count`` connections, as evenly over the server's ``processes`` as they go.

    A few keep-alive connections need not land evenly on a server's processes: the
    kernel picks a process by a hash of the connection's addresses. A load balancer with
    least-connections routing in front of the processes would spread them; so does this,
    by asking ``owner`` which process holds each new connection (by the client's local
    port) and closing the ones that land on a process that has its share already.
    """
    loop = asyncio.get_running_loop()
    share = -(-count // processes)
    held: dict[int | None, int] = {}
    kept: list[_Connection] = []
    for _ in range(count * 30):
        if len(kept) == count:
            break
        transport, conn = await loop.create_connection(_Connection, target.host, target.port)
        process = await owner(transport.get_extra_info("sockname")[1])
        if process is not None and held.get(process, 0) >= share:
            transport.close()
            continue
        held[process] = held.get(process, 0) + 1
        kept.append(conn)
    while len(kept) < count:  # the server would not spread them: take what comes
        _, conn = await loop.create_connection(_Connection, target.host, target.port)
        kept.append(conn)
    return kept


# --8<-- [end:spread]


async def closed_loop(
    target: HttpTarget,
    next_request: Callable[[], bytes],
    *,
    concurrency: int,
    duration_s: float,
    events_per_request: int = 1,
    progress: Callable[[int], None] | None = None,
    connections: Sequence[_Connection] = (),
) -> LoadResult:
    """``concurrency`` clients each send a request as soon as their last one is answered.

    For throughput at saturation (batches, queued ingest), where the question is how many
    events per second get through, not how long a scheduled request waits. Open
    ``connections`` are used first (`spread_connections`); more are opened as needed.
    """
    loop = asyncio.get_running_loop()
    pool = _Pool(target, concurrency)
    pool.idle.extend(connections)
    pool.open = len(connections)
    result = LoadResult()

    async def client() -> None:
        nonlocal last
        conn = await pool.acquire()
        try:
            while loop.time() < stop_at:
                request = next_request()
                result.sent += 1
                sent_at = loop.time()
                try:
                    status = await conn.send(request)
                except (ConnectionError, OSError):
                    result._count(0)
                    pool.release(conn)
                    conn = await pool.acquire()
                    continue
                done = loop.time()
                result._count(status, events_per_request)
                result.latencies_s.append(done - sent_at)
                last = max(last, done)
                if progress is not None:
                    progress(result.ok_events)
        finally:
            pool.release(conn)

    with collector_paused():  # its collection is not timed: the clock starts inside
        start = last = loop.time()
        stop_at = start + duration_s
        await asyncio.gather(*(client() for _ in range(concurrency)))
    result.elapsed_s = max(last - start, 1e-9)
    pool.close()
    return result


def now() -> float:
    """Monotonic seconds (for callers timing phases)."""
    return time.perf_counter()
