"""The open loop's bound on connections, and its count of requests that waited for one."""

from __future__ import annotations

import asyncio

from loadtests.bench.http import HttpTarget, open_loop, request_bytes

_ANSWER = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}"


async def _held_server(gate: asyncio.Event) -> tuple[asyncio.Server, HttpTarget, list[int]]:
    """A loopback server that answers nothing until ``gate`` opens; notes its connections."""
    connections: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                await gate.wait()
                writer.write(_ANSWER)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    return server, HttpTarget("127.0.0.1", server.sockets[0].getsockname()[1]), connections


async def _run(connections: int, requests: int) -> tuple[int, int, int]:
    gate = asyncio.Event()
    server, target, opened = await _held_server(gate)
    request = request_bytes("POST", "/", target.host, {}, b"{}")
    rate = 200.0
    # Every request is due before any is answered.
    asyncio.get_running_loop().call_later(requests / rate + 0.2, gate.set)
    async with server:
        result = await open_loop(target, [request] * requests, rate, connections=connections)
    return result.ok, result.waited, len(opened)


async def test_requests_due_while_every_connection_is_busy_are_counted() -> None:
    ok, waited, opened = await _run(connections=3, requests=12)
    assert (ok, opened) == (12, 3)
    assert waited == 9


async def test_no_request_waits_while_the_client_may_open_another_connection() -> None:
    ok, waited, opened = await _run(connections=64, requests=12)
    assert (ok, waited, opened) == (12, 0, 12)


async def test_a_connection_closed_under_a_request_counts_it_unanswered_and_moves_on() -> None:
    # The server answers the first request of each connection and drops the second: every
    # second request fails, and the requests queued behind it still go out, on new
    # connections.
    answered: list[int] = []
    received: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for turn in range(2):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            received.append(1)
            if turn == 0:
                answered.append(1)
                writer.write(_ANSWER)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    target = HttpTarget("127.0.0.1", server.sockets[0].getsockname()[1])
    request = request_bytes("POST", "/", target.host, {}, b"{}")
    async with server:
        # A lost request is counted when its connection closes, not after the grace period
        # (a minute here): the run ends long before that.
        # One connection, every request due at once: all but the first queue, and only a
        # new connection after each loss can take them.
        run = open_loop(target, [request] * 10, 100_000.0, connections=1, grace_s=60.0)
        result = await asyncio.wait_for(run, timeout=20.0)
    assert len(received) == 10
    assert (result.ok, result.unanswered, len(answered)) == (5, 5, 5)
    assert result.waited == 9
