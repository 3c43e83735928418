"""The benchmark harness behind `auditkit bench`: its stack, load generator, phases, report."""
