"""Topic names of the external contract, spelled once, in the producer client (`streamsync_client.topics`)."""

from streamsync_client.topics import (
    DEFAULT_PREFIX,
    NAUTOBOT,
    dlq_topic,
    events_topic,
    nautobot_events_topic,
    state_topic,
)

__all__ = ["DEFAULT_PREFIX", "NAUTOBOT", "dlq_topic", "events_topic", "nautobot_events_topic", "state_topic"]
