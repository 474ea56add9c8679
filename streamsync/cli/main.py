"""The `streamsync` command group and what its commands share: Kafka options, Nautobot set-up, progress."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

import click

from streamsync.contract.topics import DEFAULT_PREFIX

if TYPE_CHECKING:
    from streamsync.kafka.connection import KafkaConnection

# The local stack's broker (deploy/kafka.sh) unless STREAMSYNC_KAFKA_BOOTSTRAP names another.
BOOTSTRAP_DEFAULT = f"127.0.0.1:{os.getenv('STREAMSYNC_KAFKA_PORT', '9092')}"


def kafka_connection(ctx: click.Context, param: click.Parameter, bootstrap: str) -> KafkaConnection:
    """--bootstrap plus the STREAMSYNC_KAFKA_* security settings, so one environment serves every command."""
    from streamsync.kafka.connection import KafkaConfigError, KafkaConnection

    try:
        return KafkaConnection.from_env(bootstrap)
    except KafkaConfigError as error:
        raise click.ClickException(str(error)) from None


# Commands take a KafkaConnection as `bootstrap`: TLS and SASL come from the environment (docs/security.md).
BOOTSTRAP_OPTION = click.option(
    "--bootstrap",
    envvar="STREAMSYNC_KAFKA_BOOTSTRAP",
    default=BOOTSTRAP_DEFAULT,
    show_default=True,
    callback=kafka_connection,
    help="Kafka host:port[,...]; security from STREAMSYNC_KAFKA_SECURITY_PROTOCOL etc.",
)


def setup_nautobot(config: str | None, *, migrated: bool = False) -> None:
    """Load Nautobot's configuration exactly as `nautobot-server` does, then Django.

    A command that uses streamsync's tables (`migrated`) refuses to go on unless its migrations
    are all applied: its tables would be missing or stale mid-run otherwise.
    """
    from streamsync.cli.nautobot_setup import setup
    from streamsync.cli.preflight import StartupRefused, require_migrations

    try:
        setup(config)
    except Exception as error:
        raise click.ClickException(
            f"cannot set up Nautobot (NAUTOBOT_CONFIG={os.getenv('NAUTOBOT_CONFIG')}): {error}"
        ) from error
    if migrated:
        try:
            require_migrations()
        except StartupRefused as error:
            raise click.ClickException(str(error)) from None


@click.group()
@click.option(
    "--config",
    envvar="NAUTOBOT_CONFIG",
    type=click.Path(exists=True, dir_okay=False),
    help="nautobot_config.py to use (default: $NAUTOBOT_CONFIG, as for nautobot-server).",
)
@click.pass_context
def main(ctx: click.Context, config: str | None) -> None:
    """Stream change events between Kafka and Nautobot."""
    ctx.obj = {"config": config}


_kafka_options = [
    BOOTSTRAP_OPTION,
    click.option("--topic-prefix", envvar="STREAMSYNC_TOPIC_PREFIX", default=DEFAULT_PREFIX, show_default=True),
    click.option("--group", envvar="STREAMSYNC_GROUP_ID", default="streamsync", show_default=True),
]


def kafka_options(fn: Any) -> Any:
    """--bootstrap, --topic-prefix and --group, from the environment like the worker's."""
    for option in reversed(_kafka_options):
        fn = option(fn)
    return fn


def source_setup(ctx: click.Context, source: str) -> tuple[Any, Any]:
    """Nautobot set up (migrated), quiet logs on stderr, and (settings, SOURCE's model registry)."""
    setup_nautobot(ctx.obj["config"], migrated=True)
    from streamsync.monitor import logging as streamsync_logging
    from streamsync.settings import ConfigError, StreamsyncSettings

    streamsync_logging.configure("WARNING")
    try:
        settings = StreamsyncSettings.load()
        return settings, settings.source(source).registry()
    except ConfigError as error:
        raise click.ClickException(str(error)) from error


class Progress:
    """`progress(phase, done, total)` as one click progress bar per phase, on stderr."""

    LABELS = {
        "read": "reading the state topic",
        "plan": "comparing with Nautobot",
        "apply": "applying",
        "events": "reading the events to reprocess",
        "cascade": "collecting what the deletes cascade to",
    }

    def __init__(self) -> None:
        self._bar: Any = None
        self._phase = ""
        self._done = 0

    def __call__(self, phase: str, done: int, total: int) -> None:
        """Advance the bar of `phase` (a new phase starts a new bar) to `done` of `total`."""
        if phase != self._phase:
            self.close()
            self._phase, self._done = phase, 0
            self._bar = click.progressbar(
                length=max(total, 1), label=self.LABELS.get(phase, phase), file=click.get_text_stream("stderr")
            ).__enter__()
        self._bar.update(done - self._done)
        self._done = done

    def close(self) -> None:
        """Finish the current bar."""
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def operator() -> str:
    """Who runs this command, as the change log should name them: login name and host."""
    import getpass
    import socket

    try:
        login = getpass.getuser()
    except (KeyError, OSError):  # no login name for this uid (e.g. a container)
        login = f"uid {os.getuid()}"
    return f"{login} on {socket.gethostname()}"


def run_kafka(coro: Any) -> Any:
    """Run a Kafka coroutine for a command; an unreachable broker or a refused topic is one line, not a traceback."""
    from streamsync.kafka.admin import TopicRefused
    from streamsync.kafka.connection import BrokerUnavailable

    try:
        return asyncio.run(coro)
    except (BrokerUnavailable, TopicRefused) as error:
        raise click.ClickException(str(error)) from error
