"""`DirectRoute`: the endpoint gets the request alone, and nothing declared is skipped."""

from __future__ import annotations

from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response

from reference_impl.core.http import DirectRoute


async def _dependency(request: Request) -> None:
    request.state.ran = True


async def test_the_endpoint_is_called_with_the_request_and_documented() -> None:
    router = APIRouter(route_class=DirectRoute)

    @router.post(
        "/echo", summary="Echo", openapi_extra={"parameters": [{"name": "q", "in": "query"}]}
    )
    async def echo(request: Request) -> Response:
        return Response(f"{request.method} {request.query_params['q']}".encode(), 201)

    app = FastAPI()
    app.include_router(router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        resp = await client.post("/echo?q=x")
    assert (resp.status_code, resp.text) == (201, "POST x")
    operation = app.openapi()["paths"]["/echo"]["post"]
    assert operation["summary"] == "Echo"
    assert operation["parameters"] == [{"name": "q", "in": "query"}]


async def _query(request: Request, q: Annotated[str, Query()]) -> Response:
    return Response()


async def _header(request: Request, x_key: Annotated[str, Header()]) -> Response:
    return Response()


async def _path(request: Request, item: str) -> Response:
    return Response()


async def _depends(request: Request, ran: Annotated[None, Depends(_dependency)]) -> Response:
    return Response()


@pytest.mark.parametrize(
    ("path", "endpoint"), [("/q", _query), ("/h", _header), ("/{item}", _path), ("/d", _depends)]
)
def test_a_declared_parameter_or_dependency_is_refused(path: str, endpoint: object) -> None:
    router = APIRouter(route_class=DirectRoute)
    with pytest.raises(TypeError, match="runs no dependencies or parameters"):
        router.add_api_route(path, endpoint, methods=["POST"])  # type: ignore[arg-type]


def test_a_routers_dependencies_are_refused() -> None:
    router = APIRouter(route_class=DirectRoute, dependencies=[Depends(_dependency)])

    async def endpoint(request: Request) -> Response:
        return Response()

    with pytest.raises(TypeError, match="runs no dependencies or parameters"):
        router.add_api_route("/guarded", endpoint, methods=["POST"])
