"""The event envelope, schema `streamsync.event/v1`, and the canonical object key.

This is the contract producers depend on (DESIGN.md). Decoding checks the envelope's own
shape; whether `model`, `key` and `attrs` fit a registered DiffSync model is the registry's job.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

SCHEMA_V1: Literal["streamsync.event/v1"] = "streamsync.event/v1"

# Identifier values are JSON scalars taken as they are (no 1.0 for 1, no "1" for 1): they become
# the canonical key, and two spellings of one object would land on two partitions.
KeyValue = StrictStr | StrictInt | StrictBool | None


class Op(StrEnum):
    """What happened to the object at the source."""

    UPSERT = "upsert"
    DELETE = "delete"


class RejectCode(StrEnum):
    """Why an event was rejected, machine-readable (dead-letter headers, metrics); `reason` says it in words."""

    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    UNSUPPORTED_SCHEMA = "unsupported_schema"
    BAD_OP = "bad_op"
    INVALID_ENVELOPE = "invalid_envelope"
    WRONG_SOURCE = "wrong_source"
    UNKNOWN_MODEL = "unknown_model"
    BAD_KEY = "bad_key"
    UNDECLARED_ATTRIBUTE = "undeclared_attribute"
    WRONG_TYPE = "wrong_type"


class EnvelopeError(ValueError):
    """An event that cannot be applied as it is: retrying cannot help, a person has to look."""

    def __init__(self, code: RejectCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Event(BaseModel):
    """One change of one object at a source."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_version: Literal["streamsync.event/v1"] = Field(default=SCHEMA_V1, alias="schema")
    id: str = Field(default_factory=lambda: str(uuid.uuid4()), min_length=1, max_length=200)
    source: str = Field(min_length=1, max_length=100)
    model: str = Field(min_length=1, max_length=100)
    op: Op
    key: dict[str, KeyValue]
    attrs: dict[str, Any] = Field(default_factory=dict)
    ts: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def canonical_key(self) -> str:
        """The Kafka message key for this event."""
        return canonical_key(self.model, self.key)

    def to_bytes(self) -> bytes:
        """Serialise as the wire format (JSON, UTF-8)."""
        return self.model_dump_json(by_alias=True).encode()


def canonical_key(model: str, key: dict[str, Any]) -> str:
    """`<modelname>:<json of the identifiers, keys sorted, no spaces>`: same object, same partition."""
    return f"{model}:{json.dumps(key, sort_keys=True, separators=(',', ':'), ensure_ascii=False)}"


def describe(error: ValidationError) -> str:
    """A pydantic error as one readable line: `field: problem; field: problem`."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in error.errors())


def decode(raw: bytes | str) -> Event:
    """Parse and validate one envelope, or raise EnvelopeError with a code and a readable reason."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise EnvelopeError(RejectCode.NOT_JSON, f"not JSON: {error}") from error
    if not isinstance(data, dict):
        raise EnvelopeError(RejectCode.NOT_OBJECT, f"envelope must be a JSON object, got {type(data).__name__}")
    if data.get("schema") != SCHEMA_V1:
        raise EnvelopeError(
            RejectCode.UNSUPPORTED_SCHEMA, f"schema {data.get('schema')!r} is not supported; expected {SCHEMA_V1!r}"
        )
    if data.get("op") not in [op.value for op in Op]:  # a list: the value may be unhashable
        raise EnvelopeError(RejectCode.BAD_OP, f"op {data.get('op')!r} is not one of {[op.value for op in Op]}")
    try:
        return Event.model_validate(data)
    except ValidationError as error:
        raise EnvelopeError(RejectCode.INVALID_ENVELOPE, f"invalid envelope: {describe(error)}") from error
