"""REST routes of the dead-letter queue: list, replay, purge (the caller's tenant only)."""

from __future__ import annotations

import re
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from redis.exceptions import RedisError

from reference_impl.core.errors import (
    NotFoundError,
    ProblemField,
    RedisUnavailableError,
    ValidationFailedError,
)
from reference_impl.core.http import API_PREFIX
from reference_impl.pipeline.dlq import DeadLetter, DeadLetterQueue, replay
from reference_impl.pipeline.service import IngestService
from reference_impl.security.dependencies import authorize
from reference_impl.security.service import Caller

__all__ = ["router"]

router = APIRouter(prefix=API_PREFIX, tags=["dead-letter queue"], dependencies=[Depends(authorize)])
CallerDep = Annotated[Caller, Depends(authorize)]
_ENTRY_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _dlq(request: Request) -> DeadLetterQueue:
    dlq: DeadLetterQueue = request.app.state.dlq
    return dlq


def _checked(entry_id: str) -> str:
    if not _ENTRY_ID.match(entry_id):
        raise ValidationFailedError([ProblemField("not a dead-letter entry id", parameter="id")])
    return entry_id


async def _entry(request: Request, tenant: str, entry_id: str) -> DeadLetter:
    try:
        letter = await _dlq(request).get(tenant, _checked(entry_id))
    except RedisError:
        raise RedisUnavailableError("the dead-letter queue is unavailable") from None
    if letter is None:
        raise NotFoundError(f"no dead-letter entry {entry_id} in this tenant")
    return letter


@router.get("/dlq", summary="List dead-lettered events", responses={401: _PROBLEM, 503: _PROBLEM})
async def list_dead_letters(
    request: Request,
    caller: CallerDep,
    after: Annotated[str | None, Query(max_length=64, description="List after this id")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    """Dead letters of the caller's tenant, oldest first; each keeps its error and timing."""
    try:
        letters = await _dlq(request).entries(
            caller.tenant, after=_checked(after) if after else "-", limit=limit
        )
    except RedisError:
        raise RedisUnavailableError("the dead-letter queue is unavailable") from None
    next_after = letters[-1].id if len(letters) == limit else None
    return _json({"items": [x.as_dict() for x in letters], "next_after": next_after})


@router.post(
    "/dlq/{entry_id}:replay",
    summary="Replay a dead-lettered event through synchronous ingest",
    responses={404: _PROBLEM, 409: _PROBLEM, 503: _PROBLEM},
)
async def replay_dead_letter(request: Request, entry_id: str, caller: CallerDep) -> Response:
    """Commit the event now; on success the entry leaves the dead-letter queue.

    A conflict (its `event_id` stored with other content) answers `409` and keeps the entry.
    """
    letter = await _entry(request, caller.tenant, entry_id)
    service: IngestService = request.app.state.ingest
    try:
        result = await replay(_dlq(request), service, letter)
    except ValueError:
        raise ValidationFailedError(
            [ProblemField("the stored payload is not a valid event; purge it", parameter="id")]
        ) from None
    return _json(result.receipt.as_dict(), 201 if result.created else 200)


@router.delete(
    "/dlq/{entry_id}",
    status_code=204,
    summary="Purge a dead-lettered event",
    responses={404: _PROBLEM, 503: _PROBLEM},
)
async def purge_dead_letter(request: Request, entry_id: str, caller: CallerDep) -> Response:
    """Remove the entry for good (after deciding it must not be stored)."""
    letter = await _entry(request, caller.tenant, entry_id)
    await _dlq(request).delete(caller.tenant, letter.id)
    return Response(status_code=204)
