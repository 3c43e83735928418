"""JWT bearer tokens: accepted only when every check passes; every tampering is a 401."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from reference_impl.core.settings import Settings
from tests.support.apps import app_with
from tests.support.events import make_event

pytestmark = pytest.mark.integration

ISSUER = "https://idp.example.org/realms/clinic"
AUDIENCE = "auditkit"


class _Jwks:
    """A real JWKS endpoint serving the issuer's public keys."""

    def __init__(self) -> None:
        self.keys = {
            "rsa-1": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "ec-1": ec.generate_private_key(ec.SECP256R1()),
            "ed-1": ed25519.Ed25519PrivateKey.generate(),
        }
        body = {"keys": [self._jwk(kid, key) for kid, key in self.keys.items()]}
        payload = json.dumps(body).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def _jwk(kid: str, key: Any) -> dict[str, Any]:
        alg = {"rsa": "RS256", "ec-": "ES256", "ed-": "EdDSA"}[kid[:3]]
        algorithm = {
            "RS256": jwt.algorithms.RSAAlgorithm,
            "ES256": jwt.algorithms.ECAlgorithm,
            "EdDSA": jwt.algorithms.OKPAlgorithm,
        }[alg]
        jwk = json.loads(algorithm.to_jwk(key.public_key()))
        jwk.update({"kid": kid, "alg": alg, "use": "sig"})
        return jwk


@pytest.fixture(scope="module")
def jwks() -> Iterator[_Jwks]:
    server = _Jwks()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


def _token(jwks: _Jwks, kid: str = "rsa-1", key: Any = None, **claims: Any) -> str:
    alg = {"rsa": "RS256", "ec-": "ES256", "ed-": "EdDSA"}[kid[:3]]
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "dr.alice",
        "tenant": claims.pop("tenant", "jwt-clinic"),
        "roles": ["ingest", "reader"],
        "iat": now,
        "nbf": now,
        "exp": now + 300,
    }
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key or jwks.keys[kid], algorithm=alg, headers={"kid": kid})


def _issuers(jwks: _Jwks) -> list[dict[str, str]]:
    return [{"issuer": ISSUER, "jwks_url": jwks.url, "audience": AUDIENCE}]


async def test_valid_tokens_of_each_algorithm_are_accepted(settings: Settings, jwks: _Jwks) -> None:
    async with app_with(settings, jwt_issuers=_issuers(jwks)) as (_, client):
        for kid in ("rsa-1", "ec-1", "ed-1"):
            headers = {"Authorization": f"Bearer {_token(jwks, kid)}"}
            resp = await client.post("/v1/events", json=make_event(), headers=headers)
            assert resp.status_code == 201, (kid, resp.text)
        read = await client.get("/v1/events", headers={"Authorization": f"Bearer {_token(jwks)}"})
        assert len(read.json()["items"]) >= 3
        assert {e["tenant"] for e in read.json()["items"]} == {"jwt-clinic"}


def _unsigned(jwks: _Jwks) -> str:
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    good = jwt.decode(_token(jwks), options={"verify_signature": False})
    claims = base64.urlsafe_b64encode(json.dumps(good).encode()).rstrip(b"=").decode()
    return f"{header}.{claims}."


def _hs256_confusion(jwks: _Jwks) -> str:
    # Sign with HMAC, using the issuer's *public* key as the secret.
    public = jwks.keys["rsa-1"].public_key().public_numbers().n.to_bytes(256, "big")
    good = jwt.decode(_token(jwks), options={"verify_signature": False})
    return jwt.encode(good, public, algorithm="HS256", headers={"kid": "rsa-1"})


CASES = {
    "alg none": (_unsigned, "the bearer token's algorithm is not accepted"),
    "HS256 with the public key": (
        _hs256_confusion,
        "the bearer token's algorithm is not accepted",
    ),
    "wrong key": (
        lambda j: _token(j, key=rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "the bearer token does not verify",
    ),
    "expired": (
        lambda j: _token(j, exp=int(time.time()) - 600),
        "the bearer token has expired",
    ),
    "not yet valid": (
        lambda j: _token(j, nbf=int(time.time()) + 600),
        "the bearer token is not valid yet",
    ),
    "wrong audience": (
        lambda j: _token(j, aud="someone-else"),
        "the bearer token is meant for another audience",
    ),
    "wrong issuer": (
        lambda j: _token(j, iss="https://evil.example.org"),
        "the bearer token's issuer is not trusted",
    ),
    "no tenant": (lambda j: _token(j, tenant=None), "the bearer token has no 'tenant' claim"),
    "no exp": (lambda j: _token(j, exp=None), "the bearer token does not verify"),
    "tampered payload": (
        lambda j: _token(j).rsplit(".", 2)[0][:-4] + "AAAA." + _token(j).rsplit(".", 1)[1],
        None,
    ),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
async def test_tampered_tokens_are_401(settings: Settings, jwks: _Jwks, case: str) -> None:
    make, detail = CASES[case]
    async with app_with(settings, jwt_issuers=_issuers(jwks)) as (_, client):
        resp = await client.post(
            "/v1/events", json=make_event(), headers={"Authorization": f"Bearer {make(jwks)}"}
        )
    assert resp.status_code == 401, resp.text
    if detail is not None:
        assert resp.json()["detail"] == detail


async def test_clock_skew_is_tolerated_within_the_leeway(settings: Settings, jwks: _Jwks) -> None:
    async with app_with(settings, jwt_issuers=_issuers(jwks), jwt_leeway_s=60) as (_, client):
        late = _token(jwks, exp=int(time.time()) - 30)
        ok = await client.post(
            "/v1/events", json=make_event(), headers={"Authorization": f"Bearer {late}"}
        )
        assert ok.status_code == 201


async def test_token_roles_are_enforced_and_cannot_claim_platform_admin(
    settings: Settings, jwks: _Jwks
) -> None:
    async with app_with(settings, jwt_issuers=_issuers(jwks)) as (_, client):
        ingest_only = _token(jwks, roles=["ingest", "platform_admin"])
        headers = {"Authorization": f"Bearer {ingest_only}"}
        assert (await client.get("/v1/events", headers=headers)).status_code == 403
        assert (await client.get("/v1/admin/tenants", headers=headers)).status_code == 403


async def test_tokens_are_refused_when_no_issuer_is_configured(
    settings: Settings, jwks: _Jwks
) -> None:
    async with app_with(settings) as (_, client):
        resp = await client.post(
            "/v1/events", json=make_event(), headers={"Authorization": f"Bearer {_token(jwks)}"}
        )
    assert resp.status_code == 401
