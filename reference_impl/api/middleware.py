"""ASGI middleware: correlation ids and security headers.

Written as plain ASGI rather than `BaseHTTPMiddleware`, which buffers streaming responses
and costs a task per request on the ingest hot path.
"""

from __future__ import annotations

import re
import uuid

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reference_impl.core.errors import PayloadTooLargeError
from reference_impl.observability.logging import correlation_id

__all__ = ["ApiHeadersMiddleware", "CorrelationIdMiddleware"]

_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
]


# --8<-- [start:correlation-id]
class CorrelationIdMiddleware:
    """Take `X-Correlation-ID` from the request (or make one), echo it, expose it to logs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope["headers"]:
            if name == b"x-correlation-id":
                incoming = value.decode("latin-1")
                break
        cid = incoming if incoming and _VALID.match(incoming) else str(uuid.uuid4())
        token = correlation_id.set(cid)
        is_docs = scope["path"] in {"/docs", "/redoc"}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-correlation-id", cid.encode()))
                headers.extend(
                    h
                    for h in _SECURITY_HEADERS
                    if not is_docs or h[0] != b"content-security-policy"
                )
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            correlation_id.reset(token)


# --8<-- [end:correlation-id]


# --8<-- [start:api-headers]
class ApiHeadersMiddleware:
    """Headers every versioned response carries, and the service-wide body size bound.

    - `API-Version` on `/v1/...` responses, and `Cache-Control: no-store` there: audit data
      must not be kept by browsers or shared caches.
    - Headers routes ask for through `request.state.response_headers` (rate-limit fields,
      `Deprecation` and `Sunset`), added even to problem responses.
    - `Strict-Transport-Security` when the service sits behind TLS (`AUDIT_HSTS`).
    - A body larger than `max_body_bytes` is refused with `413` before any route reads it.
    """

    def __init__(self, app: ASGIApp, *, version: str, max_body_bytes: int, hsts: bool) -> None:
        self.app = app
        self.prefix = f"/{version}/"
        self.version = version.encode()
        self.max_body_bytes = max_body_bytes
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        versioned = scope["path"].startswith(self.prefix)
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body_bytes:
                await _too_large(send, self.max_body_bytes)
                return
        seen = 0

        async def bounded_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body_bytes:
                raise PayloadTooLargeError(f"the body is limited to {self.max_body_bytes} bytes")
            return message

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                extra = scope.get("state", {}).get("response_headers", {})
                for name, value in extra.items():
                    if name.lower().encode() not in names:
                        headers.append((name.lower().encode(), value.encode()))
                if versioned:
                    headers.append((b"api-version", self.version))
                    if b"cache-control" not in names:
                        headers.append((b"cache-control", b"no-store"))
                if self.hsts:
                    headers.append((b"strict-transport-security", b"max-age=63072000"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, bounded_receive, send_with_headers)


# --8<-- [end:api-headers]


async def _too_large(send: Send, limit: int) -> None:
    body = orjson.dumps(
        PayloadTooLargeError(f"the body is limited to {limit} bytes").problem()
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
