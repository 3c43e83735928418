"""Serving the API from several processes, each listening on a socket of its own.

uvicorn's own supervisor binds one socket and shares it among its processes. The event loop
of whichever process wakes first accepts every connection waiting on that socket at once, so
a few long-lived keep-alive connections (a proxy's upstream pool, a handful of batch clients)
can all land on one process while the others idle: measured here, the benchmark's four batch
connections all went to one of two processes, which capped batch ingest at one core.

With `SO_REUSEPORT` (Linux) each process binds its own socket to the same port and the
kernel spreads new connections across the sockets by a hash of their addresses. uvicorn has
no option for that, so this module starts one `uvicorn.Server` per process and supervises
them as uvicorn's supervisor would: a process that dies is started again, and SIGTERM or
SIGINT stops them all, each draining its connections first. Elsewhere (no `SO_REUSEPORT`,
or one that does not spread connections) the caller falls back to uvicorn's supervisor.
"""

from __future__ import annotations

import multiprocessing
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

import structlog

__all__ = ["balances_connections", "bind_reuse_port", "run", "serve_processes", "server_options"]

log = structlog.get_logger(__name__)

# A process that dies this soon after it started failed to start (a bad setting, a port
# taken by another program): starting it again would only fail again.
STARTUP_GRACE_S = 15.0
# How long a process may take to drain before it is killed, beyond uvicorn's own timeout.
STOP_MARGIN_S = 5.0


# --8<-- [start:server-options]
def server_options(host: str, port: int, *, keep_alive_s: float) -> dict[str, Any]:
    """The `uvicorn.Config` options every API process runs with.

    Args:
        host: Interface to listen on.
        port: Port to listen on.
        keep_alive_s: Seconds an idle keep-alive connection stays open (`http_keep_alive_s`).
    """
    from reference_impl.api.http_protocol import CoalescingHttpToolsProtocol

    return {
        "host": host,
        "port": port,
        # uvicorn picks uvloop when installed (`uvicorn[standard]`); its httptools protocol
        # runs on a transport that sends a response's head and body in one write.
        "http": CoalescingHttpToolsProtocol,
        # uvicorn closes an idle connection after 5 s by default. A client (a proxy's
        # upstream pool, the benchmark's load generator) that sends on it as the close is
        # under way gets a reset instead of an answer: 4 of 100 requests sent on idle
        # connections 5.00 s after their last answer failed so against the no-op app,
        # none at 4.98 s. The side that closes first must be the client: the proxy.
        "timeout_keep_alive": keep_alive_s,
        # No `Server: uvicorn` on every response: it names the software to whoever asks.
        "server_header": False,
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 20,
    }


# --8<-- [end:server-options]


def balances_connections() -> bool:
    """Whether this system spreads connections across sockets sharing a port (Linux)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


# --8<-- [start:reuse-port]
def bind_reuse_port(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` that other processes may bind too."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


# --8<-- [end:reuse-port]


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _claim_port(host: str, port: int) -> int:
    """Check that nothing listens on the port (resolving 0 to a free one) and return it.

    Sockets with `SO_REUSEPORT` of the same user share a port silently: without this
    check, a second service started on the same port would take half of the first's
    connections instead of failing.
    """
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        bound: int = probe.getsockname()[1]
        return bound


def run(app: str, options: dict[str, Any], workers: int) -> int:
    """Serve ``app`` (an import string) from ``workers`` processes; returns the exit status.

    ``options`` are `uvicorn.Config` options, `host` and `port` among them. One process
    runs in this one; several get a socket each where the system spreads connections
    across sockets (`serve_processes`), uvicorn's shared socket elsewhere.
    """
    import uvicorn

    if workers > 1 and balances_connections():
        return serve_processes(app, options, workers)
    uvicorn.run(app, workers=workers, **options)
    return 0


def _serve_one(app: str, options: dict[str, Any]) -> None:
    """One API process: its own socket, one uvicorn server (runs in the child)."""
    import uvicorn

    config = uvicorn.Config(app, **options)
    sock = bind_reuse_port(config.host, config.port)
    uvicorn.Server(config).run(sockets=[sock])


def serve_processes(app: str, options: dict[str, Any], workers: int) -> int:
    """Run ``workers`` processes serving ``app``, each on its own `SO_REUSEPORT` socket.

    ``options`` are `uvicorn.Config` options, `host` and `port` among them. Returns when
    SIGTERM or SIGINT arrives and every process has stopped (0), or when a process failed
    to start (1).
    """
    options = {**options, "port": _claim_port(options["host"], options["port"])}
    context = multiprocessing.get_context("spawn")
    stopping = threading.Event()

    def start() -> tuple[BaseProcess, float]:
        process = context.Process(target=_serve_one, args=(app, options), daemon=False)
        process.start()
        return process, time.monotonic()

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()

    previous: dict[int, Callable[..., Any] | int | None] = {
        sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    processes = [start() for _ in range(workers)]
    status = 0
    try:
        while not stopping.wait(0.5):
            for i, (process, started) in enumerate(processes):
                if process.is_alive():
                    continue
                if time.monotonic() - started < STARTUP_GRACE_S:
                    log.error("serve.process_failed_to_start", exitcode=process.exitcode)
                    status = 1
                    stopping.set()
                    break
                log.warning("serve.process_died", exitcode=process.exitcode)
                processes[i] = start()
    finally:
        _stop([p for p, _ in processes], options.get("timeout_graceful_shutdown") or 0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status


def _stop(processes: list[BaseProcess], graceful_s: float) -> None:
    """SIGTERM every process (uvicorn drains), then kill what is still running."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + graceful_s + STOP_MARGIN_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
