"""The local state directory of a development or test installation.

It holds the embedded servers' data, their ports (so a restart reuses them) and the
development secrets generated on first start: a signing key `dev-1`, an API key pepper, a
checkpoint key `dev-checkpoint-1` and a development API key. The strict profiles never read
this directory for secrets.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DevSecrets", "StateDir", "with_dev_secrets"]


@dataclass(frozen=True)
class DevSecrets:
    """Secrets generated once per state directory for the dev and test profiles."""

    signing_key_id: str
    signing_key_b64: str
    api_key_pepper_b64: str


class StateDir:
    """Files under the state directory (default `.auditkit/`)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    @property
    def pgdata(self) -> Path:
        """Embedded PostgreSQL cluster."""
        return self.root / "postgres"

    @property
    def valkey_dir(self) -> Path:
        """Embedded Valkey data (append-only file)."""
        return self.root / "valkey"

    def _read(self, name: str) -> dict[str, Any] | None:
        path = self.root / name
        if not path.exists():
            return None
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    def _write(self, name: str, data: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / name
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
        tmp.replace(path)

    def ports(self) -> dict[str, int]:
        """Ports chosen for the embedded servers on first start."""
        return {k: int(v) for k, v in (self._read("ports.json") or {}).items()}

    def save_ports(self, ports: dict[str, int]) -> None:
        """Remember the embedded servers' ports."""
        self._write("ports.json", dict(ports))

    def dev_secrets(self) -> DevSecrets:
        """The development secrets, generated on first use."""
        data = self._read("dev-secrets.json")
        if data is None:
            data = {
                "signing_key_id": "dev-1",
                "signing_key_b64": base64.b64encode(secrets.token_bytes(32)).decode(),
                "api_key_pepper_b64": base64.b64encode(secrets.token_bytes(32)).decode(),
            }
            self._write("dev-secrets.json", data)
        return DevSecrets(**data)

    def dev_checkpoint_key(self) -> tuple[str, str]:
        """The development checkpoint key (name, base64 Ed25519 seed), generated on first use.

        It lives in its own file so that state directories made before it existed keep
        their other secrets.
        """
        data = self._read("dev-checkpoint-key.json")
        if data is None:
            data = {
                "name": "dev-checkpoint-1",
                "seed_b64": base64.b64encode(secrets.token_bytes(32)).decode(),
            }
            self._write("dev-checkpoint-key.json", data)
        return str(data["name"]), str(data["seed_b64"])

    def dev_kek_file(self) -> Path:
        """A key file with one key-encryption key, made on first use (dev and test)."""
        path = self.root / "kek.json"
        if not path.exists():
            key = base64.b64encode(secrets.token_bytes(32)).decode()
            self._write("kek.json", {"active": "dev-kek-1", "keys": {"dev-kek-1": key}})
        return path

    def dev_api_key(self) -> str | None:
        """The development API key printed by `serve`, if one was created."""
        data = self._read("dev-api-key.json")
        return None if data is None else str(data["key"])

    def save_dev_api_key(self, key: str, tenant: str) -> None:
        """Keep the development API key so each start prints the same one."""
        self._write("dev-api-key.json", {"key": key, "tenant": tenant})


def with_dev_secrets(settings: Any) -> Any:
    """Fill unset signing keys and pepper from the state directory (dev and test only).

    Strict profiles are returned unchanged: they must be configured explicitly, and
    `Settings.check` refuses them otherwise.
    """
    if settings.profile.is_strict:
        return settings
    update: dict[str, Any] = {}
    dev = None
    if not settings.signing_keys:
        dev = StateDir(settings.state_dir).dev_secrets()
        update["signing_keys"] = {dev.signing_key_id: dev.signing_key_b64}
        update["active_signing_key"] = dev.signing_key_id
    if settings.api_key_pepper is None:
        dev = dev or StateDir(settings.state_dir).dev_secrets()
        update["api_key_pepper"] = dev.api_key_pepper_b64
    if settings.encrypted_fields and settings.kek_file is None:
        update["kek_file"] = StateDir(settings.state_dir).dev_kek_file()
    if not settings.checkpoint_keys:
        name, seed = StateDir(settings.state_dir).dev_checkpoint_key()
        update["checkpoint_keys"] = {name: seed}
        update["active_checkpoint_key"] = name
    if not update:
        return settings
    return type(settings)(**{**_raw_fields(settings), **update})


def _raw_fields(settings: Any) -> dict[str, Any]:
    out = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        elif isinstance(value, dict):
            value = {
                k: v.get_secret_value() if hasattr(v, "get_secret_value") else v
                for k, v in value.items()
            }
        out[name] = value
    return out
