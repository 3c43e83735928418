"""Runs every command of docs/getting-started.md, in order, against a fresh state directory.

The commands run as written, from the repository root, with `AUDIT_STATE_DIR` pointing at a
temporary directory; only the port changes when 8000 is taken on this machine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from reference_impl.core.embedded import find_free_port
from tests.docs.blocks import REPO_ROOT, docs_block

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PAGE = "getting-started.md"
DOC_URL = "http://127.0.0.1:8000"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


class Reader:
    """A person following the page: one shell environment, one running server."""

    def __init__(self, state_dir: Path) -> None:
        self.port = 8000 if _port_free(8000) else find_free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AUDIT_")},
            "AUDIT_STATE_DIR": str(state_dir),
            "AUDIT_PORT": str(self.port),
        }
        self.serve_log = state_dir.parent / "serve.log"
        self.server: subprocess.Popen[bytes] | None = None

    def block(self, block_id: str) -> str:
        return docs_block(PAGE, block_id).replace(DOC_URL, self.url)

    def run(self, block_id: str, *, exports: bool = False) -> subprocess.CompletedProcess[str]:
        code = self.block(block_id)
        if exports:  # keep what the block exports, as the reader's shell would
            code += '\nprintf "\\n__ENV__%s\\n" "$API_KEY"'
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", code],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if exports and "__ENV__" in done.stdout:
            self.env["API_KEY"] = done.stdout.rsplit("__ENV__", 1)[1].strip()
        return done

    def start_server(self) -> str:
        with self.serve_log.open("a") as log:
            self.server = subprocess.Popen(
                ["bash", "-c", f"exec {self.block('gs-serve')}"],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.server.poll() is None, self.serve_log.read_text()[-3000:]
            try:
                ready = httpx.get(f"{self.url}/health/ready", timeout=1)
                if ready.status_code == 200:
                    # The server does not name its software.
                    assert "server" not in ready.headers
                    return self.serve_log.read_text()
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(self.serve_log.read_text()[-3000:])

    def press_ctrl_c(self) -> int:
        assert self.server is not None
        self.server.send_signal(signal.SIGINT)
        return self.server.wait(60)


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[Reader]:
    person = Reader(tmp_path / "state")
    try:
        yield person
    finally:
        if person.server is not None and person.server.poll() is None:
            person.press_ctrl_c()


def test_getting_started_page_works_as_written(reader: Reader) -> None:
    banner = reader.start_server()
    assert f"API docs     {reader.url}/docs" in banner
    dev_key = banner.split("dev API key  ")[1].split()[0]
    assert dev_key.startswith("ak_")

    # The printed curl line records an event as it is.
    curl_line = next(line for line in banner.splitlines() if line.startswith("curl "))
    printed = subprocess.run(["bash", "-c", curl_line], capture_output=True, text=True, check=False)
    assert json.loads(printed.stdout)["seq"] == 0

    created = reader.run("gs-create-key", exports=True)
    assert created.returncode == 0, created.stderr
    assert reader.env["API_KEY"].startswith("ak_")

    sent = reader.run("gs-send-event")
    assert sent.returncode == 0, sent.stderr
    receipt = json.loads(sent.stdout)
    documented = json.loads(docs_block(PAGE, "gs-receipt"))
    assert receipt.keys() == documented.keys()
    assert receipt["seq"] == 0
    assert {type(v) for v in receipt.values()} == {type(v) for v in documented.values()}

    queried = reader.run("gs-query")
    items = json.loads(queried.stdout)["items"]
    assert [e["event_id"] for e in items] == [receipt["event_id"]]
    assert items[0]["tenant"] == "clinic-a"

    verified = reader.run("gs-verify")
    assert verified.returncode == 0, verified.stderr
    assert "valid" in verified.stdout and "TAMPERED" not in verified.stdout

    refused = reader.run("gs-tamper-refused")
    assert refused.returncode != 0
    expected = docs_block(PAGE, "gs-tamper-refused-output").strip()
    assert expected.split("audit_events_")[0] in refused.stderr
    assert "refused" in refused.stderr

    tampered = reader.run("gs-tamper")
    assert tampered.returncode == 0, tampered.stderr
    assert "UPDATE 1" in tampered.stdout

    caught = reader.run("gs-verify-tampered")
    assert caught.returncode == 0  # the block itself reports verify's exit code
    assert "TAMPERED" in caught.stdout
    output = docs_block(PAGE, "gs-verify-tampered-output").strip().splitlines()
    flat = " ".join(caught.stdout.split())
    for line in output:
        assert " ".join(line.split()) in flat, caught.stdout

    # Ctrl-C stops the API and both embedded servers; the next start reuses the data.
    assert reader.press_ctrl_c() == 0
    ports = json.loads((Path(reader.env["AUDIT_STATE_DIR"]) / "ports.json").read_text())
    assert all(_port_free(p) for p in ports.values())
    reader.start_server()
    again = json.loads(reader.run("gs-query").stdout)["items"]
    assert [e["event_id"] for e in again] == [receipt["event_id"]]
    assert json.loads((Path(reader.env["AUDIT_STATE_DIR"]) / "ports.json").read_text()) == ports


def test_documented_test_command_is_the_one_ci_runs() -> None:
    command = docs_block(PAGE, "gs-tests").strip()
    ci = (REPO_ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == command
    readme = (REPO_ROOT / "README.md").read_text()
    assert f"\n{command}\n" in readme
