"""The event envelope, schema `streamsync.event/v1`, and the canonical object key.

They live in the producer client (`streamsync_client.envelope`, its own distribution without
Nautobot) and are imported from there: producers build events with the very code the worker
decodes them with, so the two cannot drift. The rest of streamsync imports them from here.
"""

from streamsync_client.envelope import (
    MAX_DEPTH,
    SCHEMA_V1,
    EnvelopeError,
    Event,
    KeyValue,
    Op,
    RejectCode,
    canonical_key,
    decode,
    describe,
    unstorable,
)

__all__ = [
    "MAX_DEPTH",
    "SCHEMA_V1",
    "EnvelopeError",
    "Event",
    "KeyValue",
    "Op",
    "RejectCode",
    "canonical_key",
    "decode",
    "describe",
    "unstorable",
]
