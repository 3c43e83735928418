"""Locust scenarios: one module per drill, each a user class and its thresholds."""
