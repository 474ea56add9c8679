"""streamsync's own tables (Django models), next to the DiffSync models of this package."""

from django.db import models


class ParkedEvent(models.Model):
    """An event waiting for a retry, because its object failed in a way that may pass later.

    Rows are written in the same transaction as the batch they were part of, so an event is either
    applied, parked or dead-lettered before its offset is committed. While a key has parked events,
    newer events for that key are parked behind them (by `id`): per-key order holds, other keys
    go on.
    """

    id = models.BigAutoField(primary_key=True)
    source = models.CharField(max_length=100)
    key = models.CharField(max_length=1000, help_text="canonical object key of the event")
    message_key = models.BinaryField(null=True, help_text="the original message key, for its dead letter")
    value = models.BinaryField(help_text="the original message bytes")
    original_topic = models.CharField(max_length=255)
    original_partition = models.IntegerField()
    original_offset = models.BigIntegerField()
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(db_index=True)
    last_reason = models.TextField(blank=True)
    parked_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["source", "key"])]
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.source} {self.key} (attempt {self.attempts})"
