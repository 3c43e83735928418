"""`auditkit serve --workers N`: one listening socket per process, supervised."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from loadtests.bench.stack import wait_until_listening
from reference_impl.api.serving import STARTUP_GRACE_S
from reference_impl.core.embedded import find_free_port
from reference_impl.core.settings import Settings
from tests.support.processes import Service, auditkit, env_for, running_service

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="SO_REUSEPORT spreads on Linux"
    ),
]


def _listening_sockets(pid: int, port: int) -> set[str]:
    """The socket inodes ``pid`` listens on at ``port``."""
    return {
        os.readlink(f"/proc/{pid}/fd/{c.fd}")
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    }


def _api_processes(service: Service) -> list[psutil.Process]:
    """The children that serve: the ones with a socket listening on the port."""
    children = psutil.Process(service.process.pid).children()
    return [p for p in children if _listening_sockets(p.pid, service.port)]


def test_each_process_listens_on_a_socket_of_its_own(settings: Settings, tmp_path: Path) -> None:
    with running_service(env_for(settings), tmp_path / "api.log", "--workers", "2") as service:
        wait_until_listening(service.process.pid, service.port, 2)
        processes = _api_processes(service)
        assert len(processes) == 2
        sockets = [_listening_sockets(p.pid, service.port) for p in processes]
        assert all(len(s) == 1 for s in sockets)
        assert sockets[0] != sockets[1]
        # The supervisor itself accepts nothing: no connection can wait on it.
        assert not _listening_sockets(service.process.pid, service.port)

        # Keep-alive connections land on both processes (the kernel hashes each one; all
        # 24 on one of two processes would happen once in eight million runs).
        clients = [httpx.Client(base_url=service.url) for _ in range(24)]
        try:
            for client in clients:
                assert client.get("/health/live").status_code == 200
            holders = {
                p.pid
                for p in processes
                for c in p.net_connections(kind="tcp")
                if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == service.port
            }
        finally:
            for client in clients:
                client.close()
        assert holders == {p.pid for p in processes}


def test_sigterm_stops_every_process(settings: Settings, tmp_path: Path) -> None:
    with running_service(env_for(settings), tmp_path / "api.log", "--workers", "2") as service:
        wait_until_listening(service.process.pid, service.port, 2)
        children = psutil.Process(service.process.pid).children(recursive=True)
        service.process.send_signal(signal.SIGTERM)
        assert service.process.wait(60) == 0
        _, alive = psutil.wait_procs(children, timeout=10)
        assert alive == []


def test_a_process_that_dies_is_started_again(settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "api.log"
    with running_service(env_for(settings), log, "--workers", "2") as service:
        started = time.monotonic()
        wait_until_listening(service.process.pid, service.port, 2)
        # Dying within the startup grace is a failed start, which stops the service.
        time.sleep(max(0.0, STARTUP_GRACE_S + 1 - (time.monotonic() - started)))
        victim = _api_processes(service)[0]
        victim.kill()
        victim.wait(10)
        wait_until_listening(service.process.pid, service.port, 2, timeout=60)
        assert victim.pid not in {p.pid for p in _api_processes(service)}
        assert httpx.get(f"{service.url}/health/live", timeout=5).status_code == 200
    assert "serve.process_died" in log.read_text()


def test_a_port_in_use_is_a_one_line_error(settings: Settings) -> None:
    port = find_free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = auditkit(
            "serve", "--port", str(port), "--workers", "2", env=env_for(settings), timeout=120
        )
    assert result.returncode == 2
    assert "cannot listen on" in result.stderr
    assert "Traceback" not in result.stderr
