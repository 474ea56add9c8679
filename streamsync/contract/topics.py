"""Topic names of the external contract (DESIGN.md): the single place they are spelled."""

DEFAULT_PREFIX = "streamsync"


def events_topic(source: str, prefix: str = DEFAULT_PREFIX) -> str:
    """Change events from remote system `source`."""
    return f"{prefix}.{source}.events"


def state_topic(source: str, prefix: str = DEFAULT_PREFIX) -> str:
    """Compacted replay topic: latest full state per object of `source`."""
    return f"{prefix}.{source}.state"


def dlq_topic(source: str, prefix: str = DEFAULT_PREFIX) -> str:
    """Events from `source` that could not be applied."""
    return f"{prefix}.{source}.dlq"
