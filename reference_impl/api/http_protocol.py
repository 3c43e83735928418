"""uvicorn's HTTP/1.1 protocol, sending a response's head and body in one write.

uvicorn writes the status line and headers when the application sends
`http.response.start`, and the body when it sends `http.response.body`: two writes, so two
`send` system calls and, with `TCP_NODELAY`, two TCP segments for a response of a few
hundred bytes, which the client then reads with two wake-ups. For the service's answers
(a receipt, a problem) that doubles the kernel's work per response on both ends.

`CoalescingHttpToolsProtocol` gives uvicorn's protocol a transport that holds a response
head back until the next write, and sends the two together. If nothing follows within the
same turn of the event loop (a `HEAD` response, an interim `100 Continue`, a stream that
pauses), the head goes out alone at the end of that turn, so nothing waits longer than
one turn and the order of the bytes never changes. uvicorn has no option for this; the
protocol class is one it takes (`--http`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["CoalescingHttpToolsProtocol", "CoalescingTransport"]

# Every head uvicorn writes starts with its status line.
_HEAD = b"HTTP/1.1 "


# --8<-- [start:coalescing-transport]
class CoalescingTransport:
    """A transport that sends a response head together with the write that follows it."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        """Write ``data``, after any head held back; hold ``data`` if it is a head."""
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif isinstance(data, bytes) and data.startswith(_HEAD):
            self._held = data
            self._loop.call_soon(self.flush)  # alone, at the end of this turn at the latest
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Send a head held back, if any."""
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        """Send what is held, then close."""
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


# --8<-- [end:coalescing-transport]


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a `CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalescing: Any = CoalescingTransport(transport, self.loop)
        super().connection_made(coalescing)
