"""A Kafka record as streamsync receives it, and the event it carries: any record whatsoever.

A topic can hold anything a producer sends: a null value (a tombstone), a null key, a key that is
not the event's canonical key, bytes that are no envelope, a record too large to be written again.
`read_event` turns every record into an Event or an EnvelopeError with a code, never anything
else, so each record ends applied, parked or dead-lettered and the partition moves on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from streamsync.contract.envelope import EnvelopeError, Event, RejectCode, decode

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class Origin:
    """Where a record came from and what it held: what a parked row or a dead letter must keep."""

    message_key: bytes | None
    value: bytes | None  # None: a null value, which Kafka calls a tombstone
    topic: str
    partition: int
    offset: int
    headers: Headers = ()

    @classmethod
    def of(cls, message: Any) -> Origin:
        """The origin of a faust `Message` (or anything with its attributes)."""
        return cls(
            message.key,
            message.value,
            message.topic,
            message.partition,
            message.offset,
            tuple(_headers(message.headers)),
        )

    @property
    def size(self) -> int:
        """Bytes of key, value and headers: what counts against the broker's limit on a record."""
        return len(self.message_key or b"") + len(self.value or b"") + sum(len(n) + len(v) for n, v in self.headers)

    def header(self, name: str) -> bytes | None:
        """The last value of header `name`, or None."""
        return next((value for key, value in reversed(self.headers) if key == name), None)


@dataclass(frozen=True)
class OutRecord:
    """A record streamsync produces while it settles a batch: a state record or a dead letter."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers = ()


def _headers(headers: Any) -> Iterable[tuple[str, bytes]]:
    items = headers.items() if isinstance(headers, dict) else headers or ()
    for name, value in items:
        yield str(name), value if isinstance(value, bytes) else str(value).encode()


def read_event(origin: Origin, max_bytes: int) -> Event:
    """The event `origin` carries, or EnvelopeError with a code saying why it carries none.

    `max_bytes` is the largest record this worker can write again (as a state record or a dead
    letter): a larger one could never be settled, so it is refused here, before any work.
    """
    if origin.value is None:
        raise EnvelopeError(
            RejectCode.NULL_VALUE,
            "a record with a null value (a tombstone): an event is never null, a delete is an envelope with op=delete",
        )
    if origin.message_key is None:
        raise EnvelopeError(
            RejectCode.NULL_KEY, "a record without a key: events are keyed by their canonical key (per-key order)"
        )
    if origin.size > max_bytes:
        raise EnvelopeError(
            RejectCode.TOO_LARGE,
            f"a record of {origin.size:,} bytes; this worker writes records of at most {max_bytes:,} bytes",
        )
    event = decode(origin.value)
    if origin.message_key != event.canonical_key.encode():
        raise EnvelopeError(
            RejectCode.KEY_MISMATCH,
            f"record key {origin.message_key[:300]!r} is not the event's canonical key {event.canonical_key[:300]!r}: "
            "records of one object must share a key to share a partition",
        )
    return event
