"""streamsync: continuous, event-driven sync between Nautobot and other systems through Kafka."""

from importlib import import_module, metadata

from nautobot.apps import NautobotAppConfig

# The distribution is nautobot-app-streamsync (the name `streamsync` on the package index is another project's).
DISTRIBUTION = "nautobot-app-streamsync"
__version__ = metadata.version(DISTRIBUTION)


class StreamsyncConfig(NautobotAppConfig):
    """Nautobot app registration: streamsync runs inside Nautobot's Django so it can use its ORM and change log."""

    name = "streamsync"
    verbose_name = "streamsync"
    description = "Streams change events between Kafka and Nautobot as incremental DiffSync diffs."
    version = __version__
    author = "streamsync developers"
    base_url = "streamsync"
    # The Nautobot releases this version is built and tested against (pyproject.toml: nautobot>=3.2,<3.3).
    min_version = "3.2.0"
    max_version = "3.2.9999"
    required_settings: list[str] = []
    # Defaults for PLUGINS_CONFIG["streamsync"]; validated by streamsync.settings.StreamsyncSettings.
    default_settings = {
        "kafka_bootstrap": "127.0.0.1:9092",
        "topic_prefix": "streamsync",
        "sources": {},
    }

    def ready(self) -> None:
        """Nautobot's app hooks (urls, api.urls, navigation, metrics), and the outbox check on /health/."""
        super().ready()
        from health_check.plugins import plugin_dir

        from streamsync.health_checks import OutboxAgeBackend

        plugin_dir.register(OutboxAgeBackend)

    def import_models(self) -> None:
        """Also import streamsync's own tables: `streamsync.models` holds DiffSync models, imported on demand."""
        super().import_models()
        import_module(f"{self.name}.models.bookkeeping")


config = StreamsyncConfig
