"""Chaos drills: Chaos Toolkit experiments that break real servers under load, and the
history checker that decides whether anything acknowledged was lost.

- `chaos.harness` owns the servers and processes of one drill run (PostgreSQL, Valkey,
  PgBouncer, API processes, queue workers), all under one run directory;
- `chaos.load` is the load generator: it records every acknowledged receipt in a history;
- `chaos.actions` and `chaos.probes` are what the experiments in `chaos/experiments/` call;
- `chaos.checker` compares the history with what PostgreSQL holds;
- `chaos.report` runs the experiments and writes the report and its plot.
"""
