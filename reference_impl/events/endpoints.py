"""REST routes of the events domain: ingest, query, export, verify. No SQL here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from reference_impl.core.db import scoped
from reference_impl.core.errors import NotFoundError, ProblemField, ValidationFailedError
from reference_impl.core.http import (
    API_PREFIX,
    DirectRoute,
    get_engine,
    get_settings_dep,
    read_json_body,
    response_headers,
)
from reference_impl.core.settings import Settings
from reference_impl.events import repository
from reference_impl.events.access_log import record_access
from reference_impl.events.monitoring import IntegrityMonitor
from reference_impl.events.repository import EventFilter
from reference_impl.events.schemas import (
    AuditEventIn,
    BatchReceipts,
    Category,
    DataClassification,
    EventPage,
    Outcome,
    QueuedBatch,
    QueuedReceipt,
    Receipt,
    StoredEvent,
)
from reference_impl.events.validation import BatchIn, PreparedEvent, parse_batch, parse_event
from reference_impl.pipeline.service import IngestService, Queued
from reference_impl.security.dependencies import authorize, query_budget, spend_budget
from reference_impl.security.encryption import FieldEncryptor
from reference_impl.security.service import Caller

__all__ = ["ingest_router", "router"]

router = APIRouter(prefix=API_PREFIX, tags=["events"], dependencies=[Depends(authorize)])
# The routes every event passes through read the request themselves (see `DirectRoute`).
ingest_router = APIRouter(prefix=API_PREFIX, tags=["events"], route_class=DirectRoute)

CallerDep = Annotated[Caller, Depends(authorize)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
_INGEST_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid API key", **_PROBLEM},
    409: {"description": "event_id reused with different content", **_PROBLEM},
    413: {"description": "Body too large", **_PROBLEM},
    415: {"description": "Body is not application/json", **_PROBLEM},
    422: {"description": "Invalid fields, each named by JSON pointer", **_PROBLEM},
    503: {"description": "Store unavailable; retry with the same event_id", **_PROBLEM},
}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def _ingest(request: Request) -> IngestService:
    service: IngestService = request.app.state.ingest
    return service


IngestMode = Literal["sync", "async"]
_MODES: tuple[IngestMode, ...] = ("sync", "async")
_MODE_DOC = (
    "`sync`: answer 201 after the commit. `async`: answer 202 once the event is in the "
    "queue. Default: the `ingest_mode_default` setting."
)
_MODE_PARAMETER: dict[str, Any] = {
    "name": "mode",
    "in": "query",
    "required": False,
    "description": _MODE_DOC,
    "schema": {
        "anyOf": [{"enum": list(_MODES), "type": "string"}, {"type": "null"}],
        "description": _MODE_DOC,
        "title": "Mode",
    },
}


def _mode(request: Request) -> IngestMode | None:
    """The `mode` query parameter of an ingest route (declared by `_MODE_PARAMETER`)."""
    if not request.scope.get("query_string"):
        # Most ingest requests have no query; parsing an empty one still cost 2 % of the
        # API processes' samples at saturation.
        return None
    value = request.query_params.get("mode")
    if value is None:
        return None
    for mode in _MODES:
        if value == mode:
            return mode
    raise ValidationFailedError(
        [ProblemField("Input should be 'sync' or 'async'", parameter="mode")]
    )


async def _seal(request: Request, tenant: str, events: list[PreparedEvent]) -> list[PreparedEvent]:
    """Encrypt the configured fields before the events are queued, hashed or stored."""
    encryptor: FieldEncryptor | None = request.app.state.encryptor
    return events if encryptor is None else await encryptor.encrypt(tenant, events)


async def _open(request: Request, tenant: str, event: dict[str, Any]) -> dict[str, Any]:
    """Decrypt what the caller's tenant can still decrypt (shredded keys stay ciphertext)."""
    encryptor: FieldEncryptor | None = request.app.state.encryptor
    return event if encryptor is None else await encryptor.decrypt(tenant, event)


def _ingest_openapi(model: str) -> dict[str, Any]:
    """What FastAPI cannot see of an ingest route (`DirectRoute`): its body and `mode`."""
    return {
        "parameters": [_MODE_PARAMETER],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}},
        },
    }


# --8<-- [start:ingest-route]
@ingest_router.post(
    "/events",
    status_code=201,
    response_model=Receipt,
    responses={
        200: {"model": Receipt, "description": "Retry of a stored event"},
        202: {"model": QueuedReceipt, "description": "Queued (`mode=async`)"},
        **_INGEST_ERRORS,
    },
    openapi_extra=_ingest_openapi(AuditEventIn.__name__),
    summary="Record one audit event",
)
async def ingest_event(request: Request) -> Response:
    """Store one event. `201` only after it is committed; a retry gets the same receipt.

    With `mode=async`, `202` once the event is durably in the ingest queue.
    """
    caller = await authorize(request)
    settings: Settings = request.app.state.settings
    mode = _mode(request)
    raw = await read_json_body(request, settings.max_event_bytes)
    event = parse_event(raw, settings)
    await spend_budget(request, caller, "ingest")
    [event] = await _seal(request, caller.tenant, [event])
    outcome = await _ingest(request).ingest(caller.tenant, [event], mode)
    if isinstance(outcome, Queued):
        body = {"event_id": str(event.event_id), "status": "queued", "entry": outcome.entry_ids[0]}
        return _json(body, 202)
    [result] = outcome.results
    receipt = result.receipt.as_dict()
    if not result.created:
        return _json(receipt, 200)
    return _json(receipt, 201, {"Location": f"{API_PREFIX}/events/{receipt['event_id']}"})


# --8<-- [end:ingest-route]


@ingest_router.post(
    "/events:batch",
    status_code=201,
    response_model=BatchReceipts,
    responses={
        200: {"model": BatchReceipts, "description": "Every event was a retry"},
        202: {"model": QueuedBatch, "description": "Queued (`mode=async`)"},
        **_INGEST_ERRORS,
    },
    openapi_extra=_ingest_openapi(BatchIn.__name__),
    summary="Record up to 1000 audit events at once",
)
async def ingest_batch(request: Request) -> Response:
    """Store a batch atomically: every event is committed, or none (on any invalid event)."""
    caller = await authorize(request)
    settings: Settings = request.app.state.settings
    mode = _mode(request)
    raw = await read_json_body(request, settings.max_batch_bytes)
    events = parse_batch(raw, settings)
    await spend_budget(request, caller, "ingest", len(events))
    events = await _seal(request, caller.tenant, events)
    outcome = await _ingest(request).ingest(caller.tenant, events, mode)
    if isinstance(outcome, Queued):
        entries = [
            {"event_id": str(e.event_id), "status": "queued", "entry": i}
            for e, i in zip(events, outcome.entry_ids, strict=True)
        ]
        return _json({"queued": len(entries), "entries": entries}, 202)
    results = outcome.results
    created = sum(r.created for r in results)
    body = {
        "created": created,
        "duplicates": len(results) - created,
        # orjson writes the receipt dataclasses as they are, without a dict per event.
        "receipts": [r.receipt for r in results],
    }
    return _json(body, 201 if created else 200)


async def _filters(
    start: Annotated[datetime | None, Query(description="occurred_at >= start (RFC 3339)")] = None,
    end: Annotated[datetime | None, Query(description="occurred_at < end (RFC 3339)")] = None,
    principal_id: Annotated[str | None, Query(max_length=256)] = None,
    subject_id: Annotated[str | None, Query(max_length=256)] = None,
    action_prefix: Annotated[str | None, Query(max_length=128)] = None,
    outcome: Outcome | None = None,
    category: Category | None = None,
    data_classification: DataClassification | None = None,
) -> EventFilter:
    for name, value in (("start", start), ("end", end)):
        if value is not None and value.tzinfo is None:
            raise ValidationFailedError([ProblemField("needs a time zone", parameter=name)])
    return EventFilter(
        start=start,
        end=end,
        principal_id=principal_id,
        subject_id=subject_id,
        action_prefix=action_prefix,
        outcome=outcome.value if outcome else None,
        category=category.value if category else None,
        data_classification=data_classification.value if data_classification else None,
    )


FilterDep = Annotated[EventFilter, Depends(_filters)]


@router.get(
    "/events",
    response_model=EventPage,
    summary="Query events of the caller's tenant",
    responses={401: _PROBLEM, 422: _PROBLEM, 429: _PROBLEM},
    dependencies=[Depends(query_budget)],
)
async def list_events(
    request: Request,
    caller: CallerDep,
    settings: SettingsDep,
    engine: EngineDep,
    flt: FilterDep,
    limit: Annotated[int | None, Query(ge=1)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    order: Literal["asc", "desc"] = "desc",
) -> Response:
    """A page of events, newest first by default; follow `next_cursor` for more."""
    size = min(limit or settings.query_default_limit, settings.query_max_limit)
    after = None if cursor is None else repository.decode_cursor(cursor, order, flt)
    async with scoped(engine, caller.tenant) as conn:
        items, last = await repository.search(
            conn, caller.tenant, flt, limit=size, order=order, after_seq=after
        )
        headers = await _integrity_headers(conn, caller.tenant)
    items = [await _open(request, caller.tenant, item) for item in items]
    next_cursor = None if last is None else repository.encode_cursor(last, order, flt)
    await record_access(
        request,
        caller,
        "audit.events.query",
        resource_id="query",
        details={"filters": flt.as_details(), "returned": len(items)},
    )
    return _json({"items": items, "next_cursor": next_cursor}, headers=headers)


@router.get(
    "/events/export",
    summary="Stream every matching event as NDJSON",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/x-ndjson": {}}},
        401: _PROBLEM,
        422: _PROBLEM,
        429: _PROBLEM,
    },
    dependencies=[Depends(query_budget)],
)
async def export_events(
    request: Request,
    caller: CallerDep,
    engine: EngineDep,
    flt: FilterDep,
    decrypt: Annotated[
        bool,
        Query(
            description="Decrypt encrypted fields. Off by default: the export is the stored "
            "form, whose canonical bytes reproduce every hash."
        ),
    ] = False,
) -> StreamingResponse:
    """One stored event per line in `seq` order, streamed from a server-side cursor."""

    async def lines() -> AsyncIterator[bytes]:
        async with scoped(engine, caller.tenant) as conn:
            async for event in repository.stream_events(conn, caller.tenant, flt):
                if decrypt:
                    event = await _open(request, caller.tenant, event)
                yield orjson.dumps(event) + b"\n"

    async with scoped(engine, caller.tenant) as conn:
        headers = await _integrity_headers(conn, caller.tenant)
    headers.update(response_headers(request.scope))
    await record_access(
        request,
        caller,
        "audit.events.export",
        resource_id="export",
        details={"filters": flt.as_details(), "decrypt": decrypt},
    )
    return StreamingResponse(lines(), media_type="application/x-ndjson", headers=headers)


@router.get(
    "/events/{event_id}",
    response_model=StoredEvent,
    summary="Read one event",
    responses={401: _PROBLEM, 404: _PROBLEM, 429: _PROBLEM},
    dependencies=[Depends(query_budget)],
)
async def get_event(
    request: Request, event_id: UUID, caller: CallerDep, engine: EngineDep
) -> Response:
    """The stored event with this `event_id` in the caller's tenant."""
    async with scoped(engine, caller.tenant) as conn:
        event = await repository.get_event(conn, caller.tenant, event_id)
        headers = await _integrity_headers(conn, caller.tenant)
    if event is None:
        raise NotFoundError(f"no event {event_id} in this tenant")
    await record_access(request, caller, "audit.events.read", resource_id=str(event_id))
    return _json(await _open(request, caller.tenant, event), headers=headers)


@router.get(
    "/integrity/verify",
    tags=["integrity"],
    summary="Verify the caller's tenant chain",
    responses={401: _PROBLEM, 429: _PROBLEM},
    dependencies=[Depends(query_budget)],
)
async def verify(request: Request, caller: CallerDep) -> Response:
    """Recompute every hash and signature of the tenant's chain; name the first break.

    A break raises a critical alert and marks the tenant's log compromised.
    """
    monitor: IntegrityMonitor = request.app.state.monitor
    outcome = await monitor.check(caller.tenant)
    result = outcome.as_dict()
    await record_access(
        request,
        caller,
        "audit.integrity.verify",
        resource_id=caller.tenant,
        fhir_action="E",
        details={"valid": result["valid"], "checked": result["checked"]},
    )
    return _json(result)


async def _integrity_headers(conn: AsyncConnection, tenant: str) -> dict[str, str]:
    """`Audit-Integrity: compromised; seq=N; kind=K` on reads of a compromised tenant."""
    marks = await repository.compromised(conn, tenant)
    if not marks:
        return {}
    mark = marks[0]
    return {"Audit-Integrity": f"compromised; seq={mark.seq}; kind={mark.kind}"}
