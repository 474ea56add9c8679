"""Dead letters: events that could not be applied, kept with why, on `streamsync.<source>.dlq`.

A dead letter is the original message, key and bytes unchanged, so that `streamsync dlq replay`
can re-drive it after the cause is fixed; what went wrong travels in headers.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field

HEADER_PREFIX = "streamsync-"
MAX_REASON_BYTES = 4000

# Codes beyond the envelope's RejectCode values.
APPLY_FAILED = "apply_failed"  # Nautobot refused the object (validation, protected delete, ...)
DEPENDENCY_MISSING = "dependency_missing"  # a related object that never arrived


class DeadLetter(BaseModel):
    """Why one message was dead-lettered, and where it came from."""

    code: str
    reason: str
    source: str
    attempts: int = 1
    original_topic: str
    original_partition: int
    original_offset: int
    failed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers: `streamsync-<field>`, UTF-8 text."""
        reason = self.reason.encode()[:MAX_REASON_BYTES]
        values = {**self.model_dump(mode="json", exclude={"reason"}), "reason": reason.decode(errors="ignore")}
        return [(HEADER_PREFIX + name.replace("_", "-"), str(value).encode()) for name, value in values.items()]

    @classmethod
    def from_headers(cls, headers: list[tuple[str, bytes]] | None) -> DeadLetter:
        """Read back what `headers()` wrote."""
        fields = {
            name[len(HEADER_PREFIX) :].replace("-", "_"): value.decode(errors="replace")
            for name, value in headers or []
            if name.startswith(HEADER_PREFIX)
        }
        return cls.model_validate(fields)
