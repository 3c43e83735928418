"""Encrypting an event copies only the objects on the way to each encrypted field; the
caller's event is left exactly as it was, and what was not encrypted is shared, not copied."""

from __future__ import annotations

import copy
from typing import Any
from uuid import uuid4

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from reference_impl.events.validation import PreparedEvent
from reference_impl.security import encryption
from reference_impl.security.encryption import PREFIX, FieldEncryptor


class _NoProvider:
    active_kek_id = "unused"

    def wrap(self, data_key: bytes) -> tuple[str, bytes]:
        raise AssertionError("no key is wrapped here")

    def unwrap(self, kek_id: str, wrapped: bytes) -> bytes:
        raise AssertionError("no key is unwrapped here")


def _event(content: dict[str, Any]) -> PreparedEvent:
    event_id = uuid4()
    content["event_id"] = str(event_id)  # the ciphertext is bound to it
    return PreparedEvent(event_id=event_id, content=content, digest=b"d" * 32)


@pytest.fixture
def encryptor(monkeypatch: pytest.MonkeyPatch) -> FieldEncryptor:
    fields = ["/session/ip_address", "/details/diagnosis/code"]
    enc = FieldEncryptor(engine=None, provider=_NoProvider(), fields=fields)  # type: ignore[arg-type]
    key = encryption._DataKey.of("dk-test", AESGCM.generate_key(bit_length=256))

    async def data_key(tenant: str) -> encryption._DataKey:
        return key

    monkeypatch.setattr(enc, "_data_key", data_key)
    enc._by_id[key.id] = key  # what _data_key would have remembered for reads
    return enc


async def test_the_callers_event_is_untouched(encryptor: FieldEncryptor) -> None:
    content = {
        "session": {"ip_address": "192.0.2.1", "session_id": "s-1"},
        "details": {"diagnosis": {"code": "J45", "note": "n"}, "ward": "w6"},
        "principal": {"id": "u-1", "roles": ["nurse"]},
    }
    event = _event(content)
    before = copy.deepcopy(content)
    [sealed] = await encryptor.encrypt("t", [event])
    assert content == before
    assert sealed.content["session"]["ip_address"].startswith(PREFIX)
    assert sealed.content["details"]["diagnosis"]["code"].startswith(PREFIX)
    assert sealed.content["details"]["diagnosis"]["note"] == "n"
    assert sealed.content["details"]["ward"] == "w6"
    # Objects not on the way to an encrypted field are shared with the caller's event.
    assert sealed.content["principal"] is content["principal"]
    assert await encryptor.decrypt("t", sealed.content) == before


async def test_an_event_without_the_fields_is_returned_as_it_is(
    encryptor: FieldEncryptor,
) -> None:
    event = _event({"session": {"session_id": "s-1"}, "details": {"diagnosis": "text"}})
    [same] = await encryptor.encrypt("t", [event])
    assert same is event


async def test_every_field_of_a_call_gets_its_own_nonce(encryptor: FieldEncryptor) -> None:
    events = [
        _event({"session": {"ip_address": "192.0.2.1"}, "details": {"diagnosis": {"code": c}}})
        for c in ("J45", "J46", "J47")
    ]
    sealed = await encryptor.encrypt("t", events)
    blobs = [
        e.content[field][name][key] if name == "diagnosis" else e.content[field][name]
        for e in sealed
        for field, name, key in (("session", "ip_address", ""), ("details", "diagnosis", "code"))
    ]
    nonces = {encryption.base64.urlsafe_b64decode(b.rsplit(":", 1)[1] + "==")[:12] for b in blobs}
    assert len(nonces) == 6
    for event, original in zip(sealed, events, strict=True):
        assert await encryptor.decrypt("t", event.content) == original.content
