"""The error taxonomy: every error a client can see, as data and as exception classes.

Each entry of `TAXONOMY` is one problem type: its stable type URI
(`urn:auditkit:problem:<slug>`), the design's category (validation, system, security,
compliance) and kind, the HTTP status, a severity, the recovery strategy the service and its
clients follow, and how loudly it is monitored. Each `AuditError` subclass is bound to one
entry; the API turns an instance into an RFC 9457 `application/problem+json` body and the CLI
prints its `title` and `detail` on one line. The Error Handling guide's classification table
is checked against `TAXONOMY` by the docs tests, so the two cannot drift.

A problem never carries PHI, a stack trace or a secret: `detail` is written by the code that
raises it, from facts the caller already knows (field names, limits, ids it sent).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

__all__ = [
    "PROBLEM_TYPE_PREFIX",
    "TAXONOMY",
    "AuditError",
    "Category",
    "ConflictError",
    "DatabaseUnavailableError",
    "EncryptionError",
    "ErrorSpec",
    "ForbiddenError",
    "GdprViolationError",
    "HipaaViolationError",
    "IntegrityCompromisedError",
    "MethodNotAllowedError",
    "Monitoring",
    "NetworkError",
    "NotFoundError",
    "PayloadTooLargeError",
    "ProblemField",
    "QueueUnavailableError",
    "RateLimitedError",
    "Recovery",
    "RedisUnavailableError",
    "RetentionPolicyError",
    "SanitizationError",
    "ServiceUnavailableError",
    "Severity",
    "ShuttingDownError",
    "SignatureFailureError",
    "UnauthorizedError",
    "UnsupportedMediaTypeError",
    "ValidationFailedError",
    "problem_types",
    "spec_for",
]

PROBLEM_TYPE_PREFIX = "urn:auditkit:problem:"


class Category(StrEnum):
    """The design's four error categories."""

    validation = "validation"
    system = "system"
    security = "security"
    compliance = "compliance"


class Severity(StrEnum):
    """How bad it is for the audit trail, from a rejected request to a broken log."""

    medium = "medium"
    high = "high"
    critical = "critical"
    emergency = "emergency"


class Recovery(StrEnum):
    """What happens next, on both sides of the API."""

    sanitize_and_retry = "sanitize and retry"
    breaker_and_retry = "circuit breaker + retry"
    degrade = "graceful degradation"
    alert_and_stop = "immediate alert + stop"
    reject_and_alert = "reject + alert"


class Monitoring(StrEnum):
    """How an operator hears of it: counted, a warning alert, or a page."""

    metric = "metric"
    alert = "alert"
    page = "page"


# --8<-- [start:error-spec]
@dataclass(frozen=True, slots=True)
class ErrorSpec:
    """One problem type of the taxonomy."""

    slug: str
    category: Category
    kind: str
    status: int
    title: str
    severity: Severity
    recovery: Recovery
    monitoring: Monitoring

    @property
    def type_uri(self) -> str:
        """The stable problem type URI."""
        return PROBLEM_TYPE_PREFIX + self.slug


# --8<-- [end:error-spec]


def _spec(
    slug: str,
    category: Category,
    kind: str,
    status: int,
    title: str,
    severity: Severity,
    recovery: Recovery,
    monitoring: Monitoring,
) -> ErrorSpec:
    return ErrorSpec(slug, category, kind, status, title, severity, recovery, monitoring)


_V, _SY, _SE, _C = Category.validation, Category.system, Category.security, Category.compliance
_MED, _HIGH, _CRIT, _EMERG = Severity.medium, Severity.high, Severity.critical, Severity.emergency

# --8<-- [start:taxonomy]
TAXONOMY: tuple[ErrorSpec, ...] = (
    # Validation: the client sent something the service will not store as it is.
    _spec("validation-error", _V, "field", 422, "Request validation failed",
          _MED, Recovery.sanitize_and_retry, Monitoring.metric),
    _spec("sanitization-error", _V, "sanitization", 422, "Details rejected by sanitization",
          _MED, Recovery.sanitize_and_retry, Monitoring.metric),
    _spec("payload-too-large", _V, "schema", 413, "Payload too large",
          _MED, Recovery.sanitize_and_retry, Monitoring.metric),
    _spec("unsupported-media-type", _V, "schema", 415, "Unsupported media type",
          _MED, Recovery.sanitize_and_retry, Monitoring.metric),
    _spec("conflict", _V, "idempotency", 409, "Conflict",
          _HIGH, Recovery.reject_and_alert, Monitoring.alert),
    _spec("not-found", _V, "reference", 404, "Not found",
          _MED, Recovery.sanitize_and_retry, Monitoring.metric),
    _spec("method-not-allowed", _V, "schema", 405, "Method not allowed",
          _MED, Recovery.sanitize_and_retry, Monitoring.metric),
    # System: a dependency failed; nothing acknowledged is lost, the client retries.
    _spec("database-unavailable", _SY, "database", 503, "Event store unavailable",
          _CRIT, Recovery.breaker_and_retry, Monitoring.page),
    _spec("redis-unavailable", _SY, "redis", 503, "Queue server unavailable",
          _HIGH, Recovery.degrade, Monitoring.alert),
    _spec("queue-unavailable", _SY, "queue", 503, "Ingest queue unavailable",
          _HIGH, Recovery.degrade, Monitoring.alert),
    _spec("network-error", _SY, "network", 502, "Upstream call failed",
          _HIGH, Recovery.breaker_and_retry, Monitoring.alert),
    _spec("service-unavailable", _SY, "dependency", 503, "Service unavailable",
          _HIGH, Recovery.breaker_and_retry, Monitoring.alert),
    _spec("shutting-down", _SY, "lifecycle", 503, "Shutting down",
          _MED, Recovery.breaker_and_retry, Monitoring.metric),
    _spec("internal-error", _SY, "internal", 500, "Internal error",
          _HIGH, Recovery.reject_and_alert, Monitoring.alert),
    # Security: someone may be attacking the service or the log.
    _spec("unauthorized", _SE, "authentication", 401, "Authentication required",
          _MED, Recovery.reject_and_alert, Monitoring.metric),
    _spec("forbidden", _SE, "authorization", 403, "Forbidden",
          _HIGH, Recovery.reject_and_alert, Monitoring.alert),
    _spec("rate-limited", _SE, "rate limit", 429, "Too many requests",
          _MED, Recovery.breaker_and_retry, Monitoring.metric),
    _spec("tamper-detected", _SE, "tamper detected", 423, "Audit log integrity compromised",
          _EMERG, Recovery.alert_and_stop, Monitoring.page),
    _spec("signature-failure", _SE, "signature failure", 500, "Signature verification failed",
          _EMERG, Recovery.alert_and_stop, Monitoring.page),
    _spec("encryption-error", _SE, "encryption error", 500, "Encryption failed",
          _CRIT, Recovery.alert_and_stop, Monitoring.page),
    # Compliance: the request would break a regulatory rule the service enforces.
    _spec("hipaa-violation", _C, "HIPAA violation", 403, "HIPAA policy violation",
          _CRIT, Recovery.reject_and_alert, Monitoring.page),
    _spec("gdpr-violation", _C, "GDPR violation", 403, "GDPR policy violation",
          _CRIT, Recovery.reject_and_alert, Monitoring.page),
    _spec("retention-policy-error", _C, "retention policy error", 409, "Retention policy error",
          _CRIT, Recovery.reject_and_alert, Monitoring.page),
)  # fmt: skip
# --8<-- [end:taxonomy]

_BY_SLUG = {spec.slug: spec for spec in TAXONOMY}


def spec_for(slug: str) -> ErrorSpec:
    """The taxonomy entry with this slug."""
    return _BY_SLUG[slug]


@dataclass(frozen=True, slots=True)
class ProblemField:
    """One invalid part of a request: a JSON pointer into the body, or a parameter name."""

    detail: str
    pointer: str | None = None
    parameter: str | None = None

    def as_dict(self) -> dict[str, str]:
        """The RFC 9457 `errors` member entry."""
        out = {"detail": self.detail}
        if self.pointer is not None:
            out["pointer"] = self.pointer
        if self.parameter is not None:
            out["parameter"] = self.parameter
        return out


# --8<-- [start:audit-error]
class AuditError(Exception):
    """Base of every client-visible error, bound to one taxonomy entry by `slug`.

    Instances carry a `detail` sentence, optional response headers and optional extension
    members of the problem body.
    """

    slug: ClassVar[str] = "internal-error"

    def __init__(
        self,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions

    @classmethod
    def spec(cls) -> ErrorSpec:
        """This class's taxonomy entry."""
        return _BY_SLUG[cls.slug]

    @classmethod
    def type_uri(cls) -> str:
        """The stable problem type URI, `urn:auditkit:problem:<slug>`."""
        return PROBLEM_TYPE_PREFIX + cls.slug

    @property
    def status(self) -> int:
        """The HTTP status of this problem type."""
        return self.spec().status

    @property
    def title(self) -> str:
        """The short, fixed summary of this problem type."""
        return self.spec().title

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        """The problem body (without the correlation id, which the API adds)."""
        spec = self.spec()
        body: dict[str, Any] = {
            "type": spec.type_uri,
            "title": spec.title,
            "status": spec.status,
            "detail": self.detail,
            "category": spec.category.value,
        }
        if instance is not None:
            body["instance"] = instance
        body.update(self.extensions)
        return body


# --8<-- [end:audit-error]


class ValidationFailedError(AuditError):
    """The request body or parameters are invalid; `errors` names every bad part."""

    slug = "validation-error"

    def __init__(self, errors: list[ProblemField], detail: str | None = None) -> None:
        count = len(errors)
        super().__init__(
            detail or f"{count} invalid field{'s' if count != 1 else ''}; nothing was stored",
            errors=[e.as_dict() for e in errors],
        )
        self.errors = errors


class SanitizationError(ValidationFailedError):
    """`details` breaks a bound of the sanitizer (depth, size, number range, key clash)."""

    slug = "sanitization-error"


class PayloadTooLargeError(AuditError):
    """The body exceeds a configured size bound."""

    slug = "payload-too-large"


class UnsupportedMediaTypeError(AuditError):
    """The body is not `application/json`."""

    slug = "unsupported-media-type"


class ConflictError(AuditError):
    """The request conflicts with stored state (an `event_id` reused with other content)."""

    slug = "conflict"


class NotFoundError(AuditError):
    """The resource does not exist for this tenant (or at all)."""

    slug = "not-found"


class MethodNotAllowedError(AuditError):
    """The route exists, but not with this method."""

    slug = "method-not-allowed"


class ServiceUnavailableError(AuditError):
    """A dependency is down; the client should retry after `retry_after` seconds."""

    slug = "service-unavailable"

    def __init__(self, detail: str, *, retry_after: int = 5, **extensions: Any) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)}, **extensions)
        self.retry_after = retry_after


class DatabaseUnavailableError(ServiceUnavailableError):
    """PostgreSQL did not answer or could not commit; retry with the same `event_id`."""

    slug = "database-unavailable"


class RedisUnavailableError(ServiceUnavailableError):
    """Redis/Valkey did not answer."""

    slug = "redis-unavailable"


class QueueUnavailableError(ServiceUnavailableError):
    """The ingest queue refused the event (full, or its server is down)."""

    slug = "queue-unavailable"


class ShuttingDownError(ServiceUnavailableError):
    """This process is draining before exit; another replica will answer."""

    slug = "shutting-down"


class NetworkError(AuditError):
    """A call to another service (a webhook, a witness) failed."""

    slug = "network-error"


class UnauthorizedError(AuditError):
    """No credentials, or credentials that do not authenticate."""

    slug = "unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="auditkit"'})


class ForbiddenError(AuditError):
    """Authenticated, but not allowed to do this."""

    slug = "forbidden"


class RateLimitedError(AuditError):
    """The caller spent its budget; retry after `Retry-After` seconds."""

    slug = "rate-limited"

    def __init__(self, detail: str, *, retry_after: int, headers: dict[str, str]) -> None:
        super().__init__(detail, headers={**headers, "Retry-After": str(retry_after)})


class IntegrityCompromisedError(AuditError):
    """The tenant's log failed verification; the operation would build on a broken log."""

    slug = "tamper-detected"


class SignatureFailureError(AuditError):
    """A signature that must verify did not."""

    slug = "signature-failure"


class EncryptionError(AuditError):
    """Encrypting or decrypting protected fields failed."""

    slug = "encryption-error"


class HipaaViolationError(AuditError):
    """The request would break a HIPAA rule the service enforces."""

    slug = "hipaa-violation"


class GdprViolationError(AuditError):
    """The request would break a GDPR rule the service enforces."""

    slug = "gdpr-violation"


class RetentionPolicyError(AuditError):
    """A retention or deletion request conflicts with the retention policy."""

    slug = "retention-policy-error"


def problem_types() -> list[type[AuditError]]:
    """Every problem class, base first, in definition order of the hierarchy."""
    seen: list[type[AuditError]] = [AuditError]
    stack = list(AuditError.__subclasses__())
    while stack:
        cls = stack.pop(0)
        if cls not in seen:
            seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen
