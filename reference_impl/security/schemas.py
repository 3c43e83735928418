"""Request and response bodies of the security domain."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from reference_impl.security.policy import Role

__all__ = ["KeyCreate", "KeyCreated", "KeyInfo", "TenantInfo"]


class KeyCreate(BaseModel):
    """A new API key for the caller's tenant (or, for a platform admin, a named tenant)."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    roles: list[Role] = Field(min_length=1, max_length=4)
    expires_days: int | None = Field(default=None, ge=1, le=3650)


class KeyCreated(BaseModel):
    """The new key; `key` is shown this once and never stored."""

    key: str
    prefix: str
    tenant: str
    name: str
    roles: list[str]
    expires_at: datetime | None


class KeyInfo(BaseModel):
    """A key as listed: its prefix and metadata, never its secret."""

    prefix: str
    name: str
    roles: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class TenantInfo(BaseModel):
    """A tenant as a platform admin sees it."""

    tenant: str
    events: int
    compromised: bool
