"""The audit event as clients send it, and the receipts and pages the API returns.

The event is aligned with FHIR R4 `AuditEvent` (see `compliance` for the mapping). Parsing is
strict: no type coercion, no unknown fields, every string bounded. Identifiers are validated
as they are; free text is sanitized (see `reference_impl.events.sanitize`).
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
)

from reference_impl.events.sanitize import nfc, sanitize_text

__all__ = [
    "AuditEventIn",
    "BatchReceipts",
    "Category",
    "DataClassification",
    "EventPage",
    "FhirAction",
    "Outcome",
    "Principal",
    "PrincipalType",
    "PurposeOfUse",
    "QueuedBatch",
    "QueuedReceipt",
    "Receipt",
    "Session",
    "StoredEvent",
    "Target",
]

# No whitespace, controls, quotes or angle brackets: identifiers go into logs, URLs and HTML.
IDENT_PATTERN = r"^[^\s\p{Cc}<>\"'`]+$"
ACTION_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$"
RESOURCE_TYPE_PATTERN = r"^[A-Z][A-Za-z0-9]*$"


# A dotted quad without leading zeros is already in the form `ipaddress` would give it: most
# addresses are, and they skip the module's parsing (a few microseconds per event).
_CANONICAL_IPV4 = re.compile(
    r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
)


def _ip(value: str) -> str:
    if _CANONICAL_IPV4.fullmatch(value):
        return value
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError("must be an IPv4 or IPv6 address") from None


_NFC = AfterValidator(nfc)
_SANITIZE = AfterValidator(sanitize_text)
Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=256, pattern=IDENT_PATTERN), _NFC
]
ShortIdentifier = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=IDENT_PATTERN), _NFC
]
SessionId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=IDENT_PATTERN), _NFC
]
CorrelationId = SessionId
UserAgent = Annotated[str, StringConstraints(max_length=512), _SANITIZE]
OutcomeText = Annotated[str, StringConstraints(max_length=1024), _SANITIZE]
IpAddress = Annotated[str, StringConstraints(max_length=64), AfterValidator(_ip)]
Action = Annotated[
    str,
    StringConstraints(min_length=3, max_length=128, pattern=ACTION_PATTERN),
]
ResourceType = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=RESOURCE_TYPE_PATTERN)
]


class Category(StrEnum):
    """What kind of activity the event records."""

    data_access = "data_access"
    authentication = "authentication"
    authorization = "authorization"
    administration = "administration"
    system = "system"
    break_glass = "break_glass"
    compliance = "compliance"


class FhirAction(StrEnum):
    """FHIR `AuditEvent.action`: create, read, update, delete, execute."""

    C = "C"
    R = "R"
    U = "U"
    D = "D"
    E = "E"


class Outcome(StrEnum):
    """Result of the action; maps to FHIR outcome codes 0 / 4 / 8 / 12 (see compliance)."""

    success = "success"
    failure = "failure"
    attempt = "attempt"


class PrincipalType(StrEnum):
    """Who acted: a person, a service account or a device."""

    user = "user"
    service = "service"
    device = "device"


class DataClassification(StrEnum):
    """Sensitivity of the data the action touched."""

    PUBLIC = "PUBLIC"
    INTERNAL = "INTERNAL"
    CONFIDENTIAL = "CONFIDENTIAL"
    PHI = "PHI"


class PurposeOfUse(StrEnum):
    """HL7 v3 `PurposeOfUse` codes (`ETREAT` and `BTG` mark break-glass access)."""

    TREAT = "TREAT"
    ETREAT = "ETREAT"
    BTG = "BTG"
    ERTREAT = "ERTREAT"
    CLINTRL = "CLINTRL"
    COC = "COC"
    POPHLTH = "POPHLTH"
    HPAYMT = "HPAYMT"
    CLMATTCH = "CLMATTCH"
    COVAUTH = "COVAUTH"
    COVERAGE = "COVERAGE"
    ELIGDTRM = "ELIGDTRM"
    ELIGVER = "ELIGVER"
    ENROLLM = "ENROLLM"
    REMITADV = "REMITADV"
    HOPERAT = "HOPERAT"
    CAREMGT = "CAREMGT"
    DONAT = "DONAT"
    FRAUD = "FRAUD"
    GOV = "GOV"
    HACCRED = "HACCRED"
    HCOMPL = "HCOMPL"
    HDECD = "HDECD"
    HDIRECT = "HDIRECT"
    HLEGAL = "HLEGAL"
    HOUTCOMS = "HOUTCOMS"
    HPRGRP = "HPRGRP"
    HQUALIMP = "HQUALIMP"
    HSYSADMIN = "HSYSADMIN"
    MEMADMIN = "MEMADMIN"
    PATADMIN = "PATADMIN"
    PATSFTY = "PATSFTY"
    PERFMSR = "PERFMSR"
    RECORDMGT = "RECORDMGT"
    SYSDEV = "SYSDEV"
    HTEST = "HTEST"
    TRAIN = "TRAIN"
    HMARKT = "HMARKT"
    HRESCH = "HRESCH"
    CLINTRCH = "CLINTRCH"
    PATRQT = "PATRQT"
    FAMRQT = "FAMRQT"
    PWATRNY = "PWATRNY"
    SUPNWK = "SUPNWK"
    PUBHLTH = "PUBHLTH"
    DISASTER = "DISASTER"
    THREAT = "THREAT"


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Principal(_Strict):
    """Who performed the action."""

    id: Identifier
    type: PrincipalType
    roles: Annotated[list[ShortIdentifier], Field(max_length=32)] = []
    on_behalf_of: Identifier | None = None


class Target(_Strict):
    """What the action touched; `subject_id` is the patient or data subject."""

    resource_type: ResourceType
    resource_id: Identifier
    subject_id: Identifier | None = None


class Session(_Strict):
    """The session the action happened in."""

    session_id: SessionId | None = None
    ip_address: IpAddress | None = None
    user_agent: UserAgent | None = None


class AuditEventIn(_Strict):
    """An audit event as a client sends it. The tenant comes from the credentials."""

    event_id: UUID = Field(description="Client-chosen idempotency key.")
    occurred_at: AwareDatetime = Field(description="When it happened at the source (RFC 3339).")
    action: Action = Field(description="Dotted action name, e.g. `fhir.patient.read`.")
    category: Category
    fhir_action: FhirAction
    outcome: Outcome
    outcome_description: OutcomeText | None = None
    principal: Principal
    target: Target
    data_classification: DataClassification
    purpose_of_use: PurposeOfUse
    session: Session | None = None
    correlation_id: CorrelationId | None = None
    details: dict[str, Any] = Field(
        default_factory=dict,
        description="Free-form context: depth <= 8, sanitized, I-JSON numbers only.",
    )


class Receipt(BaseModel):
    """Proof that an event is committed: its place in the tenant's chain."""

    event_id: UUID
    seq: int = Field(description="Gapless per-tenant sequence number, from 0.")
    hash: str = Field(description="Chain hash, lowercase hex SHA-256.")
    recorded_at: datetime
    key_id: str = Field(description="Id of the key that signed the chain hash.")


class QueuedReceipt(BaseModel):
    """A queued event: durably in the ingest stream, to be committed by a worker."""

    event_id: UUID
    status: str = "queued"
    entry: str = Field(description="Id of the entry in the ingest stream.")


class QueuedBatch(BaseModel):
    """A queued batch."""

    queued: int
    entries: list[QueuedReceipt]


class BatchReceipts(BaseModel):
    """Receipts of a batch, one per event, in request order."""

    created: int
    duplicates: int
    receipts: list[Receipt]


class StoredEvent(BaseModel):
    """An event as stored: the sanitized content plus the server-assigned fields."""

    model_config = ConfigDict(extra="allow")

    event_id: UUID
    tenant: str
    seq: int
    recorded_at: datetime
    occurred_at: datetime
    action: str
    prev_hash: str
    hash: str
    key_id: str
    signature: str = Field(description="Base64 HMAC-SHA256 over the chain hash.")


class EventPage(BaseModel):
    """One page of a query; pass `next_cursor` back as `cursor` for the next page."""

    items: list[StoredEvent]
    next_cursor: str | None
