"""FastAPI dependencies that authenticate a request and apply the policy table."""

from __future__ import annotations

from fastapi import Request
from starlette.routing import Route

from reference_impl.core.errors import ForbiddenError, UnauthorizedError
from reference_impl.core.http import add_response_headers
from reference_impl.security.policy import rule_for
from reference_impl.security.ratelimit import Budget, RateLimiter
from reference_impl.security.service import ApiKeyService, Caller
from reference_impl.security.tokens import TokenVerifier, looks_like_jwt

__all__ = ["authorize", "current_caller", "query_budget", "spend_budget"]


# Where a request keeps its caller once authenticated (every dependency asks again). A scope
# key, not `request.state`: a state attribute not set yet is found missing by raising and
# catching `AttributeError`, on every request.
_CALLER = "auditkit.caller"


# --8<-- [start:current-caller]
async def current_caller(request: Request) -> Caller:
    """The caller behind an API key (`Authorization: Bearer ak_…` or `X-API-Key`) or a JWT.

    Raises:
        UnauthorizedError: no credentials, or credentials that do not authenticate.
    """
    cached: Caller | None = request.scope.get(_CALLER)
    if cached is not None:
        return cached
    presented = request.headers.get("x-api-key")
    auth = request.headers.get("authorization")
    if presented is None and auth is not None:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise UnauthorizedError("use 'Authorization: Bearer <api key or token>'")
        presented = value.strip()
    if not presented:
        raise UnauthorizedError("send an API key in 'Authorization: Bearer' or 'X-API-Key'")
    if looks_like_jwt(presented):
        verifier: TokenVerifier | None = request.app.state.tokens
        if verifier is None:
            raise UnauthorizedError("bearer tokens are not accepted here; use an API key")
        claims = await verifier.verify(presented)
        caller = Caller(claims.tenant, f"jwt:{claims.subject}", claims.roles, "jwt")
    else:
        service: ApiKeyService = request.app.state.api_keys
        caller = await service.authenticate(presented)
    request.scope[_CALLER] = caller
    return caller


# --8<-- [end:current-caller]


# --8<-- [start:authorize]
async def authorize(request: Request) -> Caller:
    """Authenticate, then allow the call only if the policy table grants the caller's roles.

    Raises:
        UnauthorizedError: the request does not authenticate (401).
        ForbiddenError: it does, but the route needs a role the caller lacks (403), or the
            route is missing from the policy table (fail closed).
    """
    route = request.scope.get("route")
    path = route.path if isinstance(route, Route) else request.url.path
    rule = rule_for(request.method, path)
    caller = await current_caller(request)
    if rule is None:
        raise ForbiddenError("this route is not in the access policy")
    if not rule.allows(caller.roles):
        needed = ", ".join(sorted(rule.roles or ()))
        raise ForbiddenError(f"this needs one of the roles: {needed}")
    return caller


# --8<-- [end:authorize]


async def spend_budget(request: Request, caller: Caller, budget: Budget, cost: int = 1) -> None:
    """Spend from the caller's rate-limit budget; the response will carry the headers.

    Raises:
        RateLimitedError: the budget is spent (429 with `Retry-After`).
    """
    limiter: RateLimiter | None = request.app.state.rate_limiter
    if limiter is None:
        return
    add_response_headers(request, await limiter.spend(caller, budget, cost))


async def query_budget(request: Request) -> None:
    """Dependency for read routes: spends one unit of the caller's `query` budget."""
    await spend_budget(request, await current_caller(request), "query")
