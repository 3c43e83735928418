"""The load generator's own garbage collection stays out of what it measures."""

from __future__ import annotations

import asyncio
import gc

import pytest

from loadtests.bench.http import (
    HttpTarget,
    closed_loop,
    collector_paused,
    open_loop,
    request_bytes,
)

_ANSWER = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}"


async def _server(seen: list[bool]) -> tuple[asyncio.Server, HttpTarget]:
    """A loopback HTTP server that notes, per request, whether the collector was on."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                seen.append(gc.isenabled())
                writer.write(_ANSWER)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    return server, HttpTarget("127.0.0.1", server.sockets[0].getsockname()[1])


async def test_open_loop_runs_without_the_collector_and_restores_it() -> None:
    seen: list[bool] = []
    server, target = await _server(seen)
    request = request_bytes("POST", "/", target.host, {}, b"{}")
    async with server:
        assert gc.isenabled()
        result = await open_loop(target, [request] * 20, 200.0)
    assert result.ok == 20
    assert seen == [False] * 20
    assert gc.isenabled()


async def test_closed_loop_runs_without_the_collector_and_restores_it() -> None:
    seen: list[bool] = []
    server, target = await _server(seen)
    request = request_bytes("POST", "/", target.host, {}, b"{}")
    async with server:
        result = await closed_loop(target, lambda: request, concurrency=2, duration_s=0.2)
    assert result.ok > 0
    assert seen and not any(seen)
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_collector_comes_back_when_the_measurement_fails() -> None:
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("the run failed")
    assert gc.isenabled()
