"""ASGI middleware: correlation ids, security headers, API headers and the body bound.

Written as plain ASGI rather than `BaseHTTPMiddleware`, which buffers streaming responses
and costs a task per request on the ingest hot path. What each layer adds to a request and
its response is a function of its own (`incoming_correlation_id`, `correlation_headers`,
`ApiHeaders`, and the responder `UnexpectedErrorMiddleware` is given), so that the direct
dispatch of the ingest routes (`api.direct`) applies exactly the same, in the same order.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reference_impl.core.errors import PayloadTooLargeError
from reference_impl.core.http import response_headers
from reference_impl.observability.logging import correlation_id

__all__ = [
    "ApiHeaders",
    "ApiHeadersMiddleware",
    "CorrelationIdMiddleware",
    "UnexpectedErrorMiddleware",
    "correlation_headers",
    "incoming_correlation_id",
]

_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
]
# The interactive docs load their scripts: every security header but the CSP.
_DOCS_HEADERS = [h for h in _SECURITY_HEADERS if h[0] != b"content-security-policy"]
_DOCS_PATHS = frozenset({"/docs", "/redoc"})

# Turns an exception that no handler took into the response the client gets (a `500`
# problem); called while the request's correlation id is set.
UnexpectedErrorResponder = Callable[[Scope, Receive, Exception], Awaitable[ASGIApp]]


# --8<-- [start:correlation-id]
def incoming_correlation_id(scope: Scope) -> str:
    """The request's `X-Correlation-ID` if it is well formed, else a new one."""
    for name, value in scope["headers"]:
        if name == b"x-correlation-id":
            incoming: str = value.decode("latin-1")
            if _VALID.match(incoming):
                return incoming
            break
    return str(uuid.uuid4())


def correlation_headers(scope: Scope, cid: str) -> list[tuple[bytes, bytes]]:
    """What every response carries last: its correlation id and the security headers."""
    security = _DOCS_HEADERS if scope["path"] in _DOCS_PATHS else _SECURITY_HEADERS
    return [(b"x-correlation-id", cid.encode()), *security]


class CorrelationIdMiddleware:
    """Take `X-Correlation-ID` from the request (or make one), echo it, expose it to logs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cid = incoming_correlation_id(scope)
        token = correlation_id.set(cid)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    *correlation_headers(scope, cid),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            correlation_id.reset(token)


# --8<-- [end:correlation-id]


# --8<-- [start:api-headers]
class ApiHeaders:
    """Headers every versioned response carries, and the service-wide body size bound.

    - `API-Version` on `/v1/...` responses, and `Cache-Control: no-store` there: audit data
      must not be kept by browsers or shared caches.
    - Headers routes ask for through `add_response_headers` (rate-limit fields,
      `Deprecation` and `Sunset`), added even to problem responses.
    - `Strict-Transport-Security` when the service sits behind TLS (`AUDIT_HSTS`).
    - A body larger than `max_body_bytes` is refused with `413` before any route reads it.
    """

    def __init__(self, *, version: str, max_body_bytes: int, hsts: bool) -> None:
        self.prefix = f"/{version}/"
        self.version = version.encode()
        self.max_body_bytes = max_body_bytes
        self.hsts = hsts

    def declares_too_much(self, scope: Scope) -> bool:
        """Whether the request's `Content-Length` is over the bound."""
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body_bytes:
                return True
        return False

    def bounded(self, receive: Receive) -> Receive:
        """``receive``, failing once the body read so far is over the bound."""
        seen = 0

        async def bounded_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body_bytes:
                raise PayloadTooLargeError(f"the body is limited to {self.max_body_bytes} bytes")
            return message

        return bounded_receive

    def add_to(self, scope: Scope, headers: list[tuple[bytes, bytes]]) -> None:
        """Add this service's API headers to a response's ``headers``."""
        names = {name.lower() for name, _ in headers}
        extra = response_headers(scope)
        for name, value in extra.items():
            if name.lower().encode() not in names:
                headers.append((name.lower().encode(), value.encode()))
        if scope["path"].startswith(self.prefix):
            headers.append((b"api-version", self.version))
            if b"cache-control" not in names:
                headers.append((b"cache-control", b"no-store"))
        if self.hsts:
            headers.append((b"strict-transport-security", b"max-age=63072000"))

    async def refuse_too_large(self, scope: Scope, send: Send) -> None:
        """Answer `413` to a request that declared a body over the bound."""
        await _too_large(send, self.max_body_bytes, scope["path"])


class ApiHeadersMiddleware:
    """Applies `ApiHeaders` to every HTTP request and response."""

    def __init__(self, app: ASGIApp, *, headers: ApiHeaders) -> None:
        self.app = app
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                self.headers.add_to(scope, headers)
                message["headers"] = headers
            await send(message)

        if self.headers.declares_too_much(scope):
            await self.headers.refuse_too_large(scope, send_with_headers)
            return
        await self.app(scope, self.headers.bounded(receive), send_with_headers)


# --8<-- [end:api-headers]


# --8<-- [start:unexpected-error]
class UnexpectedErrorMiddleware:
    """An exception no handler took becomes the `500` problem, and is raised again.

    It runs inside the correlation-id and API-header middleware, so the `500` carries the
    correlation id (in the log line and the body) and every header other responses carry;
    Starlette's own last resort runs outside them, after the correlation id is gone. The
    exception goes on to the server, which logs it.
    """

    def __init__(self, app: ASGIApp, *, respond: UnexpectedErrorResponder) -> None:
        self.app = app
        self.respond = respond

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:  # too late for another answer: the connection will be dropped
                raise
            response = await self.respond(scope, receive, exc)
            await response(scope, receive, send)
            raise


# --8<-- [end:unexpected-error]


async def _too_large(send: Send, limit: int, instance: str) -> None:
    body = orjson.dumps(
        PayloadTooLargeError(f"the body is limited to {limit} bytes").problem(instance)
        | {"correlation_id": correlation_id.get()}
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
