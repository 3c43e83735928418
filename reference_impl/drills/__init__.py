"""Drills: the `auditkit drill` commands that run the chaos experiments of `chaos/`."""
