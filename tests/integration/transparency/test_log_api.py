"""The verifiable log's API against real PostgreSQL: tree upkeep, checkpoints, proofs, keys."""

from __future__ import annotations

import asyncio
import base64
import re
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest

from reference_impl.api.app import create_app
from reference_impl.core.settings import Settings
from reference_impl.integrity.checkpoint import Checkpoint, NoteError, NoteVerifier, open_note
from reference_impl.integrity.merkle import (
    MemoryTree,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from reference_impl.transparency.service import LOWEST_STORED_LEVEL
from tests.conftest import TEST_CHECKPOINT_KEYS, Tenant, make_settings, new_tenant
from tests.support.events import make_event

pytestmark = pytest.mark.integration


def _b64(value: str) -> bytes:
    return base64.b64decode(value)


async def _ingest(client: httpx.AsyncClient, tenant: Tenant, n: int) -> list[str]:
    events = [make_event() for _ in range(n)]
    for start in range(0, n, 50):
        chunk = events[start : start + 50]
        resp = await client.post("/v1/events:batch", json={"events": chunk}, headers=tenant.headers)
        assert resp.status_code == 201, resp.text
    return [e["event_id"] for e in events]


async def _canonicals(db: asyncpg.Connection, tenant: str) -> list[bytes]:
    rows = await db.fetch(
        "SELECT canonical FROM audit_events WHERE tenant_id = $1 ORDER BY seq", tenant
    )
    return [bytes(r["canonical"]) for r in rows]


async def _keys(client: httpx.AsyncClient, tenant: Tenant) -> list[NoteVerifier]:
    resp = await client.get("/v1/log/keys", headers=tenant.headers)
    assert resp.status_code == 200
    return [NoteVerifier.from_vkey(k["vkey"]) for k in resp.json()["keys"]]


def _problem(resp: httpx.Response, status: int, slug: str) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body: dict[str, object] = resp.json()
    assert body["type"] == f"urn:auditkit:problem:{slug}"
    return body


def _parameters(body: dict[str, object]) -> set[str]:
    errors = body["errors"]
    assert isinstance(errors, list)
    return {e.get("parameter") for e in errors}


# -------------------------------------------------------------------------- the tree


async def test_tree_grows_in_the_ingest_transaction(
    client: httpx.AsyncClient, app: object, superuser: asyncpg.Connection
) -> None:
    tenants = [await new_tenant(app) for _ in range(3)]
    await asyncio.gather(*(_ingest(client, t, 37) for t in tenants))
    for t in tenants:
        size, frontier = await superuser.fetchrow(
            "SELECT tree_size, frontier FROM merkle_frontiers WHERE tenant_id = $1", t.name
        )
        next_seq = await superuser.fetchval(
            "SELECT next_seq FROM chain_heads WHERE tenant_id = $1", t.name
        )
        assert size == next_seq == 37
        # 37 = 32 + 4 + 1: three perfect subtrees on the right edge.
        assert len(frontier) == 3
        tree = MemoryTree([leaf_hash(c) for c in await _canonicals(superuser, t.name)])
        nodes = await superuser.fetch(
            "SELECT level, idx, hash FROM merkle_nodes WHERE tenant_id = $1", t.name
        )
        # Stored from LOWEST_STORED_LEVEL (4, 16 leaves) up: two of level 4, one of level 5.
        assert LOWEST_STORED_LEVEL == 4
        assert sorted((n["level"], n["idx"]) for n in nodes) == [(4, 0), (4, 1), (5, 0)]
        for n in nodes:
            assert tree.subtree(n["level"], n["idx"]) == bytes(n["hash"])


async def test_lag_metric_is_zero(client: httpx.AsyncClient, app: object, tenant: Tenant) -> None:
    await _ingest(client, tenant, 3)
    published = await app.state.transparency.checkpoint_due()  # type: ignore[attr-defined]
    assert tenant.name in {p.checkpoint.tenant for p in published}
    metrics = (await client.get("/metrics")).text
    assert "auditkit_merkle_lag_events 0.0" in metrics


# ----------------------------------------------------------------------- checkpoints


async def test_checkpoint_is_a_signed_c2sp_note_over_the_stored_events(
    client: httpx.AsyncClient, tenant: Tenant, superuser: asyncpg.Connection, settings: Settings
) -> None:
    missing = await client.get("/v1/log/checkpoint", headers=tenant.headers)
    _problem(missing, 404, "not-found")
    await _ingest(client, tenant, 11)
    resp = await client.post("/v1/log/checkpoint", headers=tenant.headers)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["created"] is True
    checkpoint = body["checkpoint"]
    assert checkpoint["origin"] == f"{settings.log_origin}/{tenant.name}"
    assert checkpoint["tree_size"] == 11
    assert checkpoint["key_name"] == "test-ckpt-2026"

    opened = open_note(checkpoint["note"], await _keys(client, tenant))
    cp = Checkpoint.parse(opened.text)
    assert (cp.origin, cp.size) == (checkpoint["origin"], 11)
    tree = MemoryTree([leaf_hash(c) for c in await _canonicals(superuser, tenant.name)])
    assert cp.root_hash == tree.root() == _b64(checkpoint["root_hash"])

    latest = await client.get("/v1/log/checkpoint", headers=tenant.headers)
    assert latest.json() == checkpoint
    text = await client.get(
        "/v1/log/checkpoint", headers={**tenant.headers, "Accept": "text/plain"}
    )
    assert text.headers["content-type"].startswith("text/plain")
    assert text.text == checkpoint["note"]

    again = await client.post("/v1/log/checkpoint", headers=tenant.headers)
    assert again.status_code == 200
    assert again.json()["created"] is False
    assert again.json()["checkpoint"] == checkpoint

    await _ingest(client, tenant, 2)
    newer = await client.post("/v1/log/checkpoint", headers=tenant.headers)
    assert newer.json()["checkpoint"]["tree_size"] == 13
    old = await client.get("/v1/log/checkpoint", params={"tree_size": 11}, headers=tenant.headers)
    assert old.json() == checkpoint
    _problem(
        await client.get("/v1/log/checkpoint", params={"tree_size": 12}, headers=tenant.headers),
        404,
        "not-found",
    )
    bad = _problem(
        await client.get("/v1/log/checkpoint", params={"tree_size": -1}, headers=tenant.headers),
        422,
        "validation-error",
    )
    assert _parameters(bad) == {"tree_size"}


async def test_empty_log_gets_a_checkpoint_of_the_empty_tree(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    resp = await client.post("/v1/log/checkpoint", headers=tenant.headers)
    assert resp.status_code == 201
    note = resp.json()["checkpoint"]["note"]
    cp = Checkpoint.parse(open_note(note, await _keys(client, tenant)).text)
    assert cp.size == 0
    assert cp.root_hash == MemoryTree().root()


async def test_routes_need_credentials_and_roles(client: httpx.AsyncClient, app: object) -> None:
    for method, path in [
        ("GET", "/v1/log/checkpoint"),
        ("POST", "/v1/log/checkpoint"),
        ("GET", "/v1/log/proof/inclusion"),
        ("GET", "/v1/log/proof/consistency"),
        ("GET", "/v1/log/keys"),
    ]:
        _problem(await client.request(method, path), 401, "unauthorized")
    reader = await new_tenant(app, roles=("reader",))
    assert (await client.get("/v1/log/keys", headers=reader.headers)).status_code == 200
    _problem(await client.post("/v1/log/checkpoint", headers=reader.headers), 403, "forbidden")


# ---------------------------------------------------------------------------- proofs


async def test_every_inclusion_proof_verifies_against_the_signed_root(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    ids = await _ingest(client, tenant, 21)
    signed = (await client.post("/v1/log/checkpoint", headers=tenant.headers)).json()
    root_hash = Checkpoint.parse(
        open_note(signed["checkpoint"]["note"], await _keys(client, tenant)).text
    ).root_hash
    for seq, event_id in enumerate(ids):
        resp = await client.get(
            "/v1/log/proof/inclusion", params={"event_id": event_id}, headers=tenant.headers
        )
        assert resp.status_code == 200, resp.text
        proof = resp.json()
        assert (proof["leaf_index"], proof["tree_size"]) == (seq, 21)
        path = [_b64(p) for p in proof["proof"]]
        assert verify_inclusion(_b64(proof["leaf_hash"]), seq, 21, path, root_hash)
        assert _b64(proof["root_hash"]) == root_hash
    # An explicit, smaller tree: the proof leads to that tree's root.
    resp = await client.get(
        "/v1/log/proof/inclusion",
        params={"event_id": ids[4], "tree_size": 5},
        headers=tenant.headers,
    )
    proof = resp.json()
    assert proof["tree_size"] == 5
    assert verify_inclusion(
        _b64(proof["leaf_hash"]), 4, 5, [_b64(p) for p in proof["proof"]], _b64(proof["root_hash"])
    )


async def test_inclusion_proof_errors(client: httpx.AsyncClient, app: object) -> None:
    tenant = await new_tenant(app)
    ids = await _ingest(client, tenant, 4)
    route = "/v1/log/proof/inclusion"
    _problem(
        await client.get(route, params={"event_id": ids[0]}, headers=tenant.headers),
        404,
        "not-found",
    )  # no checkpoint yet, and no tree_size given
    _problem(
        await client.get(
            route, params={"event_id": str(uuid.uuid4()), "tree_size": 4}, headers=tenant.headers
        ),
        404,
        "not-found",
    )
    other = await new_tenant(app)
    _problem(
        await client.get(route, params={"event_id": ids[0], "tree_size": 4}, headers=other.headers),
        404,
        "not-found",
    )
    for params in (
        {"event_id": ids[0], "tree_size": 5},
        {"event_id": ids[3], "tree_size": 3},
        {"event_id": ids[0], "tree_size": 0},
        {"event_id": ids[0], "tree_size": "x"},
    ):
        body = _problem(
            await client.get(route, params=params, headers=tenant.headers), 422, "validation-error"
        )
        assert _parameters(body) == {"tree_size"}, params
    for params in ({"event_id": "not-a-uuid", "tree_size": 1}, {"tree_size": 1}):
        body = _problem(
            await client.get(route, params=params, headers=tenant.headers), 422, "validation-error"
        )
        assert _parameters(body) == {"event_id"}


async def test_consistency_proofs_verify_between_any_two_sizes(
    client: httpx.AsyncClient, tenant: Tenant, superuser: asyncpg.Connection
) -> None:
    await _ingest(client, tenant, 13)
    tree = MemoryTree([leaf_hash(c) for c in await _canonicals(superuser, tenant.name)])
    # Edges and a spread of pairs (every pair of every size is the property tests' job; the
    # API spends one unit of the caller's query budget per request).
    pairs = [(0, 0), (0, 13), (1, 13), (2, 5), (3, 3), (4, 13), (5, 8), (7, 12), (8, 13), (13, 13)]
    for first, second in pairs:
        resp = await client.get(
            "/v1/log/proof/consistency",
            params={"from": first, "to": second},
            headers=tenant.headers,
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert _b64(body["from_root"]) == tree.root(first)
        assert _b64(body["to_root"]) == tree.root(second)
        proof = [_b64(p) for p in body["proof"]]
        assert proof == tree.consistency_proof(first, second)
        assert verify_consistency(first, second, tree.root(first), tree.root(second), proof)


async def test_proofs_through_stored_and_hashed_subtrees_match_the_reference_tree(
    client: httpx.AsyncClient, tenant: Tenant, superuser: asyncpg.Connection
) -> None:
    # 40 leaves: two stored blocks of 16 (levels 4 and 5) and a right edge of 8 below them.
    ids = await _ingest(client, tenant, 40)
    await client.post("/v1/log/checkpoint", headers=tenant.headers)
    tree = MemoryTree([leaf_hash(c) for c in await _canonicals(superuser, tenant.name)])
    for seq in (0, 15, 16, 31, 32, 39):
        resp = await client.get(
            "/v1/log/proof/inclusion", params={"event_id": ids[seq]}, headers=tenant.headers
        )
        assert resp.status_code == 200, resp.text
        assert [_b64(p) for p in resp.json()["proof"]] == tree.inclusion_proof(seq, 40)
    for first, second in ((15, 17), (16, 40), (17, 33), (31, 39)):
        resp = await client.get(
            "/v1/log/proof/consistency",
            params={"from": first, "to": second},
            headers=tenant.headers,
        )
        assert resp.status_code == 200, resp.text
        proof = [_b64(p) for p in resp.json()["proof"]]
        assert proof == tree.consistency_proof(first, second)


async def test_a_proof_over_a_removed_event_is_refused_as_tampering(
    client: httpx.AsyncClient, tenant: Tenant, superuser: asyncpg.Connection
) -> None:
    # Subtrees below the stored levels are hashed from the events: a proof that needs a
    # removed event names it instead of answering with a tree that is not the signed one.
    ids = await _ingest(client, tenant, 8)
    await client.post("/v1/log/checkpoint", headers=tenant.headers)
    await superuser.execute("SET session_replication_role = replica")
    await superuser.execute(
        "DELETE FROM audit_events WHERE tenant_id = $1 AND seq = 5", tenant.name
    )
    await superuser.execute("SET session_replication_role = DEFAULT")
    resp = await client.get(
        "/v1/log/proof/inclusion", params={"event_id": ids[4]}, headers=tenant.headers
    )
    body = _problem(resp, 423, "tamper-detected")
    assert "seq 5" in str(body["detail"])


async def test_consistency_proof_errors(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await _ingest(client, tenant, 3)
    route = "/v1/log/proof/consistency"
    for params, parameter in (
        ({"from": 1, "to": 4}, "to"),
        ({"from": 3, "to": 2}, "from"),
        ({"from": -1, "to": 2}, "from"),
        ({"from": 0, "to": "many"}, "to"),
        ({"to": 2}, "from"),
    ):
        body = _problem(
            await client.get(route, params=params, headers=tenant.headers), 422, "validation-error"
        )
        assert _parameters(body) == {parameter}, params


# ------------------------------------------------------------------------------ keys


@pytest.fixture
def rotated_settings(settings: Settings, tmp_path: Path) -> tuple[Settings, Settings]:
    """The suite's settings before and after a rotation of the checkpoint key."""
    old = base64.b64encode(b"o" * 32).decode()
    new = base64.b64encode(b"w" * 32).decode()
    keys = {**TEST_CHECKPOINT_KEYS, "rotation-old": old, "rotation-new": new}

    def variant(active: str) -> Settings:
        return make_settings(
            settings.database_url.get_secret_value(),  # type: ignore[union-attr]
            settings.redis_url.get_secret_value(),  # type: ignore[union-attr]
            tmp_path,
            checkpoint_keys=keys,
            active_checkpoint_key=active,
        )

    return variant("rotation-old"), variant("rotation-new")


async def test_checkpoints_signed_before_a_rotation_still_verify(
    rotated_settings: tuple[Settings, Settings],
) -> None:
    before, after = rotated_settings
    notes: list[str] = []
    tenant: Tenant | None = None
    for settings in (before, after):
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                tenant = tenant or await new_tenant(app)
                await _ingest(client, tenant, 2)
                resp = await client.post("/v1/log/checkpoint", headers=tenant.headers)
                notes.append(resp.json()["checkpoint"]["note"])
                keys = (await client.get("/v1/log/keys", headers=tenant.headers)).json()["keys"]
    by_name = {k["key_name"]: k for k in keys}
    assert by_name["rotation-new"]["active"] is True
    assert by_name["rotation-old"]["active"] is False
    old_key = NoteVerifier.from_vkey(by_name["rotation-old"]["vkey"])
    new_key = NoteVerifier.from_vkey(by_name["rotation-new"]["vkey"])
    assert by_name["rotation-old"]["key_id"] == old_key.key_id.hex()
    # Each checkpoint verifies with the key that signed it, fetched after the rotation.
    assert Checkpoint.parse(open_note(notes[0], [old_key]).text).size == 2
    assert Checkpoint.parse(open_note(notes[1], [new_key]).text).size == 4
    with pytest.raises(NoteError):
        open_note(notes[0], [new_key])


async def test_checkpoints_are_issued_on_a_schedule(settings: Settings, tmp_path: Path) -> None:
    scheduled = make_settings(
        settings.database_url.get_secret_value(),  # type: ignore[union-attr]
        settings.redis_url.get_secret_value(),  # type: ignore[union-attr]
        tmp_path,
        checkpoint_interval_s=0.2,
    )
    app = create_app(scheduled)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            tenant = await new_tenant(app)
            await _ingest(client, tenant, 4)
            sizes: list[int] = []
            for _ in range(100):
                resp = await client.get("/v1/log/checkpoint", headers=tenant.headers)
                if resp.status_code == 200:
                    sizes.append(resp.json()["tree_size"])
                    if sizes[-1] == 4:
                        break
                await asyncio.sleep(0.1)
            assert sizes and sizes[-1] == 4, sizes
            await _ingest(client, tenant, 1)
            for _ in range(100):
                resp = await client.get("/v1/log/checkpoint", headers=tenant.headers)
                if resp.json()["tree_size"] == 5:
                    break
                await asyncio.sleep(0.1)
            assert resp.json()["tree_size"] == 5


async def _forget_tree(db: asyncpg.Connection, tenant: str) -> None:
    """Make a tenant look like one whose events were stored before the tree existed."""
    await db.execute("SET session_replication_role = replica")
    await db.execute("DELETE FROM merkle_nodes WHERE tenant_id = $1", tenant)
    await db.execute("DELETE FROM merkle_frontiers WHERE tenant_id = $1", tenant)
    await db.execute("SET session_replication_role = DEFAULT")


async def _stored_tree_is_the_tree_of_the_events(db: asyncpg.Connection, tenant: str) -> int:
    tree = MemoryTree([leaf_hash(c) for c in await _canonicals(db, tenant)])
    nodes = await db.fetch("SELECT level, idx, hash FROM merkle_nodes WHERE tenant_id = $1", tenant)
    assert {(n["level"], n["idx"]): bytes(n["hash"]) for n in nodes} == {
        (n["level"], n["idx"]): tree.subtree(n["level"], n["idx"]) for n in nodes
    }
    size = await db.fetchval("SELECT tree_size FROM merkle_frontiers WHERE tenant_id = $1", tenant)
    assert size == tree.size
    return int(size)


async def test_events_stored_before_the_tree_are_added_by_the_next_ingest(
    client: httpx.AsyncClient, tenant: Tenant, superuser: asyncpg.Connection
) -> None:
    await _ingest(client, tenant, 9)
    await _forget_tree(superuser, tenant.name)
    await _ingest(client, tenant, 2)
    assert await _stored_tree_is_the_tree_of_the_events(superuser, tenant.name) == 11


async def test_events_stored_before_the_tree_are_added_by_the_next_checkpoint(
    client: httpx.AsyncClient, app: object, tenant: Tenant, superuser: asyncpg.Connection
) -> None:
    await _ingest(client, tenant, 6)
    await _forget_tree(superuser, tenant.name)
    published = await app.state.transparency.checkpoint_due()  # type: ignore[attr-defined]
    assert tenant.name in {p.checkpoint.tenant for p in published}
    metrics = (await client.get("/metrics")).text
    lag = float(re.search(r"^auditkit_merkle_lag_events (\S+)$", metrics, re.M).group(1))  # type: ignore[union-attr]
    assert lag >= 6  # measured before the catch-up
    assert await _stored_tree_is_the_tree_of_the_events(superuser, tenant.name) == 6
    latest = (await client.get("/v1/log/checkpoint", headers=tenant.headers)).json()
    assert latest["tree_size"] == 6


async def test_concurrent_requests_sign_one_checkpoint(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await _ingest(client, tenant, 7)
    answers = await asyncio.gather(
        *(client.post("/v1/log/checkpoint", headers=tenant.headers) for _ in range(6))
    )
    assert sorted(r.status_code for r in answers) == [200] * 5 + [201]
    assert len({r.json()["checkpoint"]["note"] for r in answers}) == 1
