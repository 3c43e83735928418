"""The ingest queue: Redis Streams read by a consumer group.

A queued-mode request is answered `202 Accepted` only after `XADD` returned, so the event is
in the stream. How durable that is depends on the server's persistence: with
`appendonly yes` and `appendfsync always` every write is on disk before Redis replies (the
shipped configurations); with `appendfsync everysec` a crash of the Redis host can lose up to
a second of accepted events. The server must also run with `maxmemory-policy noeviction`: an
evicting server may drop a stream that holds acknowledged events.

Entries carry the validated, sanitized event content, so a worker only hashes and commits.
Workers read with `XREADGROUP`, acknowledge (`XACK`, then `XDEL` to free memory) only after
the commit, and take over entries a crashed worker left pending with `XAUTOCLAIM`.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from reference_impl.events.validation import PreparedEvent, prepared_from_content

__all__ = ["DELETED", "GROUP", "IngestQueue", "QueueEntry", "QueueFullError"]

GROUP = "auditkit-workers"
DELETED = "deleted"
_FORMAT = b"1"


class QueueFullError(Exception):
    """The stream holds `max_length` entries; accepting more would grow it without bound."""


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One stream entry. `event` is None for a payload that cannot be read (poison)."""

    stream: str
    entry_id: str
    tenant: str
    payload: bytes
    event: PreparedEvent | None
    error: str | None = None


def _decode(stream: str, entry_id: Any, fields: dict[bytes, bytes]) -> QueueEntry:
    eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    tenant = fields.get(b"tenant", b"").decode(errors="replace")
    payload = fields.get(b"event", b"")
    try:
        if fields.get(b"v") != _FORMAT or not tenant:
            raise ValueError("unknown entry format")
        digest = fields.get(b"digest")
        event = prepared_from_content(payload, base64.b64decode(digest) if digest else None)
    except ValueError as exc:
        return QueueEntry(stream, eid, tenant, payload, None, f"unreadable entry: {exc}")
    return QueueEntry(stream, eid, tenant, payload, event)


class IngestQueue:
    """Producer and consumer side of the ingest streams.

    Args:
        client: Redis/Valkey client.
        shards: Number of streams; a tenant always maps to the same one.
        max_length: Entries a stream may hold before `enqueue` refuses more.
    """

    def __init__(self, client: aioredis.Redis, *, shards: int = 1, max_length: int = 1_000_000):
        self.client = client
        self.shards = shards
        self.max_length = max_length
        # Hash tags keep each stream in one Redis Cluster slot.
        self.streams = [f"{{auditkit:ingest:{i}}}" for i in range(shards)]

    def stream_for(self, tenant: str) -> str:
        """The stream a tenant's events go to."""
        return self.streams[zlib.crc32(tenant.encode()) % self.shards]

    # --8<-- [start:enqueue]
    async def enqueue(self, tenant: str, events: Sequence[PreparedEvent]) -> list[str]:
        """Append events to the tenant's stream in one MULTI/EXEC; returns the entry ids.

        Raises:
            QueueFullError: the stream is at `max_length`.
            redis.exceptions.RedisError: the server refused or did not answer (for example
                `OOM command not allowed` under `noeviction`).
        """
        stream = self.stream_for(tenant)
        if await self.client.xlen(stream) + len(events) > self.max_length:
            raise QueueFullError(f"{stream} holds {self.max_length} entries")
        received = datetime.now(UTC).isoformat()
        async with self.client.pipeline(transaction=True) as pipe:
            for event in events:
                pipe.xadd(
                    stream,
                    {
                        "v": _FORMAT,
                        "tenant": tenant,
                        "event": orjson.dumps(event.content),
                        "digest": base64.b64encode(event.digest),
                        "received_at": received,
                    },
                )
            ids = await pipe.execute()
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    # --8<-- [end:enqueue]

    async def ensure_groups(self) -> None:
        """Create the consumer group on every stream (idempotent).

        Looks before creating: a server out of memory refuses XGROUP CREATE even for a
        group that exists, but a worker must still start there to drain the stream.
        """
        for stream in self.streams:
            try:
                groups: Any = await self.client.xinfo_groups(stream)
                if any(g["name"] in (GROUP, GROUP.encode()) for g in groups):
                    continue
            except ResponseError:
                pass  # no such stream yet
            try:
                await self.client.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def read(self, consumer: str, count: int, block_ms: int) -> list[QueueEntry]:
        """New entries for ``consumer`` (blocks up to ``block_ms`` when there are none)."""
        reply = await self.client.xreadgroup(
            GROUP, consumer, dict.fromkeys(self.streams, ">"), count=count, block=block_ms
        )
        return self._entries(reply)

    async def read_own_pending(self, consumer: str, count: int) -> list[QueueEntry]:
        """Entries delivered to ``consumer`` earlier and not acknowledged (after a restart)."""
        reply = await self.client.xreadgroup(
            GROUP, consumer, dict.fromkeys(self.streams, "0"), count=count
        )
        return self._entries(reply)

    async def claim_stale(self, consumer: str, min_idle_ms: int, count: int) -> list[QueueEntry]:
        """Take over entries other consumers left pending for ``min_idle_ms`` or longer."""
        out: list[QueueEntry] = []
        for stream in self.streams:
            reply = await self.client.xautoclaim(
                stream, GROUP, consumer, min_idle_time=min_idle_ms, start_id="0-0", count=count
            )
            for entry_id, fields in reply[1]:
                if fields is not None:
                    out.append(_decode(stream, entry_id, fields))
        return out

    async def ack(self, entries: Sequence[QueueEntry]) -> None:
        """Acknowledge entries and delete them (their events are committed or dead-lettered)."""
        if not entries:
            return
        by_stream: dict[str, list[str]] = {}
        for entry in entries:
            by_stream.setdefault(entry.stream, []).append(entry.entry_id)
        async with self.client.pipeline(transaction=True) as pipe:
            for stream, ids in by_stream.items():
                pipe.xack(stream, GROUP, *ids)
                pipe.xdel(stream, *ids)
                pipe.hdel(self._failures_key(stream), *ids)
            await pipe.execute()

    @staticmethod
    def _failures_key(stream: str) -> str:
        return f"{stream}:failures"

    async def note_failures(self, entries: Sequence[QueueEntry]) -> None:
        """Remember when each entry first failed (kept until it is acknowledged).

        Best effort: a server out of memory refuses the write, and the first failure time
        is then the time of dead-lettering; the entry itself is never at risk.
        """
        now = datetime.now(UTC).isoformat()
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for entry in entries:
                    pipe.hsetnx(self._failures_key(entry.stream), entry.entry_id, now)
                await pipe.execute()
        except ResponseError:
            pass

    async def first_failure(self, entry: QueueEntry) -> str | None:
        """When ``entry`` first failed, if it failed before."""
        value: Any = await self.client.hget(self._failures_key(entry.stream), entry.entry_id)
        return value.decode() if isinstance(value, bytes) else value

    async def deliveries(self, entries: Sequence[QueueEntry]) -> dict[str, int]:
        """How many times each pending entry has been delivered."""
        counts: dict[str, int] = {}
        for entry in entries:
            info = await self.client.xpending_range(
                entry.stream, GROUP, min=entry.entry_id, max=entry.entry_id, count=1
            )
            if info:
                counts[entry.entry_id] = int(info[0]["times_delivered"])
        return counts

    async def depth(self) -> int:
        """Entries not yet acknowledged, over every stream."""
        total = 0
        for stream in self.streams:
            total += await self.client.xlen(stream)
        return total

    @staticmethod
    def _entries(reply: Any) -> list[QueueEntry]:
        out: list[QueueEntry] = []
        for stream, items in reply or []:
            name = stream.decode() if isinstance(stream, bytes) else str(stream)
            for entry_id, fields in items:
                if fields:
                    out.append(_decode(name, entry_id, fields))
                else:  # deleted while still pending: nothing to do but acknowledge it
                    eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                    out.append(QueueEntry(name, eid, "", b"", None, DELETED))
        return out
