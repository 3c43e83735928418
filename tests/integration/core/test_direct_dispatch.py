"""Direct dispatch of the ingest routes answers every request as the full stack does.

Each request is sent twice to one application: once served directly (`AuditApp.direct`),
once with direct dispatch off, through FastAPI's middleware stack and router, each time for
a tenant of its own that has seen the same requests before. The answers must be the same:
status, headers and body, but for what differs between two tenants or two moments (the
hash and time of a receipt, a queue entry, the reset time of a rate-limit window).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from reference_impl.api.direct import AuditApp, DirectDispatch
from reference_impl.core.settings import Settings
from tests.conftest import Tenant, new_tenant
from tests.support.apps import app_with
from tests.support.events import make_event

pytestmark = pytest.mark.integration

_VARYING_HEADERS = {"date", "server"}
_VARYING_FIELDS = {"hash", "recorded_at", "entry"}
# A correlation id the service made (the request sent none, or an invalid one).
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
_NEW_ID = "(a new id)"


class _BothWays:
    """Sends a request directly and through the full stack, and compares the answers."""

    def __init__(self, app: AuditApp, direct: Tenant, full: Tenant) -> None:
        assert app.direct is not None
        self.app = app
        self.dispatch: DirectDispatch = app.direct
        self.tenants = {"direct": direct, "full": full}
        self.served_directly = 0
        served = self.dispatch.serve

        async def counting(*args: Any) -> None:
            self.served_directly += 1
            await served(*args)

        self.dispatch.serve = counting  # type: ignore[method-assign]
        # An exception no handler takes reaches the server after the 500 is sent.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://auditkit.test")

    async def send(
        self, path: str, *, credentials: bool = True, **kwargs: Any
    ) -> tuple[httpx.Response, httpx.Response]:
        answers = {}
        extra = {"X-Correlation-ID": "req-equal", **kwargs.pop("headers", {})}
        for way, tenant in self.tenants.items():
            self.app.direct = self.dispatch if way == "direct" else None
            before = self.served_directly
            headers = {**tenant.headers, **extra} if credentials else extra
            answers[way] = await self.client.post(path, headers=headers, **kwargs)
            assert self.served_directly - before == (1 if way == "direct" else 0)
        self.app.direct = self.dispatch
        assert _comparable(answers["direct"]) == _comparable(answers["full"])
        return answers["direct"], answers["full"]


def _comparable(resp: httpx.Response) -> tuple[int, list[tuple[str, str]], Any]:
    headers = [
        (name, _NEW_ID if name == "x-correlation-id" and _UUID.match(value) else value)
        for name, value in resp.headers.multi_items()
        if name not in _VARYING_HEADERS
    ]
    headers = [(name, re.sub(r";t=\d+", ";t=…", value)) for name, value in headers]
    body: Any = resp.content
    if resp.headers.get("content-type", "").endswith("json"):
        body = _without_varying(orjson.loads(resp.content))
        headers = [(n, v) for n, v in headers if n != "content-length"]
    return resp.status_code, headers, body


def _without_varying(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_varying(v) for k, v in value.items() if k not in _VARYING_FIELDS}
    if isinstance(value, list):
        return [_without_varying(v) for v in value]
    return value


@pytest.fixture
async def both_ways(settings: Settings) -> AsyncIterator[_BothWays]:
    async with app_with(
        settings,
        max_event_bytes=4096,
        max_batch_bytes=64 * 1024,
        rate_limit_ingest_key="40/minute",
    ) as (app, _):
        assert isinstance(app, AuditApp)
        direct, full = await new_tenant(app), await new_tenant(app)
        both = _BothWays(app, direct, full)
        async with both.client:
            yield both


async def test_the_ingest_routes_answer_alike_both_ways(both_ways: _BothWays) -> None:
    send = both_ways.send
    event = make_event()
    created, _ = await send("/v1/events", json=event)
    assert created.status_code == 201
    assert created.headers["location"] == f"/v1/events/{event['event_id']}"
    assert created.headers["x-correlation-id"] == "req-equal"
    assert created.headers["ratelimit-policy"] == '"ingest";q=40;w=60'
    assert created.headers["cache-control"] == "no-store"
    assert created.headers["x-frame-options"] == "DENY"
    retried, _ = await send("/v1/events", json=event)
    assert (retried.status_code, retried.json()["seq"]) == (200, created.json()["seq"])
    conflict, _ = await send("/v1/events", json={**event, "details": {"changed": True}})
    assert conflict.status_code == 409
    queued, _ = await send("/v1/events", params={"mode": "async"}, json=make_event())
    assert queued.status_code == 202
    batch = [make_event() for _ in range(3)]
    stored, _ = await send("/v1/events:batch", json={"events": batch})
    assert (stored.status_code, stored.json()["created"]) == (201, 3)
    bad = [make_event(), {**make_event(), "outcome": "maybe"}]
    invalid, _ = await send("/v1/events:batch", json={"events": bad})
    assert invalid.status_code == 422
    assert invalid.json()["errors"][0]["pointer"].startswith("/events/1/")
    assert invalid.json()["correlation_id"] == "req-equal"


@pytest.mark.parametrize(
    ("request_kwargs", "status"),
    [
        ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 422),
        ({"json": {**make_event(), "outcome": "maybe"}}, 422),
        ({"content": b"event", "headers": {"Content-Type": "text/plain"}}, 415),
        ({"json": {**make_event(), "details": {"note": "x" * 5000}}}, 413),  # event bound
        ({"json": {**make_event(), "details": {"note": "x" * 70_000}}}, 413),  # service bound
        ({"json": make_event(), "params": {"mode": "later"}}, 422),
        ({"json": make_event(), "headers": {"Authorization": "Bearer ak_nope"}}, 401),
        ({"json": make_event(), "headers": {"X-Correlation-ID": "bad id!"}}, 201),
    ],
    ids=[
        "malformed",
        "invalid",
        "media-type",
        "event-bound",
        "service-bound",
        "mode",
        "key",
        "cid",
    ],
)
async def test_problems_are_alike_both_ways(
    both_ways: _BothWays, request_kwargs: dict[str, Any], status: int
) -> None:
    direct, _ = await both_ways.send("/v1/events", **dict(request_kwargs))
    assert direct.status_code == status
    if status >= 400:
        assert direct.headers["content-type"] == "application/problem+json"
        assert direct.json()["instance"] == "/v1/events"
    if "bad id!" in str(request_kwargs):  # an invalid id is replaced by a new one
        assert _UUID.match(direct.headers["x-correlation-id"])


async def test_missing_credentials_and_roles_are_refused_alike(both_ways: _BothWays) -> None:
    unauthenticated, _ = await both_ways.send("/v1/events", json=make_event(), credentials=False)
    assert unauthenticated.status_code == 401
    reader = await new_tenant(both_ways.app, roles=("reader",))
    refused, _ = await both_ways.send("/v1/events", json=make_event(), headers=reader.headers)
    assert refused.status_code == 403


async def test_a_spent_budget_is_refused_alike(both_ways: _BothWays) -> None:
    statuses = []
    for _ in range(42):
        direct, _ = await both_ways.send("/v1/events", json=make_event())
        statuses.append(direct.status_code)
    assert statuses == [201] * 40 + [429] * 2
    assert int(direct.headers["retry-after"]) >= 1


async def test_an_unexpected_error_is_a_500_problem_with_its_correlation_id(
    both_ways: _BothWays, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(both_ways.app.state.ingest, "ingest", broken)
    for answer in await both_ways.send("/v1/events", json=make_event()):
        assert answer.status_code == 500
        assert answer.json()["type"] == "urn:auditkit:problem:internal-error"
        assert answer.json()["correlation_id"] == answer.headers["x-correlation-id"] == "req-equal"
        assert answer.headers["x-content-type-options"] == "nosniff"


async def test_other_requests_take_the_full_stack(both_ways: _BothWays) -> None:
    dispatch = both_ways.dispatch
    assert set(dispatch.routes) == {("POST", "/v1/events"), ("POST", "/v1/events:batch")}
    scope = {"type": "http", "method": "GET", "path": "/v1/events", "root_path": ""}
    assert dispatch.route_for(scope) is None
    assert dispatch.route_for({**scope, "method": "POST", "path": "/v1/events/"}) is None
    mounted = {**scope, "method": "POST", "root_path": "/audit"}
    assert dispatch.route_for(mounted) is None
    assert dispatch.route_for({**scope, "method": "POST"}) is dispatch.routes["POST", "/v1/events"]


async def test_with_cors_every_request_takes_the_full_stack(settings: Settings) -> None:
    async with app_with(settings, cors_origins=["https://console.example"]) as (app, client):
        assert isinstance(app, AuditApp) and app.direct is None
        tenant = await new_tenant(app)
        resp = await client.post(
            "/v1/events",
            json=make_event(),
            headers={**tenant.headers, "Origin": "https://console.example"},
        )
        assert resp.status_code == 201
        assert resp.headers["access-control-allow-origin"] == "https://console.example"
