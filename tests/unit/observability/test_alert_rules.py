"""Shipped alert rules name only metrics the code emits; shipped Valkey settings are safe."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import reference_impl.observability.metrics  # noqa: F401  (registers the metrics)
from reference_impl.core.embedded import EmbeddedValkey

ROOT = Path(__file__).resolve().parents[3]
PROMQL_WORDS = {
    "max", "min", "sum", "avg", "by", "without", "rate", "increase", "histogram_quantile",
    "le", "count", "irate", "on", "and", "or", "unless", "breaker", "reason", "kind",
}  # fmt: skip


def _emitted() -> set[str]:
    import stamina.instrumentation

    stamina.instrumentation.get_prometheus_counter()
    names: set[str] = set()
    for family in REGISTRY.collect():
        for sample in family.samples:
            names.add(sample.name)
        names.add(family.name)
        if family.type == "counter":  # exposed with the _total suffix
            names.add(f"{family.name}_total")
    for histogram in ("auditkit_ingest_commit_seconds", "auditkit_ingest_commit_batch_events"):
        names |= {f"{histogram}_bucket", f"{histogram}_sum", f"{histogram}_count"}
    names.add("stamina_retries_total")
    return names


def test_alert_rules_name_only_emitted_metrics() -> None:
    rules = yaml.safe_load((ROOT / "deploy/monitoring/alerts.yaml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert len(exprs) >= 8
    emitted = _emitted()
    for expr in exprs:
        without_ranges = re.sub(r"\[[0-9a-z]+\]", "", expr)
        identifiers = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_ranges))
        metrics = {i for i in identifiers if i not in PROMQL_WORDS}
        assert metrics, expr
        assert metrics <= emitted, f"{expr}: {sorted(metrics - emitted)} not emitted"


def test_shipped_valkey_config_is_durable_and_never_evicts() -> None:
    conf = {}
    for line in (ROOT / "deploy/valkey/valkey.conf").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition(" ")
            conf[key] = value.strip()
    assert conf["appendonly"] == "yes"
    assert conf["appendfsync"] == "always"
    assert conf["maxmemory-policy"] == "noeviction"
    # The embedded server (serve, tests, drills) runs with the same three settings.
    server = EmbeddedValkey(ROOT / ".never-started")
    for key in ("appendonly", "appendfsync", "maxmemory-policy"):
        assert server.settings[key] == conf[key]
