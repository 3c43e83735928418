"""Direct dispatch: the routes every event passes through, served ahead of the framework.

A request to `POST /v1/events` passes, in FastAPI, through about a dozen layers before the
endpoint runs and back through them with the response: the application and its server-error,
telemetry and body-limit middleware, this service's two middleware, the exception
middleware, two exit stacks, the router, the included router and the route, each wrapping
`send` once more. py-spy on the benchmark's API processes at saturation put a fifth of their
samples in those layers (the endpoint itself, parsing, sealing and committing the event
included, took two fifths).

`AuditApp` serves its `DirectRoute`s (which take no dependencies or parameters, see
`core.http.DirectRoute`) itself, before any of those layers, and applies what the layers
would have applied, with the same functions: the correlation id and the security headers
(`incoming_correlation_id`, `correlation_headers`), the API headers and the body bound
(`ApiHeaders`), the exception handlers the application registered (looked up by the
exception's class, as Starlette does) and the `500` problem for any other exception
(`unexpected_error`). Every other request, and every request when direct dispatch is off
(CORS configured: its middleware must see every request), takes the full stack. The tests
send the same requests both ways and expect the same answers, byte for byte.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from starlette.routing import BaseRoute
from starlette.types import Message, Receive, Scope, Send

from reference_impl.api.middleware import (
    ApiHeaders,
    correlation_headers,
    incoming_correlation_id,
)
from reference_impl.api.problems import unexpected_error
from reference_impl.core.http import DirectRoute
from reference_impl.observability.logging import correlation_id

__all__ = ["AuditApp", "DirectDispatch"]

Handler = Callable[[Request, Exception], Any]


# --8<-- [start:direct-dispatch]
class DirectDispatch:
    """Serves an application's `DirectRoute`s without its middleware stack and router.

    Args:
        app: The application (its exception handlers installed).
        headers: The API headers and body bound its middleware applies.
        routes: Routes the application includes at their own path (no prefix added by
            `include_router`); the `DirectRoute`s among them are served here.
    """

    def __init__(self, app: FastAPI, headers: ApiHeaders, routes: Iterable[BaseRoute]) -> None:
        self.app = app
        self.headers = headers
        self.routes: dict[tuple[str, str], DirectRoute] = {
            (method, route.path): route
            for route in routes
            if isinstance(route, DirectRoute)
            for method in route.methods or ()
        }
        self.handlers: Mapping[Any, Handler] = app.exception_handlers

    def route_for(self, scope: Scope) -> DirectRoute | None:
        """The direct route an HTTP request is for, if any."""
        if scope.get("root_path"):  # mounted under a prefix: let the router resolve it
            return None
        return self.routes.get((scope["method"], scope["path"]))

    async def serve(self, route: DirectRoute, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one request as the full stack would."""
        scope["app"] = self.app
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = {}
        cid = incoming_correlation_id(scope)
        token = correlation_id.set(cid)
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                self.headers.add_to(scope, headers)
                headers += correlation_headers(scope, cid)
                message["headers"] = headers
            await send(message)

        try:
            if self.headers.declares_too_much(scope):
                await self.headers.refuse_too_large(scope, send_with_headers)
                return
            bounded = self.headers.bounded(receive)
            request = Request(scope, bounded)
            try:
                response = await route.endpoint(request)
            except Exception as exc:
                handler = self._handler_for(exc)
                if handler is None:
                    raise
                response = handler(request, exc)
                if inspect.isawaitable(response):
                    response = await response
            await response(scope, bounded, send_with_headers)
        except Exception as exc:  # as `UnexpectedErrorMiddleware`: a 500, then raise
            if started:
                raise
            response = await unexpected_error(scope, receive, exc)
            await response(scope, receive, send_with_headers)
            raise
        finally:
            correlation_id.reset(token)

    def _handler_for(self, exc: Exception) -> Handler | None:
        # As Starlette's exception middleware: the handler of the nearest class in the MRO.
        for cls in type(exc).__mro__:
            if cls in self.handlers:
                return self.handlers[cls]
        return None


# --8<-- [end:direct-dispatch]


class AuditApp(FastAPI):
    """The service's FastAPI application: its `DirectRoute`s skip the middleware stack.

    `direct` is set by the app factory once the routes are included; `None` sends every
    request through the full stack.
    """

    direct: DirectDispatch | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        direct = self.direct
        if direct is not None and scope["type"] == "http":
            route = direct.route_for(scope)
            if route is not None:
                await direct.serve(route, scope, receive, send)
                return
        await super().__call__(scope, receive, send)
