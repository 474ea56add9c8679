"""`streamsync publish`, `lag` and `schema`: events onto a topic, how far behind the group is, what events hold."""

from __future__ import annotations

from typing import IO, TYPE_CHECKING

import click

from streamsync.contract.envelope import EnvelopeError, Event, decode
from streamsync.contract.topics import DEFAULT_PREFIX, events_topic

if TYPE_CHECKING:
    from streamsync.kafka.connection import KafkaConnection

from streamsync.cli.main import (
    BOOTSTRAP_OPTION,
    main,
    run_kafka,
    setup_nautobot,
)


@main.command()
@click.argument("source")
@click.argument("file", type=click.File("rb"))
@BOOTSTRAP_OPTION
@click.option("--topic-prefix", envvar="STREAMSYNC_TOPIC_PREFIX", default=DEFAULT_PREFIX, show_default=True)
@click.option("--partitions", default=3, show_default=True, help="Partitions if the topic has to be created.")
def publish(source: str, file: IO[bytes], bootstrap: KafkaConnection, topic_prefix: str, partitions: int) -> None:
    """Produce the events in FILE (JSON lines, envelope v1) to SOURCE's events topic.

    Every line is checked first; if any is invalid nothing is sent.
    """
    from streamsync.kafka.admin import TopicSpec, ensure_topics
    from streamsync.kafka.clients import produce

    name = getattr(file, "name", "-")
    events: list[Event] = []
    errors: list[str] = []
    for lineno, line in enumerate(file, 1):
        if not line.strip():
            continue
        try:
            event = decode(line)
        except EnvelopeError as error:
            errors.append(f"{name}:{lineno}: {error.reason}")
            continue
        if event.source != source:
            errors.append(f"{name}:{lineno}: event source {event.source!r} does not match {source!r}")
            continue
        events.append(event)
    if errors:
        for problem in errors:
            click.echo(problem, err=True)
        raise click.ClickException(f"{len(errors)} invalid line(s) in {name}; nothing published")

    topic = events_topic(source, topic_prefix)

    async def run() -> int:
        await ensure_topics(bootstrap, [TopicSpec(topic, partitions)])
        return await produce(bootstrap, topic, events)

    click.echo(f"published {run_kafka(run())} event(s) to {topic}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per partition instead of a table.")
@click.option("--group", "groups", multiple=True, help="Consumer group(s) to show (default: every group).")
@BOOTSTRAP_OPTION
@click.option("--topic-prefix", envvar="STREAMSYNC_TOPIC_PREFIX", default=DEFAULT_PREFIX, show_default=True)
def lag(as_json: bool, groups: tuple[str, ...], bootstrap: KafkaConnection, topic_prefix: str) -> None:
    """Consumer lag per group, topic and partition on streamsync's topics."""
    import json

    from streamsync.ops.lag import consumer_lag, format_table

    rows = run_kafka(consumer_lag(bootstrap, topic_prefix, groups or None))
    if as_json:
        for row in rows:
            click.echo(json.dumps(row.as_dict()))
    elif rows:
        click.echo(format_table(rows))
    else:
        click.echo(f"no consumer group has committed offsets on {topic_prefix}.* topics yet")


@main.command()
@click.argument("source", required=False)
@click.pass_context
def schema(ctx: click.Context, source: str | None) -> None:
    """Print the JSON Schema of the event envelope, or of SOURCE's events with each model's key and attrs.

    Without SOURCE nothing else is needed; with it, Nautobot's configuration (NAUTOBOT_CONFIG or
    --config) names the source's models. No database or Kafka is used.
    """
    import json

    from streamsync.contract.schema import envelope_schema

    if source is None:
        click.echo(json.dumps(envelope_schema(), indent=2, ensure_ascii=False))
        return
    setup_nautobot(ctx.obj["config"])
    from streamsync.settings import ConfigError, StreamsyncSettings
    from streamsync.sync.schema import source_schema

    try:
        registry = StreamsyncSettings.load().source(source).registry()
    except ConfigError as error:
        raise click.ClickException(str(error)) from error
    click.echo(json.dumps(source_schema(source, registry), indent=2, ensure_ascii=False, default=str))
