"""The options every API process runs uvicorn with, applied by a real uvicorn server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from reference_impl.api.serving import server_options
from reference_impl.core.embedded import find_free_port
from reference_impl.core.settings import Settings

pytestmark = pytest.mark.integration

REQUEST = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    headers = [(b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})


@asynccontextmanager
async def _server(keep_alive_s: float) -> AsyncIterator[int]:
    port = find_free_port()
    options = server_options("127.0.0.1", port, keep_alive_s=keep_alive_s)
    server = uvicorn.Server(uvicorn.Config(_app, lifespan="off", **options))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), task.exception()
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(REQUEST)
    head = await reader.readuntil(b"\r\n\r\n")
    await reader.readexactly(2)
    return head


def test_idle_connections_outlive_a_proxys_idle_timeout_by_default() -> None:
    # A proxy (an AWS ALB: 60 s) must close an idle upstream connection before the service
    # does, or its next request on it may meet the service's close.
    assert Settings().http_keep_alive_s > 60
    assert server_options("h", 1, keep_alive_s=75.0)["timeout_keep_alive"] == 75.0


@pytest.mark.parametrize(("keep_alive_s", "still_open"), [(0.3, False), (3.0, True)])
async def test_the_server_closes_a_connection_idle_for_longer_than_its_keep_alive(
    keep_alive_s: float, still_open: bool
) -> None:
    async with _server(keep_alive_s) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await _exchange(reader, writer)
            await asyncio.sleep(1.0)
            if still_open:
                assert (await _exchange(reader, writer)).startswith(b"HTTP/1.1 200")
            else:
                assert await reader.read() == b""  # closed by the server
        finally:
            writer.close()


async def test_responses_do_not_name_the_server_software() -> None:
    async with _server(5.0) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            head = await _exchange(reader, writer)
        finally:
            writer.close()
    assert b"\r\nserver:" not in head.lower()
    assert b"\r\ndate:" in head.lower()
