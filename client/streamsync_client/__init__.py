"""Produce change events for streamsync from any Python program, without Nautobot.

The envelope, the canonical key and the partitioner here are the ones the streamsync worker
itself decodes and keys with (it imports them from this package), so the two cannot drift.
"""

from importlib import metadata

from streamsync_client.envelope import SCHEMA_V1, EnvelopeError, Event, Op, RejectCode, canonical_key, decode
from streamsync_client.partitioning import PRODUCER_SETTINGS, murmur2_partitioner, partition_for
from streamsync_client.publisher import BlockingPublisher, Publisher, PublishError, build_event
from streamsync_client.schema import envelope_schema
from streamsync_client.topics import DEFAULT_PREFIX, events_topic

__version__ = metadata.version("streamsync-client")

__all__ = [
    "DEFAULT_PREFIX",
    "PRODUCER_SETTINGS",
    "SCHEMA_V1",
    "BlockingPublisher",
    "EnvelopeError",
    "Event",
    "Op",
    "PublishError",
    "Publisher",
    "RejectCode",
    "build_event",
    "canonical_key",
    "decode",
    "envelope_schema",
    "events_topic",
    "murmur2_partitioner",
    "partition_for",
]
