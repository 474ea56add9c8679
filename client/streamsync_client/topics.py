"""Topic names of the external contract (docs/contract.md): the single place they are spelled."""

DEFAULT_PREFIX = "streamsync"
# The system whose events are Nautobot's own changes: their `source`, and the name in their topic.
NAUTOBOT = "nautobot"


def events_topic(source: str, prefix: str = DEFAULT_PREFIX) -> str:
    """Change events from remote system `source`."""
    return f"{prefix}.{source}.events"


def state_topic(source: str, prefix: str = DEFAULT_PREFIX) -> str:
    """Compacted replay topic: latest full state per object of `source`."""
    return f"{prefix}.{source}.state"


def dlq_topic(source: str, prefix: str = DEFAULT_PREFIX) -> str:
    """Events from `source` that could not be applied."""
    return f"{prefix}.{source}.dlq"


def nautobot_events_topic(prefix: str = DEFAULT_PREFIX) -> str:
    """Nautobot's own changes, for targets (docs/nautobot-events.md)."""
    return events_topic(NAUTOBOT, prefix)
