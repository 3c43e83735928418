"""The Error Handling guide's blocks and tables, checked against the code."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest

from reference_impl.core.settings import Settings
from tests.docs.blocks import REPO_ROOT, docs_block
from tests.support.processes import env_for

PAGE = "guides/error-handling.md"


def _exports(block: str) -> dict[str, str]:
    return dict(re.findall(r"^export (AUDIT_[A-Z_]+)=(\S+)$", block, re.MULTILINE))


def test_reliability_block_is_read_by_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _exports(docs_block(PAGE, "eh-reliability-env"))
    assert len(env) == 6
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.ingest_mode_default == "async"
    assert settings.async_fallback == "reject"
    assert settings.worker_max_attempts == 8
    assert settings.breaker_threshold == 3
    assert settings.verify_interval_s == 900
    assert settings.alert_webhook_url == "https://pager.example.org/hooks/auditkit"


def test_metric_table_names_emitted_metrics() -> None:
    from prometheus_client import REGISTRY

    import reference_impl.observability.metrics  # noqa: F401

    text = (REPO_ROOT / "docs" / PAGE).read_text()
    section = text.split("## Monitoring and alerting")[1]
    named = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.MULTILINE))
    emitted = {f.name for f in REGISTRY.collect()}
    emitted |= {f"{f.name}_total" for f in REGISTRY.collect() if f.type == "counter"}
    emitted.add("stamina_retries_total")
    assert named
    assert named <= emitted, sorted(named - emitted)


@pytest.mark.integration
def test_worker_block_starts_a_worker_that_stops_on_sigterm(settings: Settings) -> None:
    command = docs_block(PAGE, "eh-worker").strip()
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {command}"],
        cwd=REPO_ROOT,
        env={**os.environ, **env_for(settings)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        lines = []
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "worker.started" in line:
                break
        assert any("consumer=worker-1" in x or '"worker-1"' in x for x in lines), lines
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
