"""Response shapes of the verifiable log's API (hashes are standard base64)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

__all__ = [
    "CheckpointOut",
    "CheckpointPublished",
    "ConsistencyProofOut",
    "InclusionProofOut",
    "KeyOut",
    "KeysOut",
    "WitnessOut",
]


class CheckpointOut(BaseModel):
    """A signed checkpoint of the caller's log."""

    origin: str = Field(description="The log's identity: `<log_origin>/<tenant>`.")
    tree_size: int = Field(description="Number of events (leaves) the checkpoint commits to.")
    root_hash: str = Field(description="RFC 9162 root hash at `tree_size`, base64.")
    key_name: str = Field(description="The signed-note key name of the key that signed it.")
    created_at: datetime
    note: str = Field(
        description="The C2SP signed note: the tlog-checkpoint body, a blank line, and the "
        "Ed25519 signature line. Verify this, not the other fields."
    )


class WitnessOut(BaseModel):
    """What one witness answered."""

    witness: str
    outcome: str = Field(
        description="`accepted`, `up_to_date`, `unavailable`, `conflict`, or why it refused: "
        "`bad_note`, `rollback`, `fork`, `inconsistent`."
    )
    reason: str
    tree_size: int = Field(description="The size the witness holds now, as far as the log knows.")


class CheckpointPublished(BaseModel):
    """A checkpoint issued on demand, and its publication to the witnesses."""

    created: bool = Field(description="False when the tree had not grown since the last one.")
    checkpoint: CheckpointOut
    witnesses: list[WitnessOut]


class InclusionProofOut(BaseModel):
    """RFC 9162 §2.1.3 inclusion proof of one event."""

    event_id: str
    leaf_index: int = Field(description="The event's leaf index, which is its `seq`.")
    tree_size: int
    leaf_hash: str = Field(description="SHA-256(0x00 ‖ canonical bytes), base64.")
    root_hash: str = Field(description="The root at `tree_size`; trust it only if signed.")
    proof: list[str] = Field(description="Audit path, leaf side first, base64 hashes.")


class ConsistencyProofOut(BaseModel):
    """RFC 9162 §2.1.4 consistency proof between two tree sizes."""

    from_: int = Field(alias="from")
    to: int
    from_root: str
    to_root: str
    proof: list[str] = Field(description="Base64 hashes, in the RFC's order.")


class KeyOut(BaseModel):
    """A checkpoint public key."""

    key_name: str
    key_id: str = Field(description="The 4-byte signed-note key id, hex.")
    vkey: str = Field(description="Verifier key: `<name>+<hex key id>+<base64(0x01 ‖ key)>`.")
    active: bool = Field(description="Whether it signs new checkpoints.")
    first_used_at: datetime


class KeysOut(BaseModel):
    """Every key that ever signed a checkpoint of this service."""

    keys: list[KeyOut]
