"""Critical alerts: a CRITICAL log line with a stable event name, and an optional webhook.

Alert rules and on-call tooling key on the event name (`integrity.tamper_detected`, ...), so
names never change once published. The webhook gets the same fields as JSON; it is retried a
few times and its failure is logged, never raised: an unreachable pager must not stop the
service from recording the finding.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import stamina
import structlog

__all__ = ["Alerter"]

log = structlog.get_logger("auditkit.alerts")


# --8<-- [start:alerter]
class Alerter:
    """Raises critical alerts.

    Args:
        webhook_url: Where to POST alerts as JSON; None for log and metrics only.
    """

    def __init__(self, webhook_url: str | None, *, timeout_s: float = 5.0) -> None:
        self.webhook_url = webhook_url
        self.timeout_s = timeout_s

    async def critical(self, event: str, **fields: Any) -> bool:
        """Log ``event`` at CRITICAL and post it to the webhook; True if the webhook took it."""
        log.critical(event, **fields)
        if not self.webhook_url:
            return False
        body = {"event": event, "severity": "critical", "at": datetime.now(UTC).isoformat()}
        body.update(fields)
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                async for attempt in stamina.retry_context(
                    on=httpx.HTTPError, attempts=3, timeout=self.timeout_s * 3
                ):
                    with attempt:
                        response = await client.post(self.webhook_url, json=body)
                        response.raise_for_status()
        except httpx.HTTPError as exc:
            log.error("alerts.webhook_failed", alert=event, error=type(exc).__name__)
            return False
        return True


# --8<-- [end:alerter]
