"""Dead letters: records that could not be applied, kept with why, on `<prefix>.<system>.dlq`.

A dead letter is the original record, key, bytes and headers unchanged, so that `streamsync dlq
replay` can re-drive it after the cause is fixed; what went wrong travels in `streamsync-*`
headers. Only a record too large to be written again is cut short (`streamsync-truncated` holds
its size): its headers still name the topic, partition and offset where the whole record is.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from streamsync.contract.records import Origin, OutRecord

HEADER_PREFIX = "streamsync-"
# On a target's dead letter replayed to `<prefix>.nautobot.events`: the one target it is for. Every
# other target skips it; Nautobot's change stream otherwise reaches every target, and they have it.
HEADER_REDRIVE_FOR = "streamsync-redrive-for"
MAX_REASON_BYTES = 4000
# What is kept of a record too large to be dead-lettered whole: enough to see what it was.
TRUNCATED_BYTES = 64 * 1024

# Codes beyond the envelope's RejectCode values.
APPLY_FAILED = "apply_failed"  # Nautobot refused the object (validation, protected delete, ...)
DEPENDENCY_MISSING = "dependency_missing"  # a related object that never arrived
# The batch failed, again and again, for no infrastructure reason, and this record alone fails it
# (a defect streamsync has no code for yet); the reason holds the error.
UNEXPECTED_ERROR = "unexpected_error"


class DeadLetter(BaseModel):
    """Why one record was dead-lettered, and where it came from."""

    code: str
    reason: str
    source: str
    attempts: int = 1
    original_topic: str
    original_partition: int
    original_offset: int
    failed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    # The original record's size in bytes when the letter holds only its beginning.
    truncated: int | None = None

    @classmethod
    def of(cls, origin: Origin, code: str, reason: str, *, source: str, attempts: int = 1) -> DeadLetter:
        """The letter for the record `origin`; `source` is the system whose events it carried."""
        return cls(
            code=code,
            reason=reason,
            source=source,
            attempts=attempts,
            original_topic=origin.topic,
            original_partition=origin.partition,
            original_offset=origin.offset,
        )

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers: `streamsync-<field>`, UTF-8 text."""
        reason = self.reason.encode(errors="replace")[:MAX_REASON_BYTES]
        values = {
            **self.model_dump(mode="json", exclude={"reason"}, exclude_none=True),
            "reason": reason.decode(errors="ignore"),
        }
        return [(HEADER_PREFIX + name.replace("_", "-"), str(value).encode()) for name, value in values.items()]

    @classmethod
    def from_headers(cls, headers: list[tuple[str, bytes]] | None) -> DeadLetter:
        """Read back what `headers()` wrote."""
        fields = {
            name[len(HEADER_PREFIX) :].replace("-", "_"): value.decode(errors="replace")
            for name, value in headers or []
            if name.startswith(HEADER_PREFIX) and name[len(HEADER_PREFIX) :].replace("-", "_") in cls.model_fields
        }
        return cls.model_validate(fields)

    @classmethod
    def original_headers(cls, headers: Sequence[tuple[str, bytes]]) -> tuple[tuple[str, bytes], ...]:
        """A letter's headers without those dead-lettering and replaying added: the original record's own.

        What `dlq replay` sends with the original key and bytes: `streamsync-origin` among them, so a
        system's own change replayed to it is still known as its own.
        """
        added = {HEADER_PREFIX + name.replace("_", "-") for name in cls.model_fields} | {HEADER_REDRIVE_FOR}
        return tuple((name, value) for name, value in headers if name not in added)

    def record(self, topic: str, origin: Origin, max_bytes: int) -> OutRecord:
        """The letter as produced to `topic`: the original record, cut short if it exceeds `max_bytes`.

        The original's own headers come first; a header of the same name from an earlier
        dead-lettering is replaced, so a letter re-driven and dead-lettered again says why once.
        """
        key, value, kept = origin.message_key, origin.value, origin.headers
        letter = self
        if origin.size > max_bytes:
            key = key[:TRUNCATED_BYTES] if key is not None else None
            value = value[:TRUNCATED_BYTES] if value is not None else None
            kept = ()
            letter = self.model_copy(update={"truncated": origin.size})
        ours = letter.headers()
        names = {name for name, _ in ours}
        headers = (*((n, v) for n, v in kept if n not in names), *ours)
        return OutRecord(topic, key, value, headers)
