"""The service's HTTP protocol: one write per response, the same bytes in the same order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from reference_impl.api.http_protocol import CoalescingHttpToolsProtocol, CoalescingTransport
from reference_impl.core.embedded import find_free_port

pytestmark = pytest.mark.integration

HEAD = b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n"


class _Recording(asyncio.Transport):
    """The kernel's side of a transport: what was written, in how many writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


async def test_a_head_goes_out_with_the_body_that_follows_it() -> None:
    raw = _Recording()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())
    transport.write(HEAD)
    assert raw.writes == []
    transport.write(b"{}")
    assert raw.writes == [HEAD + b"{}"]
    await asyncio.sleep(0)  # the end-of-turn flush finds nothing held
    assert raw.writes == [HEAD + b"{}"]


async def test_a_head_alone_goes_out_at_the_end_of_the_turn() -> None:
    raw = _Recording()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())
    transport.write(HEAD)
    await asyncio.sleep(0)
    assert raw.writes == [HEAD]
    transport.write(b"{}")
    assert raw.writes == [HEAD, b"{}"]


async def test_other_writes_go_out_at_once_and_close_sends_what_is_held() -> None:
    raw = _Recording()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())
    transport.write(b"3\r\nabc\r\n")
    assert raw.writes == [b"3\r\nabc\r\n"]
    transport.write(HEAD)
    transport.close()
    assert raw.writes == [b"3\r\nabc\r\n", HEAD]
    assert raw.closed
    await asyncio.sleep(0)
    assert len(raw.writes) == 2
    assert transport.is_closing()  # everything else is the real transport's


async def test_a_head_held_when_the_connection_closes_is_dropped_quietly() -> None:
    raw = _Recording()
    transport = CoalescingTransport(raw, asyncio.get_running_loop())
    transport.write(HEAD)
    raw.close()  # the peer went away
    await asyncio.sleep(0)
    assert raw.writes == []


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http"
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"first", b"second"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b""})
        return
    answer = b"echo:" + body
    headers = [(b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


@asynccontextmanager
async def _server() -> AsyncIterator[tuple[int, uvicorn.Server]]:
    port = find_free_port()
    config = uvicorn.Config(
        _app,
        host="127.0.0.1",
        port=port,
        http=CoalescingHttpToolsProtocol,
        lifespan="off",
        log_level="warning",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), task.exception()
        await asyncio.sleep(0.01)
    try:
        yield port, server
    finally:
        server.should_exit = True
        await task


async def _response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lowered = head.lower()
    if b"content-length:" in lowered:
        length = int(lowered.split(b"content-length:")[1].split(b"\r\n")[0])
        return head, await reader.readexactly(length)
    if b"transfer-encoding: chunked" in lowered:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return head, body
            body += chunk[:-2]
    return head, b""


async def test_a_real_server_answers_keep_alive_head_stream_and_continue() -> None:
    async with _server() as (port, server):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /one HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
        head, body = await _response(reader)
        assert head.startswith(b"HTTP/1.1 201 ") and body == b"echo:abc"
        [connection] = server.server_state.connections
        assert isinstance(connection.transport, CoalescingTransport)
        writer.write(b"POST /two HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nxy")
        assert (await _response(reader))[1] == b"echo:xy"  # same connection, next answer
        writer.write(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        head, body = await _response(reader)
        assert head.startswith(b"HTTP/1.1 200 ") and body == b"firstsecond"
        writer.write(b"HEAD /one HTTP/1.1\r\nHost: t\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")  # a head alone, no body follows
        assert head.startswith(b"HTTP/1.1 201 ") and b"content-length: 5" in head
        writer.write(
            b"POST /three HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"body")
        assert (await _response(reader))[1] == b"echo:body"
        writer.write(
            b"POST /four HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        )
        head, body = await _response(reader)
        assert b"connection: close" in head.lower() and body == b"echo:"
        assert await reader.read() == b""  # and the server closed it
        writer.close()
