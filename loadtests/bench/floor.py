"""The HTTP floor: what the service's HTTP server does when the application does nothing.

A no-op ASGI application, served by uvicorn with the options and the number of processes
`auditkit serve` uses, and loaded by the same client with the same requests as the
single-event phase. It reads the body and answers `201` with a receipt-sized JSON body: no
authentication, validation, rate limit or commit. Its highest rate is what HTTP alone, on
this machine, with the load generator beside it, allows; the service can approach it and
never pass it, as batch ingest can approach the COPY ceiling of storage and never pass it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from starlette.types import Receive, Scope, Send

from chaos.harness import REPO_ROOT
from loadtests.bench.stack import wait_until_listening
from reference_impl.api import serving
from reference_impl.core.embedded import find_free_port
from reference_impl.core.settings import Settings

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
    """The no-op application served as `auditkit serve --workers N` serves the service.

    The same processes and sockets (`reference_impl.api.serving`) and the same options:
    uvloop (picked by uvicorn when installed), the service's HTTP protocol
    (`reference_impl.api.http_protocol`), no access log.
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

    def pid(self) -> int | None:
        """The server's root process while it runs (its processes are its children)."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until every process listens."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "loadtests.bench.floor",
                    str(self.port),
                    str(self.workers),
                ],
                cwd=REPO_ROOT,  # `-m` puts it on the path: the app module is importable
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until_listening(self.proc.pid, self.port, self.workers, timeout)
        except TimeoutError:
            self.close()
            raise RuntimeError(
                f"the floor server did not listen within {timeout:g} s; see {self.log_path}"
            ) from None

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


def main(port: int, workers: int) -> int:
    """Serve the no-op app on loopback ``port`` from ``workers`` processes."""
    # As `auditkit serve` runs the service (with the default keep-alive).
    keep_alive_s = Settings.model_fields["http_keep_alive_s"].default
    options = serving.server_options("127.0.0.1", port, keep_alive_s=keep_alive_s)
    options["log_level"] = "warning"
    return serving.run("loadtests.bench.floor:app", options, workers)


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2])))
