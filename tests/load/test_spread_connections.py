"""The benchmark's closed-loop connections take an even share of the server's processes."""

from __future__ import annotations

import asyncio
from collections import Counter

from loadtests.bench.http import HttpTarget, spread_connections


async def _server() -> tuple[asyncio.Server, HttpTarget, list[asyncio.StreamWriter]]:
    """A loopback server that keeps every connection it accepts (closed by the test)."""
    accepted: list[asyncio.StreamWriter] = []

    def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, HttpTarget("127.0.0.1", port), accepted


async def _close(accepted: list[asyncio.StreamWriter]) -> None:
    await asyncio.sleep(0.05)  # let the server side see the last connections
    for writer in accepted:
        writer.close()
        await writer.wait_closed()


async def test_connections_are_kept_only_while_their_process_has_room() -> None:
    server, target, accepted = await _server()
    # Stands in for "which process accepted this connection": every new connection lands
    # on process 1 until three have been opened, as a kernel hash can do.
    seen: list[int] = []

    async def owner(port: int) -> int | None:
        seen.append(port)
        return 1 if len(seen) <= 3 else 2

    async with server:
        conns = await spread_connections(target, 4, 2, owner)
        ports = [c.transport.get_extra_info("sockname")[1] for c in conns]  # type: ignore[union-attr]
        owners = Counter(1 if seen.index(p) < 3 else 2 for p in ports)
        for conn in conns:
            conn.transport.close()  # type: ignore[union-attr]
        await _close(accepted)

    assert len(conns) == 4
    assert owners == {1: 2, 2: 2}
    # The third connection landed on a full process and was closed, not kept.
    assert seen[2] not in ports


async def test_a_server_that_cannot_spread_still_gets_every_connection() -> None:
    server, target, accepted = await _server()

    async def owner(port: int) -> int | None:
        return 1  # one process takes everything, whatever the client does

    async with server:
        conns = await spread_connections(target, 3, 2, owner)
        for conn in conns:
            conn.transport.close()  # type: ignore[union-attr]
        await _close(accepted)
    assert len(conns) == 3
