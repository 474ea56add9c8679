"""The event envelope, schema `streamsync.event/v1`, and the canonical object key.

This is the contract producers depend on (docs/contract.md), and the one copy of it: the worker
decodes with this module, so what a producer builds here is what the worker reads. Decoding checks
the envelope's own shape; whether `model`, `key` and `attrs` fit a source's model is the worker's
job (`streamsync schema SOURCE` prints what each model takes).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

SCHEMA_V1: Literal["streamsync.event/v1"] = "streamsync.event/v1"

# Deepest nesting of JSON values an envelope may hold: attribute values are scalars, lists of
# objects (tags) or small JSON documents; a deeper one is a hostile or broken producer, and would
# otherwise meet a recursion limit in some later step (a state record, a database write).
MAX_DEPTH = 32

# Identifier values are JSON scalars taken as they are (no 1.0 for 1, no "1" for 1): they become
# the canonical key, and two spellings of one object would land on two partitions.
KeyValue = StrictStr | StrictInt | StrictBool | None


class Op(StrEnum):
    """What happened to the object at the source."""

    UPSERT = "upsert"
    DELETE = "delete"


class RejectCode(StrEnum):
    """Why a record was rejected, machine-readable (dead-letter headers, metrics); `reason` says it in words.

    Every code is listed with its meaning in docs/contract.md.
    """

    # The Kafka record itself (checked by the worker before the envelope).
    NULL_VALUE = "null_value"
    NULL_KEY = "null_key"
    KEY_MISMATCH = "key_mismatch"
    TOO_LARGE = "too_large"
    # The envelope's bytes and JSON.
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    TOO_DEEP = "too_deep"
    UNSTORABLE_STRING = "unstorable_string"
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
    """A pydantic error as one line, `field: problem; ...`, quoting no input (it may be a password)."""
    parts = []
    for item in error.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def unstorable(value: Any) -> str | None:
    r"""Why a string in `value` (a key or an item, at any depth) cannot be stored, or None.

    PostgreSQL's text refuses NUL, and a lone UTF-16 surrogate (`"\ud800"` in JSON) is no
    character at all: it can be neither stored nor encoded as UTF-8 again.
    """
    if isinstance(value, str):
        if "\x00" in value:
            return "contains a NUL character, which PostgreSQL cannot store"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "contains a lone surrogate (\\ud800-\\udfff), which is not a character"
        return None
    if isinstance(value, dict):
        return next(filter(None, (unstorable(k) or unstorable(v) for k, v in value.items())), None)
    if isinstance(value, list | tuple):
        return next(filter(None, map(unstorable, value)), None)
    return None


def _depth(value: Any) -> int:
    """How deeply JSON containers nest in `value` (a scalar is 0), without recursion."""
    deepest = 0
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth + 1)
            if depth + 1 <= MAX_DEPTH:
                stack.extend((child, depth + 1) for child in item)
    return deepest


def decode(raw: bytes | str) -> Event:
    """Parse and validate one envelope, or raise EnvelopeError with a code and a readable reason."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise EnvelopeError(RejectCode.NOT_UTF8, f"not UTF-8: {error}") from None
    try:
        data = json.loads(raw)
    except RecursionError:
        raise EnvelopeError(
            RejectCode.TOO_DEEP, f"JSON nested deeper than Python can parse (limit {MAX_DEPTH})"
        ) from None
    except json.JSONDecodeError as error:
        raise EnvelopeError(RejectCode.NOT_JSON, f"not JSON: {error}") from None
    except ValueError as error:  # an integer of more than sys.get_int_max_str_digits() digits (4300)
        raise EnvelopeError(RejectCode.NOT_JSON, f"not JSON this worker can read: {error}") from None
    if _depth(data) > MAX_DEPTH:
        raise EnvelopeError(RejectCode.TOO_DEEP, f"JSON nested more than {MAX_DEPTH} levels deep")
    # Strict UTF-8 and strict JSON leave only `\u` escapes to spell a NUL or a surrogate.
    problem = unstorable(data) if "\\u" in raw else None
    if problem:
        raise EnvelopeError(RejectCode.UNSTORABLE_STRING, f"a string {problem}")
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
