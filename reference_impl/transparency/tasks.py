"""Units of work of the verifiable log: issue a checkpoint, publish it, react to a witness.

[`TransparencyLog`][reference_impl.transparency.tasks.TransparencyLog] owns the
transactions (the service functions never commit) and the network calls to witnesses,
which never happen inside a transaction.

When a witness refuses a checkpoint, or the log finds that its own tree no longer extends
the last checkpoint it signed, the log fails fast, as a broken chain does:

1. a critical alert with a stable event name (`transparency.witness_rejected`,
   `transparency.checkpoint_inconsistent`): a CRITICAL log line, the
   `auditkit_tamper_detected_total` metric, and the alert webhook if one is configured;
2. the tenant's log is marked compromised, so reads carry the `Audit-Integrity` warning
   and `/health/ready` reports it;
3. no new checkpoint is built for that tenant until the mark is cleared.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from reference_impl.core.db import PLATFORM_SCOPE, scoped
from reference_impl.core.errors import IntegrityCompromisedError
from reference_impl.core.settings import Settings
from reference_impl.events import repository as events_repository
from reference_impl.integrity.witness import Decision, Outcome
from reference_impl.observability.alerts import Alerter
from reference_impl.observability.metrics import (
    CHECKPOINTS,
    MERKLE_LAG,
    TAMPER_DETECTED,
    TENANT_COMPROMISED,
    WITNESS_SUBMISSIONS,
)
from reference_impl.transparency import repository, service
from reference_impl.transparency.repository import StoredCheckpoint, StoredKey
from reference_impl.transparency.service import (
    CheckpointKeys,
    IssuedCheckpoint,
    TreeInconsistentError,
)
from reference_impl.transparency.witnesses import (
    DirectoryWitness,
    WebhookWitness,
    WitnessClient,
    WitnessUnavailableError,
)

__all__ = ["Publication", "TransparencyLog", "WitnessResult", "checkpoint_on_schedule"]

log = structlog.get_logger(__name__)

WITNESS_REJECTED = "transparency.witness_rejected"
CHECKPOINT_INCONSISTENT = "transparency.checkpoint_inconsistent"


@dataclass(frozen=True, slots=True)
class WitnessResult:
    """How one witness answered one checkpoint."""

    witness: str
    outcome: str
    """An `Outcome` value, `unavailable` or `up_to_date`."""
    reason: str
    tree_size: int
    """The size the witness holds after the answer (as far as the log knows)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "witness": self.witness,
            "outcome": self.outcome,
            "reason": self.reason,
            "tree_size": self.tree_size,
        }


@dataclass(frozen=True, slots=True)
class Publication:
    """A checkpoint and what the witnesses said of it."""

    issued: IssuedCheckpoint
    witnesses: list[WitnessResult]

    @property
    def checkpoint(self) -> StoredCheckpoint:
        """The checkpoint."""
        return self.issued.checkpoint


class TransparencyLog:
    """Issues, publishes and serves the checkpoints of every tenant's log.

    Args:
        engine: The database engine.
        keys: The checkpoint keys.
        log_origin: The origin prefix.
        witnesses: Where each new checkpoint is published.
        alerter: Raises the critical alerts.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        keys: CheckpointKeys,
        log_origin: str,
        witnesses: list[WitnessClient],
        alerter: Alerter,
    ) -> None:
        self.engine = engine
        self.keys = keys
        self.log_origin = log_origin
        self.witnesses = witnesses
        self.alerter = alerter

    @classmethod
    def from_settings(cls, engine: AsyncEngine, settings: Settings) -> TransparencyLog:
        """The log as configured: keys, origin, directory and webhook witnesses, alerts."""
        keys = CheckpointKeys.from_settings(settings)
        witnesses: list[WitnessClient] = []
        if settings.witness_dir is not None:
            witnesses.append(DirectoryWitness(settings.witness_dir, keys.verifiers))
        witnesses.extend(
            WebhookWitness(url, timeout_s=settings.witness_timeout_s)
            for url in settings.witness_urls
        )
        alerter = Alerter(settings.alert_webhook_url)
        return cls(engine, keys, settings.log_origin, witnesses, alerter)

    def origin(self, tenant: str) -> str:
        """The checkpoint origin of ``tenant``'s log."""
        return service.origin_of(self.log_origin, tenant)

    # --8<-- [start:checkpoint]
    async def checkpoint(self, tenant: str) -> Publication:
        """Issue a checkpoint of ``tenant``'s tree now and publish it to the witnesses.

        Raises:
            IntegrityCompromisedError: The log is marked compromised, or its tree no longer
                extends its last checkpoint (which marks it compromised and alerts).
        """
        try:
            async with scoped(self.engine, tenant, write=True) as conn:
                issued = await service.issue_checkpoint(conn, tenant, self.keys, self.log_origin)
        except TreeInconsistentError as exc:
            CHECKPOINTS.labels("refused").inc()
            await self._compromised(tenant, CHECKPOINT_INCONSISTENT, exc.detail)
            raise
        except IntegrityCompromisedError:
            CHECKPOINTS.labels("refused").inc()
            raise
        CHECKPOINTS.labels("issued" if issued.created else "unchanged").inc()
        return Publication(issued, await self.publish(tenant, issued.checkpoint))

    # --8<-- [end:checkpoint]

    async def publish(self, tenant: str, checkpoint: StoredCheckpoint) -> list[WitnessResult]:
        """Send ``checkpoint`` to every witness that has not accepted it yet."""
        async with scoped(self.engine, tenant) as conn:
            records = await repository.witness_records(conn, tenant)
        results = []
        for witness in self.witnesses:
            record = records.get(witness.name)
            held = record.tree_size if record is not None and record.accepted_at else 0
            if record is not None and record.accepted_at and held == checkpoint.tree_size:
                results.append(WitnessResult(witness.name, "up_to_date", "", held))
                continue
            results.append(await self._submit(tenant, witness, checkpoint, held))
        return results

    async def _submit(
        self, tenant: str, witness: WitnessClient, checkpoint: StoredCheckpoint, held: int
    ) -> WitnessResult:
        size = checkpoint.tree_size
        decision: Decision | None = None
        # One retry: a conflict tells the size the witness really holds.
        for _ in range(2):
            if held > size:
                decision = Decision(
                    Outcome.ROLLBACK,
                    f"the witness holds size {held}, more than the log's {size}",
                    held,
                )
                break
            async with scoped(self.engine, tenant) as conn:
                proof = (await service.consistency(conn, tenant, held, size)).proof
            try:
                decision = await witness.submit(checkpoint.note, held, proof)
            except WitnessUnavailableError as exc:
                return await self._unavailable(tenant, witness.name, str(exc), held)
            if decision.outcome is not Outcome.CONFLICT:
                break
            held = decision.latest_size
        assert decision is not None
        WITNESS_SUBMISSIONS.labels(witness.name, decision.outcome.value).inc()
        accepted = decision.outcome is Outcome.ACCEPTED
        async with scoped(self.engine, tenant, write=True) as conn:
            await repository.record_witness(
                conn,
                tenant,
                witness.name,
                outcome=decision.outcome.value,
                reason=decision.reason,
                accepted_size=size if accepted else None,
            )
        if decision.outcome not in (Outcome.ACCEPTED, Outcome.CONFLICT):
            await self._compromised(
                tenant,
                WITNESS_REJECTED,
                f"witness {witness.name} refused the checkpoint at size {size}: {decision.reason}",
                witness=witness.name,
                outcome=decision.outcome.value,
                tree_size=size,
            )
        elif not accepted:
            log.error("transparency.witness_conflict", tenant=tenant, witness=witness.name)
        return WitnessResult(
            witness.name, decision.outcome.value, decision.reason, size if accepted else held
        )

    async def _unavailable(self, tenant: str, witness: str, error: str, held: int) -> WitnessResult:
        # Nothing is lost: the next checkpoint is sent with a proof from the last size this
        # witness accepted.
        WITNESS_SUBMISSIONS.labels(witness, "unavailable").inc()
        log.error("transparency.witness_unavailable", tenant=tenant, witness=witness, error=error)
        async with scoped(self.engine, tenant, write=True) as conn:
            await repository.record_witness(
                conn, tenant, witness, outcome="unavailable", reason=error, accepted_size=None
            )
        return WitnessResult(witness, "unavailable", error, held)

    async def _compromised(self, tenant: str, event: str, detail: str, **fields: Any) -> None:
        """Mark the tenant compromised, count it and raise the critical alert."""
        kind = event.removeprefix("transparency.")
        async with scoped(self.engine, tenant, write=True) as conn:
            await events_repository.mark_compromised(conn, tenant, None, kind, detail)
        TAMPER_DETECTED.labels(kind).inc()
        async with scoped(self.engine, PLATFORM_SCOPE) as conn:
            TENANT_COMPROMISED.set(len(await events_repository.compromised(conn)))
        await self.alerter.critical(event, tenant=tenant, detail=detail, **fields)

    async def checkpoint_due(self) -> list[Publication]:
        """Checkpoint every tenant whose tree grew (one replica at a time)."""
        async with self.engine.connect() as lock_conn:
            if not await repository.try_lock_checkpointing(lock_conn):
                return []
            try:
                async with scoped(self.engine, PLATFORM_SCOPE) as conn:
                    tenants = await repository.tenants_due(conn)
                    MERKLE_LAG.set(await repository.tree_lag(conn))
                out = []
                for tenant in tenants:
                    try:
                        out.append(await self.checkpoint(tenant))
                    except IntegrityCompromisedError as exc:
                        log.warning(
                            "transparency.checkpoint_refused", tenant=tenant, detail=exc.detail
                        )
                return out
            finally:
                await repository.unlock_checkpointing(lock_conn)

    async def register_active_key(self) -> StoredKey:
        """Publish the active key before it signs anything, so clients can fetch it first."""
        signer = self.keys.signer
        async with self.engine.begin() as conn:
            return await repository.register_key(
                conn, signer.name, signer.verifier.public_key, signer.verifier.vkey
            )

    async def published_keys(self) -> list[StoredKey]:
        """Every checkpoint key ever used (or registered as active)."""
        async with self.engine.connect() as conn:
            return await repository.list_keys(conn)


# --8<-- [start:schedule]
async def checkpoint_on_schedule(transparency: TransparencyLog, interval: float) -> None:
    """Checkpoint every grown tree every ``interval`` seconds."""
    while True:
        await asyncio.sleep(interval)
        try:
            published = await transparency.checkpoint_due()
            if published:
                log.info("transparency.scheduled_checkpoints", tenants=len(published))
        except Exception as exc:  # retried next interval; the failure itself is logged
            log.error("transparency.scheduled_checkpoints_failed", error=type(exc).__name__)


# --8<-- [end:schedule]
