"""REST routes of the security domain: a tenant's API keys, and platform operations."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Request, Response

from reference_impl.core.db import PLATFORM_SCOPE, scoped
from reference_impl.core.errors import ForbiddenError, NotFoundError
from reference_impl.core.http import API_PREFIX
from reference_impl.events import repository as event_repository
from reference_impl.events.access_log import record_access
from reference_impl.events.monitoring import IntegrityMonitor
from reference_impl.security import repository
from reference_impl.security.dependencies import authorize, query_budget
from reference_impl.security.policy import TENANT_ROLES
from reference_impl.security.schemas import KeyCreate, KeyCreated, KeyInfo, TenantInfo
from reference_impl.security.service import ApiKeyService, Caller

__all__ = ["router"]

router = APIRouter(
    prefix=API_PREFIX,
    tags=["security"],
    dependencies=[Depends(authorize), Depends(query_budget)],
)
CallerDep = Annotated[Caller, Depends(authorize)]
TenantPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
_PREFIX = re.compile(r"^[0-9a-f]{12}$")
_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


async def _create(request: Request, caller: Caller, tenant: str, body: KeyCreate) -> Response:
    if not set(body.roles) <= TENANT_ROLES:
        raise ForbiddenError("keys made through the API carry tenant roles only")
    service: ApiKeyService = request.app.state.api_keys
    expires = None
    if body.expires_days is not None:
        expires = datetime.now(UTC) + timedelta(days=body.expires_days)
    created = await service.create(tenant, body.name, roles=body.roles, expires_at=expires)
    await record_access(
        request,
        caller,
        "admin.key.create",
        resource_id=created.prefix,
        category="administration",
        fhir_action="C",
        details={"tenant": tenant, "roles": list(created.roles)},
    )
    return _json(
        KeyCreated(
            key=created.key,
            prefix=created.prefix,
            tenant=tenant,
            name=created.name,
            roles=list(created.roles),
            expires_at=created.expires_at,
        ).model_dump(mode="json"),
        201,
    )


@router.post(
    "/keys",
    status_code=201,
    response_model=KeyCreated,
    summary="Create an API key for the caller's tenant",
    responses={403: _PROBLEM, 422: _PROBLEM},
)
async def create_key(request: Request, caller: CallerDep, body: KeyCreate) -> Response:
    """The key is in the response this once; only a keyed hash of it is stored."""
    return await _create(request, caller, caller.tenant, body)


@router.get("/keys", response_model=list[KeyInfo], summary="List the tenant's API keys")
async def list_keys(request: Request, caller: CallerDep) -> Response:
    """Prefixes and metadata; secrets are never stored, so never shown."""
    async with scoped(request.app.state.engine, caller.tenant) as conn:
        rows = await repository.list_keys(conn, caller.tenant)
    keys = [
        KeyInfo(
            prefix=r.prefix,
            name=r.name,
            roles=list(r.roles),
            created_at=r.created_at,
            expires_at=r.expires_at,
            revoked_at=r.revoked_at,
            last_used_at=r.last_used_at,
        ).model_dump(mode="json")
        for r in rows
    ]
    return _json(keys)


@router.delete(
    "/keys/{prefix}",
    status_code=204,
    summary="Revoke one of the tenant's API keys",
    responses={404: _PROBLEM},
)
async def revoke_key(request: Request, prefix: str, caller: CallerDep) -> Response:
    """Effective on the next request, in every process."""
    service: ApiKeyService = request.app.state.api_keys
    if not _PREFIX.match(prefix) or not await service.revoke(prefix, caller.tenant):
        raise NotFoundError(f"no live key {prefix} in this tenant")
    await record_access(
        request,
        caller,
        "admin.key.revoke",
        resource_id=prefix,
        category="administration",
        fhir_action="D",
    )
    return Response(status_code=204)


@router.get(
    "/admin/tenants",
    response_model=list[TenantInfo],
    summary="List every tenant (platform admins)",
)
async def list_tenants(request: Request, caller: CallerDep) -> Response:
    """Every tenant with its event count and whether its log is marked compromised."""
    async with scoped(request.app.state.engine, PLATFORM_SCOPE) as conn:
        heads = await event_repository.tenant_sizes(conn)
        compromised = {m.tenant for m in await event_repository.compromised(conn)}
    await record_access(
        request, caller, "platform.tenants.list", resource_id="tenants", category="administration"
    )
    return _json(
        [
            TenantInfo(tenant=t, events=n, compromised=t in compromised).model_dump()
            for t, n in heads
        ]
    )


@router.post(
    "/admin/tenants/{tenant}/keys",
    status_code=201,
    response_model=KeyCreated,
    summary="Create an API key for any tenant (platform admins)",
)
async def create_tenant_key(
    request: Request, tenant: TenantPath, caller: CallerDep, body: KeyCreate
) -> Response:
    """Bootstrap a tenant, or recover one whose admins lost their keys."""
    return await _create(request, caller, tenant, body)


@router.post(
    "/admin/tenants/{tenant}/verify",
    summary="Verify any tenant's chain (platform admins)",
)
async def verify_tenant_chain(request: Request, tenant: TenantPath, caller: CallerDep) -> Response:
    """The same verification as the tenant's own `GET /v1/integrity/verify`."""
    monitor: IntegrityMonitor = request.app.state.monitor
    outcome = await monitor.check(tenant)
    result = outcome.as_dict()
    await record_access(
        request,
        caller,
        "platform.integrity.verify",
        resource_id=tenant,
        category="administration",
        fhir_action="E",
        details={"tenant": tenant, "valid": result["valid"]},
    )
    return _json(result)
