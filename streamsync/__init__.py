"""streamsync: continuous, event-driven sync between Nautobot and other systems through Kafka."""

from importlib import metadata

from nautobot.apps import NautobotAppConfig

__version__ = metadata.version(__name__)


class StreamsyncConfig(NautobotAppConfig):
    """Nautobot app registration: streamsync runs inside Nautobot's Django so it can use its ORM and change log."""

    name = "streamsync"
    verbose_name = "streamsync"
    description = "Streams change events between Kafka and Nautobot as incremental DiffSync diffs."
    version = __version__
    author = "streamsync developers"
    base_url = "streamsync"
    required_settings: list[str] = []
    # Defaults for PLUGINS_CONFIG["streamsync"]; validated by streamsync.settings.StreamsyncSettings.
    default_settings = {
        "kafka_bootstrap": "127.0.0.1:9092",
        "topic_prefix": "streamsync",
        "sources": {},
    }


config = StreamsyncConfig
