"""Load drills (Locust scenarios with thresholds) and the benchmark harness (`auditkit bench`)."""
