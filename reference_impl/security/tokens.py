"""JWT bearer tokens from configured OIDC issuers, verified against each issuer's JWKS.

Only asymmetric algorithms are accepted (RS256, ES256, EdDSA): with a shared secret any
holder of the verification key could mint tokens. A token is accepted only when its
signature verifies with a key the issuer publishes, its `alg` matches that key, and `exp`,
`nbf`, `aud` and `iss` check out within a bounded clock skew. The tenant and the roles come
from configured claims, never from the request.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import jwt
from jwt import PyJWKClient

from reference_impl.core.errors import UnauthorizedError
from reference_impl.security.policy import TENANT_ROLES, Role

__all__ = ["ALGORITHMS", "Issuer", "TokenClaims", "TokenVerifier", "looks_like_jwt"]

ALGORITHMS = ("RS256", "ES256", "EdDSA")


@dataclass(frozen=True, slots=True)
class Issuer:
    """One trusted OIDC issuer."""

    issuer: str
    jwks_url: str
    audience: str
    tenant_claim: str = "tenant"
    roles_claim: str = "roles"


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a verified token says about its bearer."""

    subject: str
    tenant: str
    roles: frozenset[Role]


def looks_like_jwt(value: str) -> bool:
    """Three base64url segments separated by dots."""
    return value.count(".") == 2 and not value.startswith("ak_")


class TokenVerifier:
    """Verifies bearer tokens from a set of issuers (JWKS fetched and cached per issuer)."""

    def __init__(self, issuers: list[Issuer], *, leeway_s: float = 60.0) -> None:
        self.issuers = {i.issuer: i for i in issuers}
        self.leeway_s = leeway_s
        self._jwks = {
            i.issuer: PyJWKClient(i.jwks_url, cache_jwk_set=True, lifespan=300, timeout=5)
            for i in issuers
        }

    async def verify(self, token: str) -> TokenClaims:
        """Claims of a valid token.

        Raises:
            UnauthorizedError: the token is malformed, from an unknown issuer, badly signed,
                expired, not yet valid, or meant for another audience.
        """
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise UnauthorizedError("the bearer token is malformed") from None
        if header.get("alg") not in ALGORITHMS:
            raise UnauthorizedError("the bearer token's algorithm is not accepted")
        issuer = self.issuers.get(str(unverified.get("iss")))
        if issuer is None:
            raise UnauthorizedError("the bearer token's issuer is not trusted")
        try:
            # PyJWKClient fetches over blocking HTTP: keep it off the event loop.
            signing_key = await asyncio.to_thread(
                self._jwks[issuer.issuer].get_signing_key_from_jwt, token
            )
            claims: dict[str, Any] = jwt.decode(
                token,
                signing_key,
                algorithms=[header["alg"]],
                audience=issuer.audience,
                issuer=issuer.issuer,
                leeway=self.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise UnauthorizedError("the bearer token has expired") from None
        except jwt.ImmatureSignatureError:
            raise UnauthorizedError("the bearer token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise UnauthorizedError("the bearer token is meant for another audience") from None
        except (jwt.PyJWTError, jwt.PyJWKClientError):
            raise UnauthorizedError("the bearer token does not verify") from None
        tenant = claims.get(issuer.tenant_claim)
        if not isinstance(tenant, str) or not tenant:
            raise UnauthorizedError(f"the bearer token has no {issuer.tenant_claim!r} claim")
        raw_roles = claims.get(issuer.roles_claim, [])
        roles = frozenset(
            Role(r) for r in raw_roles if isinstance(raw_roles, list) and r in TENANT_ROLES
        )
        return TokenClaims(subject=str(claims["sub"]), tenant=tenant, roles=roles)
