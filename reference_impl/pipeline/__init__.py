"""Reliable processing: the Redis Streams ingest queue and its worker, retries, circuit
breakers, the dead-letter queue and graceful degradation."""
