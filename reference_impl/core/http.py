"""Request helpers shared by every domain's endpoints: bounded JSON bodies, app state."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import Scope

from reference_impl.core.errors import PayloadTooLargeError, UnsupportedMediaTypeError
from reference_impl.core.settings import Settings

__all__ = [
    "API_PREFIX",
    "DirectRoute",
    "add_response_headers",
    "app_state",
    "deprecated",
    "get_engine",
    "get_settings_dep",
    "read_json_body",
    "response_headers",
]

# Domain routers declare their routes under this prefix themselves, so that a route's path
# template (the key of the access policy) is the full path a client calls.
API_PREFIX = "/v1"


async def read_json_body(request: Request, limit: int) -> bytes:
    """The raw body of a JSON request, refused early if it is not JSON or exceeds ``limit``.

    The body is read in chunks and abandoned at ``limit`` + 1 bytes, so an oversized
    upload costs the service no more memory than the bound.
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaTypeError("send the body as application/json")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"the body is limited to {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"the body is limited to {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


# --8<-- [start:direct-route]
class DirectRoute(APIRoute):
    """A route whose endpoint takes the request alone and reads what it needs itself.

    On every request FastAPI solves the endpoint's dependencies and parameters: for the
    ingest route (authorization, the settings, the `mode` query parameter) that machinery
    cost more CPU than parsing the event (py-spy on the benchmark's API processes at
    saturation: `solve_dependencies` 16.6 % of their samples, `parse_event` 9.2 %).
    The routes that carry every event use this class: FastAPI still matches them, wraps
    them in the middleware and the problem handlers, and documents them (their parameters
    are declared in `openapi_extra`); the endpoint is called with the `Request` and
    authorizes the caller itself.

    Dependencies are refused, so none can be declared and silently skipped; an endpoint
    with any parameter but the request is refused for the same reason. (Dependencies
    declared on the application itself would not be seen here: the service declares none.)
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        dependant = self.dependant
        declared = (
            dependant.dependencies,
            dependant.path_params,
            dependant.query_params,
            dependant.header_params,
            dependant.cookie_params,
            dependant.body_params,
        )
        if any(declared):
            raise TypeError(
                f"{self.path}: a DirectRoute runs no dependencies or parameters; "
                "read them from the request in the endpoint"
            )

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return endpoint


# --8<-- [end:direct-route]


def add_response_headers(request: Request, headers: dict[str, str]) -> None:
    """Headers the response must carry, whatever route or error produces it (the API
    headers middleware adds them)."""
    # Kept in the scope's state dictionary and found through the scope: asking
    # `request.state` for an attribute not set yet raises and catches `AttributeError`, on
    # every request.
    state: dict[str, Any] = request.scope.setdefault("state", {})
    extra: dict[str, str] | None = state.get("response_headers")
    if extra is None:
        extra = state["response_headers"] = {}
    extra.update(headers)


def response_headers(scope: Scope) -> dict[str, str]:
    """The headers routes asked a response to carry (`add_response_headers`), if any."""
    extra: dict[str, str] = scope.get("state", {}).get("response_headers", {})
    return extra


def app_state(request: Request, name: str) -> Any:
    """An object the app factory put on `app.state`."""
    return getattr(request.app.state, name)


# Dependencies are `async def` although they do not await: FastAPI runs a plain `def`
# dependency in a worker thread, a hand-off that costs more than the lookup itself.
async def get_settings_dep(request: Request) -> Settings:
    """FastAPI dependency: the service settings."""
    settings: Settings = request.app.state.settings
    return settings


async def get_engine(request: Request) -> AsyncEngine:
    """FastAPI dependency: the database engine."""
    engine: AsyncEngine = request.app.state.engine
    return engine


# --8<-- [start:deprecated]
def deprecated(
    *, since: datetime, sunset: datetime | None = None, link: str | None = None
) -> dict[str, Any]:
    """Route options that mark a route deprecated, for `@router.get(..., **deprecated(...))`.

    Responses then carry `Deprecation: @<unix time>` (RFC 9745), `Sunset: <HTTP date>`
    (RFC 8594) and a `Link` to the migration notes, and the OpenAPI document flags the
    operation as deprecated.
    """
    headers = {"Deprecation": f"@{int(since.timestamp())}"}
    if sunset is not None:
        headers["Sunset"] = format_datetime(sunset.astimezone(UTC), usegmt=True)
    if link is not None:
        headers["Link"] = f'<{link}>; rel="deprecation"'

    async def announce(request: Request) -> None:
        add_response_headers(request, headers)

    return {"deprecated": True, "dependencies": [Depends(announce)]}


# --8<-- [end:deprecated]
