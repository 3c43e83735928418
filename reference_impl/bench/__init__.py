"""Benchmark: the `auditkit bench` command that runs the harness of `loadtests/bench/`."""
