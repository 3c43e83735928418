"""The one settings object of the service, read from `AUDIT_*` environment variables.

Profiles set the defaults a deployment stage needs and the checks it must pass:

| profile   | embedded servers | applies migrations on `serve` | development keys | debug |
|-----------|------------------|-------------------------------|------------------|-------|
| `dev`     | when no URL set  | yes                           | generated        | allowed |
| `test`    | when no URL set  | yes                           | generated        | allowed |
| `staging` | refused          | no (`auditkit migrate`)       | refused          | refused |
| `prod`    | refused          | no (`auditkit migrate`)       | refused          | refused |
| `dr`      | refused          | no (`auditkit migrate`)       | refused          | refused |

`dr` is the disaster-recovery site: the same guarantees as `prod`, pointed at the standby
database and queue.
"""

from __future__ import annotations

import base64
import binascii
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Profile", "Settings", "SettingsError", "get_settings"]

DEV_KEY_PREFIX = "dev-"


class SettingsError(ValueError):
    """The configuration cannot run in the chosen profile; the message is one line."""


class Profile(StrEnum):
    """Deployment stage; decides defaults and which unsafe settings are refused."""

    dev = "dev"
    test = "test"
    staging = "staging"
    prod = "prod"
    dr = "dr"

    @property
    def is_strict(self) -> bool:
        """Whether this profile refuses embedded servers, development keys and debug."""
        return self in {Profile.staging, Profile.prod, Profile.dr}


class JwtIssuer(BaseModel):
    """A trusted token issuer: its JWKS, the audience tokens must name, the claims to read."""

    issuer: str
    jwks_url: str
    audience: str
    tenant_claim: str = "tenant"
    roles_claim: str = "roles"


class Settings(BaseSettings):
    """Service configuration. Every field reads from `AUDIT_<FIELD>` (upper case)."""

    model_config = SettingsConfigDict(env_prefix="AUDIT_", extra="ignore", frozen=True)

    profile: Profile = Profile.dev
    debug: bool = False

    # -- backends -----------------------------------------------------------------------
    database_url: SecretStr | None = None
    """PostgreSQL URL. Unset in dev/test: an embedded PostgreSQL is started."""
    redis_url: SecretStr | None = None
    """Redis/Valkey URL. Unset in dev/test: an embedded Valkey is started."""
    database_role: str | None = "auditkit_app"
    """Role the service works as (`SET ROLE` at connect): row-level security applies to it.
    The login user must be a member; migrations run as the login user itself (the owner)."""
    db_pgbouncer: bool = False
    """The database URL points at PgBouncer in transaction pooling: no prepared statement
    cache, and the role and statement timeout set in every transaction. Run migrations
    against PostgreSQL itself, not through PgBouncer."""
    state_dir: Path = Path(".auditkit")
    """Where embedded servers keep their data and dev secrets live."""
    db_pool_size: int = Field(20, ge=1, le=500)
    db_max_overflow: int = Field(10, ge=0, le=500)
    db_statement_timeout_ms: int = Field(30_000, ge=100)
    health_timeout_s: float = Field(2.0, gt=0, le=30)

    # -- HTTP ---------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    public_url: str | None = None
    """Base URL clients use (for printed examples); defaults to http://host:port."""
    http_keep_alive_s: float = Field(75.0, gt=0, le=3600)
    """How long an idle keep-alive connection stays open. Longer than the idle timeout of
    the proxy or load balancer in front (60 s for an AWS ALB, nginx's upstream pools): the
    side that closes an idle connection first races the other's next request on it."""

    # -- integrity ----------------------------------------------------------------------
    signing_keys: dict[str, SecretStr] = Field(default_factory=dict)
    """HMAC keys as a JSON object `{"key-id": "<base64 secret, >= 32 bytes>"}`."""
    active_signing_key: str | None = None
    api_key_pepper: SecretStr | None = None
    """Server secret mixed into stored API key hashes (base64, >= 32 bytes)."""

    # -- security -------------------------------------------------------------------------
    jwt_issuers: list[JwtIssuer] = Field(default_factory=list)
    """Trusted OIDC issuers, as a JSON list of `{issuer, jwks_url, audience, ...}`."""
    jwt_leeway_s: float = Field(60.0, ge=0, le=300)
    """Clock skew tolerated on `exp` and `nbf`."""
    encrypted_fields: list[str] = Field(default_factory=lambda: ["/session/ip_address"])
    """JSON pointers of event fields stored encrypted (AES-256-GCM, envelope keys)."""
    kek_file: Path | None = None
    """Key-encryption keys for field encryption (generated under the state dir in dev)."""
    cors_origins: list[str] = Field(default_factory=list)
    """Browser origins allowed to call the API; empty (the default) turns CORS off."""
    hsts: bool = False
    """Send Strict-Transport-Security (set where TLS terminates in front of the service)."""
    record_access: bool = True
    """Record every read, export and verification of audit data as an audit event."""
    rate_limits_enabled: bool = True
    rate_limit_ingest_key: str = "5000/second"
    """Events one credential may send (a batch counts each event)."""
    rate_limit_ingest_tenant: str = "10000/second"
    rate_limit_query_key: str = "50/second"
    """Read requests (queries, exports, verifications, proofs) one credential may make."""
    rate_limit_query_tenant: str = "200/second"
    rate_limit_lease_share: float = Field(0.01, ge=0, le=0.5)
    """Share of a budget's smaller limit that a process may reserve for one credential at a
    time and spend without asking Redis (reserved units count as spent: never over a limit;
    units unspent when a window turns are lost to it). A budget too small for one unit, and
    every budget when 0, is counted in Redis request by request."""
    rate_limit_ingest_when_redis_down: Literal["open", "closed"] = "open"
    """Without Redis no budget can be counted: let ingest through (never drop an audit
    event for want of a counter) or refuse it with 503."""
    rate_limit_query_when_redis_down: Literal["open", "closed"] = "open"
    """Reads stay available too (the database is still guarded by its pool and breaker);
    `closed` refuses them with 503 rather than let an unmetered flood through."""

    # -- ingest -------------------------------------------------------------------------
    max_event_bytes: int = Field(64 * 1024, ge=1024)
    max_batch_events: int = Field(1000, ge=1, le=10_000)
    max_batch_bytes: int = Field(16 * 1024 * 1024, ge=64 * 1024)
    max_future_skew_s: int = Field(300, ge=0)
    """How far in the future `occurred_at` may be, against the server clock."""
    max_event_age_days: int = Field(30, ge=1)
    """How far in the past `occurred_at` may be (late delivery from offline sources)."""
    group_commit_max_events: int = Field(2000, ge=1)
    group_commit_committers: int = Field(1, ge=1, le=64)
    """Committer tasks per process; tenants are spread over them. One is fastest when
    several processes write the same tenants: each extra committer is another transaction
    waiting on the same chain-head locks (measured on two cores, 2 processes, 8 tenants,
    1,000 events/s: p50 7-11 ms with one, 22 ms with two, 36 ms with four)."""
    group_commit_linger_ms: float = Field(2.0, ge=0, le=100)
    """How long a committer waits after the first request of a transaction for more to
    join it (as a producer's `linger.ms`): fewer, larger commits for that much latency.
    Measured on two cores, 2 processes, 8 tenants, 1,000 events/s: 2 ms against none took
    PostgreSQL's CPU per request from 425-435 to 292-306 µs and the API's from 1,042-1,092
    to 924-932 µs, for 2-3 ms more at the median; the highest rate rose from 2,878-2,983 to
    3,277-3,309 events/s. The queue worker does not wait: it commits what it reads from
    the stream, batches already."""
    partitions_ahead_months: int = Field(3, ge=1, le=24)
    api_key_cache_seconds: float = Field(30.0, ge=0)

    # -- query --------------------------------------------------------------------------
    query_default_limit: int = Field(100, ge=1)
    query_max_limit: int = Field(1000, ge=1)

    # -- reliability ----------------------------------------------------------------------
    ingest_mode_default: Literal["sync", "async"] = "sync"
    """Mode of `POST /v1/events` when the request names none (`?mode=sync|async`)."""
    async_fallback: Literal["sync", "reject"] = "sync"
    """Queued-mode request while the queue is unavailable: commit it now, or answer 503."""
    queue_shards: int = Field(1, ge=1, le=1024)
    """Ingest streams; a tenant always maps to the same one (Redis Cluster hash slots)."""
    queue_max_length: int = Field(1_000_000, ge=1)
    """Entries a stream may hold before queued-mode requests are refused (backpressure)."""
    queue_claim_idle_s: float = Field(15.0, ge=0)
    """Pending entries idle this long are reclaimed from a crashed worker."""
    worker_batch_size: int = Field(500, ge=1, le=10_000)
    worker_block_ms: int = Field(1000, ge=1)
    worker_max_attempts: int = Field(5, ge=1)
    """Deliveries of one entry before it goes to the dead-letter queue."""
    embedded_worker: bool | None = None
    """Run a queue worker inside `serve` (default: in the dev profile only)."""
    breaker_threshold: int = Field(5, ge=1)
    """Consecutive failures that open a circuit breaker."""
    breaker_reset_s: float = Field(2.0, gt=0)
    """Seconds an open breaker waits before letting one trial call through."""
    retry_attempts: int = Field(3, ge=1, le=20)
    retry_timeout_s: float = Field(2.0, gt=0)
    """Total time a synchronous request may spend retrying a transient failure."""
    commit_timeout_s: float = Field(5.0, gt=0)
    """Longest wait for one database round trip (a frozen server must not hang requests)."""
    verify_interval_s: float = Field(3600.0, ge=0)
    """Seconds between scheduled verifications of every chain (0: never)."""
    alert_webhook_url: str | None = None
    """POSTed a JSON alert on critical events (tamper detected); unset: log and metric only."""

    # -- verifiable log -------------------------------------------------------------------
    checkpoint_keys: dict[str, SecretStr] = Field(default_factory=dict)
    """Ed25519 checkpoint keys as a JSON object `{"key-name": "<base64 32-byte seed>"}`; the
    name is the signed-note key name. Keep retired keys here: they verify what they signed."""
    active_checkpoint_key: str | None = None
    """The checkpoint key that signs new checkpoints."""
    log_origin: str = "auditkit.local/log"
    """Origin prefix of the per-tenant logs; a tenant's origin is `<log_origin>/<tenant>`."""
    checkpoint_interval_s: float = Field(300.0, ge=0)
    """Seconds between scheduled checkpoints of every grown tree (0: on demand only)."""
    witness_dir: Path | None = None
    """A directory witness: each new checkpoint and its consistency proof are written here."""
    witness_urls: list[str] = Field(default_factory=list)
    """Webhook witnesses (JSON list of URLs) that each new checkpoint is POSTed to."""
    witness_timeout_s: float = Field(5.0, gt=0, le=60)
    """Longest wait for one witness's answer."""
    # -- end of verifiable log ------------------------------------------------------------

    @field_validator("encrypted_fields")
    @classmethod
    def _pointers(cls, value: list[str]) -> list[str]:
        for pointer in value:
            if not pointer.startswith("/") or pointer in {"/event_id", "/occurred_at"}:
                raise ValueError(f"{pointer!r} is not an encryptable JSON pointer")
        return value

    @field_validator("database_url", "redis_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    # -- derived --------------------------------------------------------------------------
    @property
    def uses_embedded_servers(self) -> bool:
        """True when either backend URL is unset (embedded servers will be started)."""
        return self.database_url is None or self.redis_url is None

    @property
    def runs_embedded_worker(self) -> bool:
        """Whether `serve` also consumes the queue (dev profile unless set)."""
        if self.embedded_worker is not None:
            return self.embedded_worker
        return self.profile is Profile.dev

    @property
    def auto_migrate(self) -> bool:
        """`serve` applies migrations itself only in dev and test."""
        return self.profile in {Profile.dev, Profile.test}

    @property
    def base_url(self) -> str:
        """The URL printed in examples."""
        return self.public_url or f"http://{self.host}:{self.port}"

    @cached_property
    def signing_secrets(self) -> dict[str, bytes]:
        """Decoded HMAC secrets by key id."""
        return {
            kid: _decode_secret(kid, s.get_secret_value()) for kid, s in self.signing_keys.items()
        }

    @cached_property
    def checkpoint_seeds(self) -> dict[str, bytes]:
        """Decoded Ed25519 checkpoint key seeds by key name."""
        return {
            name: _decode_seed(name, s.get_secret_value())
            for name, s in self.checkpoint_keys.items()
        }

    def _check_checkpoint_keys(self, strict: str | None) -> None:
        if self.checkpoint_keys:
            _ = self.checkpoint_seeds
            if self.active_checkpoint_key not in self.checkpoint_keys:
                raise SettingsError(
                    "AUDIT_ACTIVE_CHECKPOINT_KEY must name one of AUDIT_CHECKPOINT_KEYS"
                )
        if strict is None:
            return
        if not self.checkpoint_keys:
            raise SettingsError(
                f"profile {strict} needs AUDIT_CHECKPOINT_KEYS and AUDIT_ACTIVE_CHECKPOINT_KEY"
            )
        dev = [k for k in self.checkpoint_keys if k.startswith(DEV_KEY_PREFIX)]
        if dev:
            raise SettingsError(f"profile {strict} refuses development checkpoint key {dev[0]!r}")

    def check(self) -> None:
        """Refuse configurations that are unsafe for the profile.

        Raises:
            SettingsError: one line naming the first problem found.
        """
        if self.signing_keys:
            _ = self.signing_secrets
            if self.active_signing_key not in self.signing_keys:
                raise SettingsError("AUDIT_ACTIVE_SIGNING_KEY must name one of AUDIT_SIGNING_KEYS")
        self._check_checkpoint_keys(None)
        if not self.profile.is_strict:
            return
        name = self.profile.value
        if self.database_url is None:
            raise SettingsError(
                f"profile {name} refuses the embedded database: set AUDIT_DATABASE_URL"
            )
        if self.redis_url is None:
            raise SettingsError(f"profile {name} refuses the embedded Valkey: set AUDIT_REDIS_URL")
        if self.debug:
            raise SettingsError(f"profile {name} refuses AUDIT_DEBUG=true")
        if not self.signing_keys:
            raise SettingsError(
                f"profile {name} needs AUDIT_SIGNING_KEYS and AUDIT_ACTIVE_SIGNING_KEY"
            )
        dev_ids = [kid for kid in self.signing_keys if kid.startswith(DEV_KEY_PREFIX)]
        if dev_ids:
            raise SettingsError(f"profile {name} refuses development signing key {dev_ids[0]!r}")
        if self.api_key_pepper is None:
            raise SettingsError(f"profile {name} needs AUDIT_API_KEY_PEPPER")
        if self.encrypted_fields and self.kek_file is None:
            raise SettingsError(f"profile {name} needs AUDIT_KEK_FILE for AUDIT_ENCRYPTED_FIELDS")
        _decode_secret("AUDIT_API_KEY_PEPPER", self.api_key_pepper.get_secret_value())
        self._check_checkpoint_keys(name)


def _decode_secret(name: str, value: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SettingsError(f"secret {name!r} is not valid base64") from exc
    if len(raw) < 32:
        raise SettingsError(f"secret {name!r} is shorter than 32 bytes")
    return raw


def _decode_seed(name: str, value: str) -> bytes:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise SettingsError(f"checkpoint key name {name!r} is empty or has a space or '+'")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SettingsError(f"checkpoint key {name!r} is not valid base64") from exc
    if len(raw) != 32:
        raise SettingsError(f"checkpoint key {name!r} is not a 32-byte Ed25519 seed")
    return raw


def get_settings(**overrides: Any) -> Settings:
    """Read settings from the environment, with explicit overrides (used by tests and the CLI)."""
    return Settings(**overrides)
