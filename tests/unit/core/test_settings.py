"""Profiles and the refusals of the strict ones."""

from __future__ import annotations

import base64

import pytest

from reference_impl.core.settings import Profile, Settings, SettingsError

KEY = base64.b64encode(b"x" * 32).decode()
STRICT = {
    "database_url": "postgresql://db/audit",
    "redis_url": "redis://cache:6379/0",
    "signing_keys": {"prod-2026": KEY},
    "active_signing_key": "prod-2026",
    "api_key_pepper": KEY,
    "checkpoint_keys": {"audit.example.org/ckpt-2026": KEY},
    "active_checkpoint_key": "audit.example.org/ckpt-2026",
    "kek_file": "/run/secrets/auditkit-kek.json",
}


@pytest.mark.parametrize("profile", ["staging", "prod", "dr"])
def test_strict_profile_accepts_complete_configuration(profile: str) -> None:
    Settings(profile=profile, **STRICT).check()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"database_url": None}, "refuses the embedded database"),
        ({"redis_url": None}, "refuses the embedded Valkey"),
        ({"debug": True}, "refuses AUDIT_DEBUG=true"),
        ({"signing_keys": {}, "active_signing_key": None}, "needs AUDIT_SIGNING_KEYS"),
        (
            {"signing_keys": {"dev-1": KEY}, "active_signing_key": "dev-1"},
            "refuses development signing key 'dev-1'",
        ),
        ({"api_key_pepper": None}, "needs AUDIT_API_KEY_PEPPER"),
        ({"kek_file": None}, "needs AUDIT_KEK_FILE for AUDIT_ENCRYPTED_FIELDS"),
        ({"signing_keys": {"prod-2026": "c2hvcnQ="}}, "shorter than 32 bytes"),
        ({"active_signing_key": "other"}, "must name one of AUDIT_SIGNING_KEYS"),
        (
            {"checkpoint_keys": {}, "active_checkpoint_key": None},
            "needs AUDIT_CHECKPOINT_KEYS and AUDIT_ACTIVE_CHECKPOINT_KEY",
        ),
        (
            {
                "checkpoint_keys": {"dev-checkpoint-1": KEY},
                "active_checkpoint_key": "dev-checkpoint-1",
            },
            "refuses development checkpoint key 'dev-checkpoint-1'",
        ),
        ({"active_checkpoint_key": "other"}, "must name one of AUDIT_CHECKPOINT_KEYS"),
        ({"checkpoint_keys": {"a b": KEY}, "active_checkpoint_key": "a b"}, "has a space or '+'"),
        (
            {"checkpoint_keys": {"ckpt": "c2hvcnQ="}, "active_checkpoint_key": "ckpt"},
            "not a 32-byte Ed25519 seed",
        ),
    ],
)
def test_prod_refuses_unsafe_settings_in_one_line(change: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings(profile="prod", **{**STRICT, **change}).check()
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_dev_profile_allows_embedded_and_debug() -> None:
    settings = Settings(profile="dev", debug=True)
    settings.check()
    assert settings.uses_embedded_servers
    assert settings.auto_migrate


def test_only_dev_and_test_migrate_on_serve() -> None:
    assert {p for p in Profile if Settings(profile=p, **STRICT).auto_migrate} == {
        Profile.dev,
        Profile.test,
    }


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIT_PROFILE", "staging")
    monkeypatch.setenv("AUDIT_SIGNING_KEYS", f'{{"s1": "{KEY}"}}')
    monkeypatch.setenv("AUDIT_DATABASE_URL", "")
    settings = Settings()
    assert settings.profile is Profile.staging
    assert settings.signing_secrets == {"s1": b"x" * 32}
    assert settings.database_url is None
