"""The HTTP floor: what the service's HTTP server does when the application does nothing.

A no-op ASGI application, served by uvicorn with the options and the number of processes
`auditkit serve` uses, and loaded by the same client with the same requests as the
single-event phase. It reads the body and answers `201` with a receipt-sized JSON body: no
authentication, validation, rate limit or commit. Its highest rate is what HTTP alone, on
this machine, with the load generator beside it, allows; the service can approach it and
never pass it, as batch ingest can approach the COPY ceiling of storage and never pass it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from starlette.types import Receive, Scope, Send

from chaos.harness import REPO_ROOT
from reference_impl.core.embedded import find_free_port

__all__ = ["FloorServer", "app"]

# As long as a real receipt, so that the responses cost the server and the client the same.
_RECEIPT = (
    b'{"event_id":"00000000-0000-4000-8000-000000000000","seq":1,"hash":"'
    + b"0" * 64
    + b'","recorded_at":"2026-01-01T00:00:00.000000Z","key_id":"bench-1"}'
)
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_RECEIPT)).encode()),
]


# --8<-- [start:app]
async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Read the request, answer a fixed receipt."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 201, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _RECEIPT})


# --8<-- [end:app]


class FloorServer:
    """The no-op application under `uvicorn --workers N`, on a free loopback port.

    The options are those of `auditkit serve`: uvloop and httptools (picked by uvicorn when
    installed), no access log.
    """

    def __init__(self, workers: int, log_dir: Path) -> None:
        self.workers = workers
        self.port = find_free_port()
        self.log_path = log_dir / "floor.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it accepts connections."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "loadtests.bench.floor:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    str(self.workers),
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
                cwd=REPO_ROOT,  # `-m` puts it on the path: the app module is importable
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the floor server exited; see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    # Every worker imports and binds; a moment more lets all of them listen.
                    time.sleep(1.0)
                    return
            except OSError:
                time.sleep(0.2)
        self.close()
        raise RuntimeError(f"the floor server did not listen within {timeout:g} s")

    def close(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
