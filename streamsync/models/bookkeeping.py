"""streamsync's own tables (Django models), next to the DiffSync models of this package.

Django imports this module while it populates its app registry (StreamsyncConfig.import_models):
it imports nothing but Django.
"""

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone

# Longest canonical key the state and ownership tables store (ParkedEvent's limit too).
KEY_LENGTH = 1000


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
    awaits = models.JSONField(
        null=True,
        blank=True,
        encoder=DjangoJSONEncoder,
        help_text="objects the key's create waits for, [[model label, [[field, value], ...]], ...]; null: not known",
    )
    parked_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["source", "key"])]
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.source} {self.key} (attempt {self.attempts})"


class SourceState(models.Model):
    """The latest full state of one object as a source describes it: the merge base of the state topic.

    An upsert may name only some attributes; the state topic holds every attribute the source has
    ever set for the object. The merge happens here, in the batch's own transaction, so the state
    commits with the data and survives a worker restart (an in-memory cache would not). A delete
    removes the row (and produces a tombstone).
    """

    id = models.BigAutoField(primary_key=True)
    source = models.CharField(max_length=100)
    key = models.CharField(max_length=KEY_LENGTH, help_text="canonical object key")
    model = models.CharField(max_length=100, help_text="DiffSync model name (_modelname)")
    attrs = models.JSONField(default=dict, help_text="every attribute the source has set, merged")
    event_id = models.CharField(max_length=200, help_text="id of the latest event merged in")
    ts = models.DateTimeField(help_text="time of the latest event merged in, at the source")
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "key"], name="streamsync_sourcestate_source_key")]

    def __str__(self) -> str:
        return f"{self.source} {self.key}"


class OwnedObject(models.Model):
    """A Nautobot object that a source created, updated or asserted: resync may delete only these.

    One narrow row per (source, object), upserted in bulk once per batch: cheaper than
    nautobot-ssot's per-object ObjectMetadata, which is a validated save per object and sync.
    """

    id = models.BigAutoField(primary_key=True)
    source = models.CharField(max_length=100)
    content_type = models.ForeignKey("contenttypes.ContentType", on_delete=models.CASCADE, related_name="+")
    object_id = models.UUIDField()
    key = models.CharField(max_length=KEY_LENGTH, help_text="canonical object key when last claimed")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["source", "content_type", "object_id"], name="streamsync_ownedobject_source_object"
            )
        ]
        indexes = [models.Index(fields=["source", "key"], name="streamsync_owned_source_key")]

    def __str__(self) -> str:
        return f"{self.source} owns {self.key}"


class Position(models.Model):
    """How far one agent of a consumer group has settled one partition: the next offset to apply.

    Written in the same transaction as the batch it follows (its data, parked rows, ownership and
    state), so the database itself vouches for it: a worker reads from here, not from Kafka's
    committed offset, and skips what is below it (already applied: exactly-once effect). A batch
    locks its partitions' rows, so a worker that lost a partition cannot write behind its
    successor. Kafka's committed offsets never run ahead of these (docs/architecture.md).
    """

    id = models.BigAutoField(primary_key=True)
    group = models.CharField(max_length=255, help_text="Kafka consumer group")
    agent = models.CharField(max_length=255, help_text="the agent reading the topic, e.g. streamsync.sync.ipam")
    topic = models.CharField(max_length=255)
    partition = models.IntegerField()
    next_offset = models.BigIntegerField(help_text="offset of the next record to apply")
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["group", "agent", "topic", "partition"], name="streamsync_position_partition"
            )
        ]

    def __str__(self) -> str:
        return f"{self.group} {self.agent} {self.topic}[{self.partition}] at {self.next_offset}"


class LastApplied(models.Model):
    """Where the latest event applied for one key is: what tells a dead letter that it is superseded.

    One row per agent (`streamsync.sync.<source>`, `streamsync.target.<target>`), topic and
    canonical key, upserted in one statement per batch in the batch's own transaction, so it
    commits with what it describes. A dead letter of that key on the same partition below
    `offset` is older than what the system has now: replaying it would roll the object back.
    """

    id = models.BigAutoField(primary_key=True)
    agent = models.CharField(max_length=255, help_text="the agent that applied it, e.g. streamsync.sync.ipam")
    topic = models.CharField(max_length=255)
    key = models.CharField(max_length=KEY_LENGTH, help_text="canonical object key")
    partition = models.IntegerField()
    offset = models.BigIntegerField(help_text="offset of the latest event applied for the key")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["agent", "topic", "key"], name="streamsync_lastapplied_agent_topic_key")
        ]

    def __str__(self) -> str:
        return f"{self.agent} {self.key} at {self.topic}[{self.partition}]@{self.offset}"


class OutboxEvent(models.Model):
    """One Kafka record waiting to be produced: topic, key, value and headers, exactly as they will be sent."""

    # The order events are produced in (per topic).
    id = models.BigAutoField(primary_key=True)
    created = models.DateTimeField(default=timezone.now)
    topic = models.CharField(max_length=249)  # Kafka's limit for a topic name
    key = models.TextField()
    value = models.TextField()
    # [[name, value], ...]: Kafka headers, values as text.
    headers = models.JSONField(default=list)
    # Failed delivery attempts and the last reason: why the backlog is not shrinking.
    attempts = models.PositiveIntegerField(default=0)
    last_attempt = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")

    class Meta:
        """Read by the relay per topic, in `id` order."""

        app_label = "streamsync"
        indexes = [models.Index(fields=["topic", "id"], name="streamsync_outbox_topic_id")]

    def __str__(self) -> str:
        return f"{self.topic} #{self.id} {self.key}"

    def kafka_headers(self) -> list[tuple[str, bytes]]:
        """The headers as aiokafka takes them."""
        return [(str(name), str(value).encode()) for name, value in self.headers]
