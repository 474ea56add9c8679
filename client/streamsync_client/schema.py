"""The envelope as a JSON Schema (draft 2020-12), for producers in any language.

It is built from the same constants `decode` checks, and says what `decode` accepts: the
envelope's fields, and the limits it puts on every JSON value (no string holding a NUL or a lone
surrogate, nesting at most MAX_DEPTH deep). One difference cannot be written in JSON Schema: an
identifier in `key` must be written as an integer (100), and JSON Schema takes 100.0 as one too.
"""

from __future__ import annotations

from typing import Any

import annotated_types

from streamsync_client.envelope import MAX_DEPTH, SCHEMA_V1, Event, Op

DRAFT = "https://json-schema.org/draft/2020-12/schema"

# A string the worker can store: no NUL (PostgreSQL's text refuses it), no lone UTF-16 surrogate.
STORABLE = "^[^\\u0000\\ud800-\\udfff]*$"

_YEAR = "(?!0000)[0-9]{4}"
_LEAP_YEAR = "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)"
_MONTH_DAY = (
    "(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    "|02-(?:0[1-9]|1[0-9]|2[0-8]))"
)
_DATE = f"(?:{_YEAR}-{_MONTH_DAY}|(?!0000){_LEAP_YEAR}-02-29)"
_TIME = "(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:[.,][0-9]+)?)?"
_OFFSET = "(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):?[0-5][0-9])"
# ISO 8601 as the worker parses it: a calendar date, or a date and time with an optional offset
# (none: UTC is not assumed, the time is taken as it is). RFC 3339 timestamps are all of this form.
DATE_TIME = f"^{_DATE}(?:[Tt _]{_TIME}{_OFFSET}?)?$"
# A number for `ts` is Unix time: seconds, or milliseconds beyond 2e10 (as pydantic reads it),
# between 0001-01-01 and the end of 9999.
UNIX_TIME_MIN = -62_135_596_800_000
UNIX_TIME_END = 253_402_300_800_000


def _lengths(field: str) -> dict[str, int]:
    """minLength/maxLength of a string field, from the Event model's own constraints."""
    out = {}
    for item in Event.model_fields[field].metadata:
        if isinstance(item, annotated_types.MinLen):
            out["minLength"] = item.min_length
        elif isinstance(item, annotated_types.MaxLen):
            out["maxLength"] = item.max_length
    return out


def _string(**extra: Any) -> dict[str, Any]:
    return {"type": "string", "pattern": STORABLE, **extra}


def _values(levels: int) -> dict[str, Any]:
    """`$defs` for JSON values nesting at most `levels` containers deep: value0 (scalars) to value<levels>."""
    defs: dict[str, Any] = {
        "value0": {"anyOf": [{"type": ["null", "boolean", "number"]}, {"$ref": "#/$defs/string"}]},
        "string": _string(),
    }
    for level in range(1, levels + 1):
        inner = {"$ref": f"#/$defs/value{level - 1}"}
        defs[f"value{level}"] = {
            "anyOf": [
                {"$ref": "#/$defs/value0"},
                {"type": "array", "items": inner},
                {"type": "object", "propertyNames": {"$ref": "#/$defs/string"}, "additionalProperties": inner},
            ]
        }
    return defs


def envelope_schema() -> dict[str, Any]:
    """The JSON Schema of an event envelope, `streamsync.event/v1` (docs/schema/event-v1.json)."""
    # The envelope is one level, `attrs` a second: its values may nest MAX_DEPTH - 2 levels more.
    attr_levels = MAX_DEPTH - 2
    return {
        "$schema": DRAFT,
        "title": SCHEMA_V1,
        "description": (
            "One change of one object at a source: a Kafka record on <prefix>.<source>.events, keyed by "
            "<model>:<JSON of key, keys sorted, no spaces> (docs/contract.md). Which models, identifiers and "
            "attributes a source takes: `streamsync schema SOURCE`."
        ),
        "type": "object",
        "properties": {
            "schema": {"const": SCHEMA_V1},
            "id": _string(
                description="unique per event, for de-duplication and tracing; a UUID if omitted", **_lengths("id")
            ),
            "source": _string(description="the system the change happened in", **_lengths("source")),
            "model": _string(description="the model's name, e.g. vlan", **_lengths("model")),
            "op": {"enum": [op.value for op in Op]},
            "key": {
                "description": (
                    "every identifier of the model; integers written as integers (100, not 100.0 or "
                    '"100"): the key is compared as written'
                ),
                "type": "object",
                "propertyNames": {"$ref": "#/$defs/string"},
                "additionalProperties": {
                    "anyOf": [{"type": ["null", "boolean", "integer"]}, {"$ref": "#/$defs/string"}]
                },
            },
            "attrs": {
                "description": "upsert: the attributes it sets; omitted ones are left as they are",
                "type": "object",
                "propertyNames": {"$ref": "#/$defs/string"},
                "additionalProperties": {"$ref": f"#/$defs/value{attr_levels}"},
            },
            "ts": {
                "description": (
                    "when the change happened at the source: ISO 8601 (RFC 3339 recommended), or Unix time; "
                    "now if omitted"
                ),
                "anyOf": [
                    {"type": "string", "pattern": DATE_TIME},
                    {"type": "number", "minimum": UNIX_TIME_MIN, "exclusiveMaximum": UNIX_TIME_END},
                ],
            },
        },
        "required": ["schema", "source", "model", "op", "key"],
        "additionalProperties": False,
        "$defs": _values(attr_levels),
    }
