"""Run `auditkit` commands as real processes (servers included) from tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from reference_impl.core.embedded import find_free_port
from reference_impl.core.settings import Settings

__all__ = ["Service", "auditkit", "env_for", "running_service"]


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment variables that reproduce ``settings`` (every field) for a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIT_")}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        elif isinstance(value, dict):
            value = json.dumps(
                {k: v.get_secret_value() if hasattr(v, "get_secret_value") else v
                 for k, v in value.items()}
            )  # fmt: skip
        elif isinstance(value, list):
            value = json.dumps([v.model_dump() if hasattr(v, "model_dump") else v for v in value])
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[f"AUDIT_{name.upper()}"] = str(getattr(value, "value", value))
    env.update(extra)
    return env


def auditkit(
    *args: str, env: dict[str, str], timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `auditkit ARGS` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "reference_impl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


@dataclass(frozen=True)
class Service:
    """A running `auditkit serve` process."""

    url: str
    process: subprocess.Popen[bytes]

    @property
    def port(self) -> int:
        """The TCP port it listens on."""
        return int(self.url.rsplit(":", 1)[1])


@contextmanager
def running_service(
    env: dict[str, str], log: Path, *args: str, timeout: float = 60
) -> Iterator[Service]:
    """`auditkit serve [ARGS]` in a child process, once it is ready."""
    port = find_free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "reference_impl", "serve", "--port", str(port), *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"serve exited with {proc.returncode}: {log.read_text()[-2000:]}"
                )
            try:
                if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"serve not ready: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield Service(base, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
