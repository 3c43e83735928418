"""Field-level encryption of PHI-bearing fields, with envelope keys.

The fields named in `AUDIT_ENCRYPTED_FIELDS` (JSON pointers into the event, such as
`/session/ip_address` or `/details/diagnosis`) are encrypted before the event is hashed,
so the stored canonical bytes, the hash chain and every proof cover the ciphertext, never
the plaintext. Each tenant has a data key (AES-256-GCM); data keys are stored only wrapped
(AES key wrap, RFC 3394) by a key-encryption key from a `KeyProvider`: a local key file
here, a cloud KMS in production through the same interface. Rotating the key-encryption
key re-wraps the data keys and touches no event. Destroying a tenant's data key makes its
ciphertext unreadable for good, while every hash and proof still verifies.

An encrypted value is the string `enc:v1:<data key id>:<base64url(nonce ‖ ciphertext)>`;
the associated data binds it to its tenant, event and field, so a ciphertext moved to
another place does not decrypt.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from sqlalchemy.ext.asyncio import AsyncEngine

from reference_impl.core.db import PLATFORM_SCOPE, scoped
from reference_impl.core.errors import EncryptionError
from reference_impl.events.validation import PreparedEvent
from reference_impl.security import repository

__all__ = [
    "PREFIX",
    "FieldEncryptor",
    "KeyProvider",
    "LocalKeyFileProvider",
    "create_key_file",
]

PREFIX = "enc:v1:"
NONCE_BYTES = 12


class KeyProvider(Protocol):
    """Wraps and unwraps data keys with key-encryption keys it never hands out."""

    @property
    def active_kek_id(self) -> str:
        """The key-encryption key new data keys are wrapped with."""
        ...

    def wrap(self, data_key: bytes) -> tuple[str, bytes]:
        """Wrap with the active key-encryption key; returns `(kek_id, wrapped)`."""
        ...

    def unwrap(self, kek_id: str, wrapped: bytes) -> bytes:
        """Unwrap a data key wrapped by key-encryption key ``kek_id``."""
        ...


# --8<-- [start:local-provider]
class LocalKeyFileProvider:
    """Key-encryption keys in a local JSON file: `{"active": id, "keys": {id: base64}}`.

    For development and small installations; production puts the same interface in front of
    a KMS or an HSM so that the key-encryption keys never leave it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._load()

    def _load(self) -> None:
        data = json.loads(self.path.read_text())
        keys = {kid: base64.b64decode(v) for kid, v in data["keys"].items()}
        active = str(data["active"])
        if active not in keys or any(len(k) != 32 for k in keys.values()):
            raise ValueError(f"{self.path}: the active key must exist and every key be 32 bytes")
        self._keys, self._active = keys, active

    @property
    def active_kek_id(self) -> str:
        """The key-encryption key new data keys are wrapped with."""
        return self._active

    def wrap(self, data_key: bytes) -> tuple[str, bytes]:
        """Wrap with the active key-encryption key (AES key wrap)."""
        return self._active, aes_key_wrap(self._keys[self._active], data_key)

    def unwrap(self, kek_id: str, wrapped: bytes) -> bytes:
        """Unwrap a data key; `EncryptionError` if the key is unknown or the wrap is bad."""
        kek = self._keys.get(kek_id)
        if kek is None:
            # Another process rotated the key file since this one read it.
            self._load()
            kek = self._keys.get(kek_id)
        if kek is None:
            raise EncryptionError(f"key-encryption key {kek_id!r} is not available")
        try:
            return aes_key_unwrap(kek, wrapped)
        except InvalidUnwrap:
            raise EncryptionError(f"a data key does not unwrap with {kek_id!r}") from None


# --8<-- [end:local-provider]


def create_key_file(path: Path, kek_id: str | None = None) -> str:
    """Write a key file with one fresh key-encryption key (or add one and make it active).

    Returns the id of the new active key.
    """
    kek_id = kek_id or f"kek-{uuid.uuid4().hex[:8]}"
    data: dict[str, Any] = {"active": kek_id, "keys": {}}
    if path.exists():
        data = json.loads(path.read_text())
        data["active"] = kek_id
    data["keys"][kek_id] = base64.b64encode(secrets.token_bytes(32)).decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    tmp.replace(path)
    return kek_id


@dataclass(frozen=True, slots=True)
class _DataKey:
    id: str
    # Built once per key, for every field it seals or opens: constructing AESGCM checks the
    # key each time. The cipher holds the key; nothing else needs its bytes.
    cipher: AESGCM = field(repr=False, compare=False)

    @classmethod
    def of(cls, key_id: str, key: bytes) -> _DataKey:
        return cls(key_id, AESGCM(key))


def _split(pointer: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]


def _copy_path(root: dict[str, Any], parts: Sequence[str]) -> dict[str, Any]:
    """Replace each object on ``parts`` below ``root`` by a copy; returns the last one."""
    node = root
    for part in parts:
        child = dict(node[part])
        node[part] = child
        node = child
    return node


def _aad(tenant: str, event_id: str, pointer: str) -> bytes:
    return f"{tenant}\x1f{event_id}\x1f{pointer}".encode()


class FieldEncryptor:
    """Encrypts configured fields of events for a tenant, and decrypts them for reads.

    Args:
        engine: Where the wrapped data keys live (`data_keys`).
        provider: Wraps and unwraps data keys.
        fields: JSON pointers of the fields to encrypt.
    """

    def __init__(self, engine: AsyncEngine, provider: KeyProvider, fields: Sequence[str]) -> None:
        self.engine = engine
        self.provider = provider
        self.fields = [(p, _split(p)) for p in fields]
        self._active: dict[str, _DataKey] = {}
        self._by_id: dict[str, _DataKey] = {}

    async def _data_key(self, tenant: str) -> _DataKey:
        cached = self._active.get(tenant)
        if cached is not None:
            return cached
        async with scoped(self.engine, tenant, write=True) as conn:
            row = await repository.active_data_key(conn, tenant)
            if row is None:
                key = AESGCM.generate_key(bit_length=256)
                kek_id, wrapped = self.provider.wrap(key)
                key_id = f"dk-{uuid.uuid4().hex[:12]}"
                await repository.insert_data_key(conn, key_id, tenant, kek_id, wrapped)
                row = await repository.active_data_key(conn, tenant)
            assert row is not None
        data_key = _DataKey.of(row.id, self.provider.unwrap(row.kek_id, bytes(row.wrapped)))
        self._active[tenant] = data_key
        self._by_id[data_key.id] = data_key
        return data_key

    # --8<-- [start:encrypt]
    async def encrypt(self, tenant: str, events: Sequence[PreparedEvent]) -> list[PreparedEvent]:
        """Events with their configured fields encrypted (the idempotency digest is kept)."""
        if not self.fields:
            return list(events)
        data_key = await self._data_key(tenant)
        # Random 96-bit nonces, drawn from the system's generator once per call rather than
        # once per field (a system call each).
        nonces = memoryview(os.urandom(NONCE_BYTES * len(events) * len(self.fields)))
        used = 0
        out = []
        for event in events:
            content = event.content
            for pointer, parts in self.fields:
                node: Any = content
                for part in parts[:-1]:
                    node = node.get(part) if isinstance(node, dict) else None
                if not isinstance(node, dict) or not isinstance(node.get(parts[-1]), str):
                    continue
                if content is event.content:
                    content = dict(content)
                # The event's own content stays as it was: only the objects on the way to
                # the field are copied (plain JSON needs no deeper copy).
                parent = _copy_path(content, parts[:-1])
                nonce = bytes(nonces[used : used + NONCE_BYTES])
                used += NONCE_BYTES
                sealed = data_key.cipher.encrypt(
                    nonce,
                    parent[parts[-1]].encode(),
                    # The event id as the content spells it, as `decrypt` reads it back.
                    _aad(tenant, content["event_id"], pointer),
                )
                blob = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
                parent[parts[-1]] = f"{PREFIX}{data_key.id}:{blob}"
            out.append(event if content is event.content else event.with_content(content))
        return out

    # --8<-- [end:encrypt]

    async def decrypt(self, tenant: str, event: dict[str, Any]) -> dict[str, Any]:
        """A stored event with every readable ciphertext replaced by its plaintext.

        A value whose data key is destroyed (crypto-shredded) stays ciphertext.
        """
        event_id = str(event.get("event_id", ""))
        await self._walk(tenant, event_id, event, "")
        return event

    async def _walk(self, tenant: str, event_id: str, node: Any, pointer: str) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in list(items):
            path = f"{pointer}/{str(key).replace('~', '~0').replace('/', '~1')}"
            if isinstance(value, str) and value.startswith(PREFIX):
                node[key] = await self._open(tenant, event_id, path, value)
            elif isinstance(value, dict | list):
                await self._walk(tenant, event_id, value, path)

    async def _open(self, tenant: str, event_id: str, pointer: str, value: str) -> str:
        try:
            key_id, blob = value[len(PREFIX) :].split(":", 1)
            data_key = self._by_id.get(key_id) or await self._load(tenant, key_id)
            if data_key is None:
                return value
            raw = base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4))
            plain = data_key.cipher.decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(tenant, event_id, pointer)
            )
            return plain.decode()
        except (ValueError, InvalidTag):
            return value  # not ours, or not for this place: shown as stored

    async def _load(self, tenant: str, key_id: str) -> _DataKey | None:
        async with scoped(self.engine, tenant) as conn:
            row = await repository.data_key(conn, key_id)
        if row is None or row.wrapped is None:
            return None
        data_key = _DataKey.of(key_id, self.provider.unwrap(row.kek_id, bytes(row.wrapped)))
        self._by_id[key_id] = data_key
        return data_key

    async def rewrap_all(self, progress: Any = None) -> int:
        """Re-wrap every data key under the active key-encryption key; returns how many."""
        async with scoped(self.engine, PLATFORM_SCOPE) as conn:
            rows = await repository.data_keys_to_rewrap(conn, self.provider.active_kek_id)
        for done, row in enumerate(rows, 1):
            key = self.provider.unwrap(row.kek_id, bytes(row.wrapped))
            kek_id, wrapped = self.provider.wrap(key)
            async with scoped(self.engine, row.tenant_id, write=True) as conn:
                await repository.rewrap_data_key(conn, row.id, kek_id, wrapped)
            if progress is not None:
                progress(done, len(rows))
        return len(rows)
