"""Roles, and the one policy table that says which roles may call each route.

Every route of the service has an entry here; a request to a route without one is refused
(fail closed), and a test fails when a route exists that the table does not cover. GraphQL
operations are listed the same way, by operation name.

| role | may |
|---|---|
| `ingest` | write events |
| `reader` | query its own tenant's events |
| `auditor` | query, export, verify, read proofs |
| `admin` | manage its tenant's API keys and dead-letter queue |
| `platform_admin` | explicit cross-tenant operations (list tenants, verify one, bootstrap keys) |
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["POLICY", "PUBLIC", "TENANT_ROLES", "Role", "Rule", "rule_for"]


class Role(StrEnum):
    """What a credential may do."""

    ingest = "ingest"
    reader = "reader"
    auditor = "auditor"
    admin = "admin"
    platform_admin = "platform_admin"


TENANT_ROLES = frozenset({Role.ingest, Role.reader, Role.auditor, Role.admin})


@dataclass(frozen=True, slots=True)
class Rule:
    """Who may call a route. `roles=None` marks a public route (no credentials)."""

    roles: frozenset[Role] | None
    cross_tenant: bool = False

    def allows(self, roles: frozenset[Role]) -> bool:
        """Whether a caller with ``roles`` may call the route."""
        return self.roles is None or bool(self.roles & roles)


def _any(*roles: Role) -> Rule:
    return Rule(frozenset(roles))


PUBLIC = Rule(None)
_READ = _any(Role.reader, Role.auditor)

# --8<-- [start:policy]
POLICY: dict[tuple[str, str], Rule] = {
    # events
    ("POST", "/v1/events"): _any(Role.ingest),
    ("POST", "/v1/events:batch"): _any(Role.ingest),
    ("GET", "/v1/events"): _READ,
    ("GET", "/v1/events/{event_id}"): _READ,
    ("GET", "/v1/events/export"): _any(Role.auditor),
    ("GET", "/v1/integrity/verify"): _any(Role.auditor),
    # dead-letter queue
    ("GET", "/v1/dlq"): _any(Role.admin),
    ("POST", "/v1/dlq/{entry_id}:replay"): _any(Role.admin),
    ("DELETE", "/v1/dlq/{entry_id}"): _any(Role.admin),
    # API keys of the caller's tenant
    ("POST", "/v1/keys"): _any(Role.admin),
    ("GET", "/v1/keys"): _any(Role.admin),
    ("DELETE", "/v1/keys/{prefix}"): _any(Role.admin),
    # explicit cross-tenant operations
    ("GET", "/v1/admin/tenants"): Rule(frozenset({Role.platform_admin}), cross_tenant=True),
    ("POST", "/v1/admin/tenants/{tenant}/keys"): Rule(
        frozenset({Role.platform_admin}), cross_tenant=True
    ),
    ("POST", "/v1/admin/tenants/{tenant}/verify"): Rule(
        frozenset({Role.platform_admin}), cross_tenant=True
    ),
    # verifiable log
    ("GET", "/v1/log/checkpoint"): _READ,
    ("POST", "/v1/log/checkpoint"): _any(Role.auditor),
    ("GET", "/v1/log/proof/inclusion"): _READ,
    ("GET", "/v1/log/proof/consistency"): _READ,
    ("GET", "/v1/log/keys"): _READ,
    # probes, metrics and the API description carry no tenant data
    ("GET", "/health/live"): PUBLIC,
    ("GET", "/health/ready"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
}
# --8<-- [end:policy]


def rule_for(method: str, path: str) -> Rule | None:
    """The rule of a route (by its path template), or None if the table has none."""
    if method == "HEAD":
        method = "GET"
    return POLICY.get((method, path))
