"""Turn every error into an RFC 9457 `application/problem+json` response."""

from __future__ import annotations

import re
from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope

from reference_impl.core.errors import (
    AuditError,
    DatabaseUnavailableError,
    MethodNotAllowedError,
    Monitoring,
    NotFoundError,
    ProblemField,
    RedisUnavailableError,
    ValidationFailedError,
)
from reference_impl.core.http import API_PREFIX
from reference_impl.observability.logging import correlation_id

API_VERSION = API_PREFIX.strip("/")

__all__ = ["install_problem_handlers", "problem_response", "unexpected_error"]

log = structlog.get_logger(__name__)
_VERSION = re.compile(r"^/(v\d+)(/|$)")


def problem_response(request: Request, body: dict[str, Any], headers: dict[str, str]) -> Response:
    """A problem response carrying the request's correlation id."""
    cid = correlation_id.get()
    if cid is not None:
        body["correlation_id"] = cid
    body.setdefault("instance", request.url.path)
    return Response(
        orjson.dumps(body),
        status_code=int(body["status"]),
        headers={**headers, "Cache-Control": "no-store"},
        media_type="application/problem+json",
    )


async def _audit_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AuditError)
    spec = exc.spec()
    if spec.monitoring is not Monitoring.metric:
        log.warning(
            "request.failed",
            problem=spec.slug,
            status=spec.status,
            severity=spec.severity.value,
            path=request.url.path,
        )
    return problem_response(request, exc.problem(), exc.headers)


async def _request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    fields = []
    for err in exc.errors():
        where, *rest = err["loc"]
        name = ".".join(str(p) for p in rest) or str(where)
        # Messages only: pydantic's "input" member may echo PHI.
        if where == "body":
            pointer = "".join(f"/{p}" for p in rest)
            fields.append(ProblemField(err["msg"], pointer=pointer))
        else:
            fields.append(ProblemField(err["msg"], parameter=name))
    problem = ValidationFailedError(fields)
    return problem_response(request, problem.problem(), {})


async def _http_error(request: Request, exc: Exception) -> Response:
    # Starlette raises these for unknown routes and methods, before any route runs.
    assert isinstance(exc, StarletteHTTPException)
    problem: AuditError
    if exc.status_code == 405:
        problem = MethodNotAllowedError(f"{request.method} is not allowed here")
    elif exc.status_code == 404:
        version = _VERSION.match(request.url.path)
        if version and version.group(1) != API_VERSION:
            problem = NotFoundError(
                f"API version {version.group(1)} does not exist; this service speaks {API_VERSION}"
            )
        else:
            problem = NotFoundError("no such route")
    elif 400 <= exc.status_code < 500:
        problem = ValidationFailedError([], detail="the request is malformed")
    else:
        problem = AuditError(str(exc.detail))
    return problem_response(request, problem.problem(), dict(exc.headers or {}))


# --8<-- [start:dependency-down]
async def _dependency_down(request: Request, exc: Exception) -> Response:
    # A dependency failed in a route that does not handle it itself: still a 503 with
    # Retry-After (the client retries), never a 500 with a trace.
    problem: AuditError
    if isinstance(exc, RedisError):
        problem = RedisUnavailableError("the queue server is unavailable; retry")
    else:
        problem = DatabaseUnavailableError("the event store is unavailable; retry")
    log.warning("request.dependency_down", error=type(exc).__name__, path=request.url.path)
    return problem_response(request, problem.problem(), problem.headers)


# --8<-- [end:dependency-down]


async def unexpected_error(scope: Scope, receive: Receive, exc: Exception) -> Response:
    """The `500` problem for an exception no handler took (logged with its trace).

    Called by `UnexpectedErrorMiddleware` and the direct dispatch, while the request's
    correlation id is set: the log line and the response carry it.
    """
    request = Request(scope, receive)
    log.exception("request.unexpected_error", path=request.url.path, exc_info=exc)
    problem = AuditError("an unexpected error occurred; the correlation id identifies it")
    return problem_response(request, problem.problem(), {})


def install_problem_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app``.

    What none of them takes is answered by `unexpected_error`, which
    `UnexpectedErrorMiddleware` calls.
    """
    app.add_exception_handler(AuditError, _audit_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for dependency_error in (SQLAlchemyError, RedisError, OSError, TimeoutError):
        app.add_exception_handler(dependency_error, _dependency_down)
