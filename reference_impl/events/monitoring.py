"""Tamper detection that fails fast.

Whoever verifies a chain (the schedule, an API call, `auditkit verify`) goes through
`IntegrityMonitor.check`. When the chain is broken, the monitor at once:

1. raises a critical alert (`integrity.tamper_detected`: a CRITICAL log line, the
   `auditkit_tamper_detected_total` metric, and the webhook if one is configured);
2. marks the tenant's log compromised (`tenant_integrity`), which `/health/ready` reports and
   every read of that tenant's events carries as an `Audit-Integrity` response header;
3. leaves ingest running: the audit trail of what happens next must still be recorded, and
   the break is preserved as evidence for the investigation.

The mark is lifted only by `auditkit integrity clear`, which re-verifies first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from reference_impl.core.db import PLATFORM_SCOPE, scoped
from reference_impl.events import repository
from reference_impl.events.verification import TenantVerification, verify_tenant
from reference_impl.integrity import KeyRing
from reference_impl.observability.alerts import Alerter
from reference_impl.observability.metrics import (
    TAMPER_DETECTED,
    TENANT_COMPROMISED,
    VERIFICATION_RUNS,
)

__all__ = ["IntegrityMonitor"]

log = structlog.get_logger(__name__)


class IntegrityMonitor:
    """Verifies chains and reacts to a broken one."""

    def __init__(self, engine: AsyncEngine, keyring: KeyRing, alerter: Alerter) -> None:
        self.engine = engine
        self.keyring = keyring
        self.alerter = alerter

    # --8<-- [start:check]
    async def check(
        self, tenant: str, *, progress: Callable[[int], None] | None = None
    ) -> TenantVerification:
        """Verify ``tenant``'s chain; on a break, alert and mark the tenant compromised."""
        outcome = await verify_tenant(self.engine, self.keyring, tenant, progress=progress)
        result = outcome.result
        VERIFICATION_RUNS.labels("valid" if result.valid else "tampered").inc()
        async with scoped(self.engine, tenant, write=True) as conn:
            if result.valid:
                await repository.record_verified(conn, tenant, result.checked)
                return outcome
            kind = None if result.kind is None else str(result.kind)
            first = await repository.mark_compromised(
                conn, tenant, result.first_broken_seq, kind, result.detail
            )
        TAMPER_DETECTED.labels(kind or "unknown").inc()
        await self.refresh_gauge()
        if first:
            await self.alerter.critical(
                "integrity.tamper_detected",
                tenant=tenant,
                first_broken_seq=result.first_broken_seq,
                kind=kind,
                detail=result.detail,
            )
        return outcome

    # --8<-- [end:check]

    async def check_all(self) -> list[TenantVerification]:
        """Verify every tenant (one replica at a time, under an advisory lock)."""
        async with self.engine.connect() as lock_conn:
            if not await repository.try_lock_scheduled_verification(lock_conn):
                return []
            try:
                async with scoped(self.engine, PLATFORM_SCOPE) as conn:
                    tenants = await repository.list_tenants(conn)
                return [await self.check(t) for t in tenants]
            finally:
                await repository.unlock_scheduled_verification(lock_conn)

    async def compromised(self) -> list[dict[str, Any]]:
        """Every compromised tenant and where its chain broke."""
        async with scoped(self.engine, PLATFORM_SCOPE) as conn:
            marks = await repository.compromised(conn)
        return [
            {"tenant": m.tenant, "since": m.at.isoformat(), "seq": m.seq, "kind": m.kind}
            for m in marks
        ]

    async def refresh_gauge(self) -> None:
        """Set `auditkit_tenants_compromised` from the database."""
        TENANT_COMPROMISED.set(len(await self.compromised()))

    async def clear(self, tenant: str) -> TenantVerification:
        """Re-verify ``tenant`` and lift its compromised mark only if the chain is whole now."""
        outcome = await verify_tenant(self.engine, self.keyring, tenant)
        if outcome.result.valid:
            async with scoped(self.engine, tenant, write=True) as conn:
                await repository.clear_compromised(conn, tenant)
                await repository.record_verified(conn, tenant, outcome.result.checked)
            log.warning("integrity.compromised_cleared", tenant=tenant)
            await self.refresh_gauge()
        return outcome
