"""REST routes of the verifiable log: checkpoints, proofs, keys. No SQL here.

Every route works on the caller's own tenant's log, whose origin is
`<log_origin>/<tenant>`. Hashes are standard base64, as in checkpoints.

- `GET /v1/log/checkpoint`: the latest signed checkpoint, as JSON, or the bare note with
  `Accept: text/plain`; `?tree_size=N` for an older one;
- `POST /v1/log/checkpoint`: issue one now and publish it to the witnesses;
- `GET /v1/log/proof/inclusion?event_id=…&tree_size=N`: RFC 9162 inclusion proof;
  `tree_size` defaults to the latest checkpoint's;
- `GET /v1/log/proof/consistency?from=M&to=N`: RFC 9162 consistency proof;
- `GET /v1/log/keys`: every checkpoint key ever used, as verifier keys.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any
from uuid import UUID

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response

from reference_impl.core.db import scoped
from reference_impl.core.errors import NotFoundError
from reference_impl.core.http import API_PREFIX
from reference_impl.integrity.checkpoint import NoteVerifier
from reference_impl.security.dependencies import authorize, query_budget
from reference_impl.security.service import Caller
from reference_impl.transparency import repository, service
from reference_impl.transparency.repository import StoredCheckpoint
from reference_impl.transparency.schemas import (
    CheckpointOut,
    CheckpointPublished,
    ConsistencyProofOut,
    InclusionProofOut,
    KeysOut,
)
from reference_impl.transparency.tasks import TransparencyLog

__all__ = ["router"]

# Every route reads (or signs) on the caller's behalf: each spends one unit of its query
# budget, as the other read routes do.
router = APIRouter(
    prefix=f"{API_PREFIX}/log",
    tags=["verifiable log"],
    dependencies=[Depends(authorize), Depends(query_budget)],
)

CallerDep = Annotated[Caller, Depends(authorize)]
MAX_SIZE = 2**63 - 1

_PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid credentials", **_PROBLEM},
    403: {"description": "The credentials lack the role", **_PROBLEM},
}


def _json(body: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(body),
        status,
        {"Cache-Control": "no-store"},
        media_type="application/json",
    )


def _log(request: Request) -> TransparencyLog:
    transparency: TransparencyLog = request.app.state.transparency
    return transparency


def checkpoint_body(checkpoint: StoredCheckpoint, origin: str) -> dict[str, Any]:
    """The JSON shape of a stored checkpoint."""
    return {
        "origin": origin,
        "tree_size": checkpoint.tree_size,
        "root_hash": base64.b64encode(checkpoint.root_hash).decode(),
        "key_name": checkpoint.key_name,
        "created_at": checkpoint.created_at.isoformat(),
        "note": checkpoint.note,
    }


def _wants_text(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/plain" in accept and "application/json" not in accept


# --8<-- [start:get-checkpoint]
@router.get(
    "/checkpoint",
    response_model=CheckpointOut,
    summary="The latest signed checkpoint of the caller's log",
    responses={
        200: {"content": {"text/plain": {}}, "description": "JSON, or the note itself"},
        404: {"description": "No checkpoint yet (or none at that size)", **_PROBLEM},
        422: {"description": "Invalid tree_size", **_PROBLEM},
        **_ERRORS,
    },
)
async def get_checkpoint(
    request: Request,
    caller: CallerDep,
    tree_size: Annotated[
        int | None, Query(ge=0, le=MAX_SIZE, description="The checkpoint at this size.")
    ] = None,
) -> Response:
    """The newest checkpoint, or the one at `tree_size`.

    With `Accept: text/plain` the body is the signed note alone, as transparency-log tools
    fetch it; otherwise JSON with the note and its fields.
    """
    transparency = _log(request)
    async with scoped(transparency.engine, caller.tenant) as conn:
        if tree_size is None:
            checkpoint = await repository.latest_checkpoint(conn, caller.tenant)
        else:
            checkpoint = await repository.checkpoint_at(conn, caller.tenant, tree_size)
    if checkpoint is None:
        where = "yet" if tree_size is None else f"at tree size {tree_size}"
        raise NotFoundError(f"this log has no checkpoint {where}")
    if _wants_text(request):
        return Response(
            checkpoint.note, 200, {"Cache-Control": "no-store"}, media_type="text/plain"
        )
    return _json(checkpoint_body(checkpoint, transparency.origin(caller.tenant)))


# --8<-- [end:get-checkpoint]


@router.post(
    "/checkpoint",
    response_model=CheckpointPublished,
    status_code=201,
    summary="Issue a checkpoint now and publish it to the witnesses",
    responses={
        200: {"model": CheckpointPublished, "description": "The tree had not grown"},
        423: {"description": "The log is marked compromised", **_PROBLEM},
        **_ERRORS,
    },
)
async def issue_checkpoint(request: Request, caller: CallerDep) -> Response:
    """Sign the tree as it is now, store the checkpoint and send it to every witness.

    `201` with a new checkpoint; `200` with the latest one when no event was added since.
    A refusal by a witness is reported in `witnesses`, alerts, and marks the log
    compromised; a log so marked answers `423` until it is cleared.
    """
    transparency = _log(request)
    publication = await transparency.checkpoint(caller.tenant)
    body = {
        "created": publication.issued.created,
        "checkpoint": checkpoint_body(publication.checkpoint, transparency.origin(caller.tenant)),
        "witnesses": [w.as_dict() for w in publication.witnesses],
    }
    return _json(body, 201 if publication.issued.created else 200)


# --8<-- [start:proof-routes]
@router.get(
    "/proof/inclusion",
    response_model=InclusionProofOut,
    summary="Inclusion proof of one event",
    responses={
        404: {"description": "No such event in this tenant", **_PROBLEM},
        422: {"description": "Invalid event_id or tree_size", **_PROBLEM},
        **_ERRORS,
    },
)
async def inclusion_proof(
    request: Request,
    caller: CallerDep,
    event_id: Annotated[UUID, Query(description="The event to prove.")],
    tree_size: Annotated[
        int | None,
        Query(ge=1, le=MAX_SIZE, description="Tree size (default: the latest checkpoint's)."),
    ] = None,
) -> Response:
    """The audit path from the event's leaf to the root at `tree_size` (RFC 9162 §2.1.3)."""
    async with scoped(_log(request).engine, caller.tenant) as conn:
        proof = await service.inclusion(conn, caller.tenant, event_id, tree_size)
    return _json(proof.as_dict())


@router.get(
    "/proof/consistency",
    response_model=ConsistencyProofOut,
    summary="Consistency proof between two tree sizes",
    responses={422: {"description": "Invalid from or to", **_PROBLEM}, **_ERRORS},
)
async def consistency_proof(
    request: Request,
    caller: CallerDep,
    first: Annotated[int, Query(alias="from", ge=0, le=MAX_SIZE, description="Older size.")],
    second: Annotated[int, Query(alias="to", ge=0, le=MAX_SIZE, description="Newer size.")],
) -> Response:
    """Proof that the tree of `from` leaves is a prefix of the tree of `to` (§2.1.4)."""
    async with scoped(_log(request).engine, caller.tenant) as conn:
        proof = await service.consistency(conn, caller.tenant, first, second)
    return _json(proof.as_dict())


# --8<-- [end:proof-routes]


@router.get(
    "/keys",
    response_model=KeysOut,
    summary="Every checkpoint public key ever used",
    responses=_ERRORS,
)
async def keys(request: Request, caller: CallerDep) -> Response:
    """The verifier keys that check this service's checkpoints, retired ones included."""
    transparency = _log(request)
    active = transparency.keys.signer.verifier.vkey
    out = []
    for key in await transparency.published_keys():
        verifier = NoteVerifier.from_vkey(key.vkey)
        out.append(
            {
                "key_name": key.key_name,
                "key_id": verifier.key_id.hex(),
                "vkey": key.vkey,
                "active": key.vkey == active,
                "first_used_at": key.first_used_at.isoformat(),
            }
        )
    return _json({"keys": out})
