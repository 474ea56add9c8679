"""`streamsync publish`, `lag`, `schema` and `models`: events onto a topic, the group's lag, what events hold."""

from __future__ import annotations

from typing import IO, TYPE_CHECKING, Any

import click

from streamsync.contract.envelope import EnvelopeError, Event, decode
from streamsync.contract.topics import DEFAULT_PREFIX, events_topic

if TYPE_CHECKING:
    from streamsync.kafka.connection import KafkaConnection
    from streamsync.sync.schema import FieldFacts, ModelFacts

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
    --config) names the source's models; Nautobot's database adds the custom fields and
    relationships (without it they are left out, and stderr says so). Kafka is not used.
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
        registry = _registry(StreamsyncSettings.load(), source)
    except ConfigError as error:
        raise click.ClickException(str(error)) from error
    click.echo(json.dumps(source_schema(source, registry), indent=2, ensure_ascii=False, default=str))


@main.command()
@click.argument("source", required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per model instead of text.")
@click.option("--topic-prefix", envvar="STREAMSYNC_TOPIC_PREFIX", default=DEFAULT_PREFIX, show_default=True)
@click.pass_context
def models(ctx: click.Context, source: str | None, as_json: bool, topic_prefix: str) -> None:
    """List the models SOURCE's events may write (every source's without SOURCE), parents first.

    For each model: its name in events, the Nautobot model it writes, the key's identifiers and the
    attributes as events spell them, with type, default, Nautobot's choices, and (*) the attributes
    an upsert that creates the object must name. The same facts as `streamsync schema SOURCE`.
    Nautobot's configuration (NAUTOBOT_CONFIG or --config) names the sources; Nautobot's database
    adds custom fields and relationships (without it they are left out, and stderr says so). Kafka
    is not used.
    """
    import json

    setup_nautobot(ctx.obj["config"])
    from streamsync.settings import ConfigError, StreamsyncSettings
    from streamsync.sync.schema import model_facts

    try:
        settings = StreamsyncSettings.load()
        names = [source] if source is not None else sorted(settings.sources)
        registries = {name: _registry(settings, name) for name in names}
    except ConfigError as error:
        raise click.ClickException(str(error)) from error
    if not registries:
        raise click.ClickException('no source is configured (PLUGINS_CONFIG["streamsync"]["sources"])')
    for name, registry in registries.items():
        facts = model_facts(registry)
        if as_json:
            for model in facts:
                click.echo(json.dumps({"source": name, **model.model_dump()}, ensure_ascii=False, default=str))
            continue
        topic = events_topic(name, topic_prefix)
        click.echo(f"source {name}: {len(facts)} model(s) on {topic}, parents first\n")
        for model in facts:
            click.echo(_model_text(model))
        for cycle in registry.cycles:
            kind = "retried" if cycle.retried else "CANNOT BE WRITTEN"
            circle = " -> ".join(cycle.models)
            click.echo(f"cycle {circle}: {cycle.child} goes before {cycle.parent} ({kind}): {cycle.why}\n")


def _model_text(model: ModelFacts) -> str:
    """One model as text: a heading, then its key and attrs, a field per line."""
    bound = f" (Nautobot {model.nautobot_model})" if model.nautobot_model else ""
    lines = [f"{model.model}{bound}: {model.description}"]
    width = max(len(field.name) + 2 for field in (*model.key, *model.attrs))
    for title, fields in (("key", model.key), ("attrs", model.attrs)):
        lines.append(f"  {title}")
        for field in fields:
            name = f"{field.name} *" if field.required_on_create else field.name
            lines.append(f"    {name:<{width}}  {_field_text(field)}")
    if any(field.required_on_create for field in model.attrs):
        lines.append("  * required when an upsert creates the object")
    return "\n".join(lines) + "\n"


CHOICES_SHOWN = 8  # more than this: the first ones and a count (`streamsync schema SOURCE` has them all)


def _field_text(field: FieldFacts) -> str:
    import json

    text = field.type
    if field.choices is not None:
        shown = ", ".join(json.dumps(choice) for choice in field.choices[:CHOICES_SHOWN])
        more = len(field.choices) - CHOICES_SHOWN
        text += f", one of {shown}" + (f" and {more} more" if more > 0 else "")
    if field.has_default:
        text += f", default {json.dumps(field.default, default=str)}"
    return text


def _registry(settings: Any, source: str) -> Any:
    """A source's registry; without a readable database, without custom fields and relationships (said on stderr)."""
    from django.db import DatabaseError

    try:
        return settings.source(source).registry()
    except DatabaseError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        click.echo(
            f"note: custom fields and relationships left out, Nautobot's database is not readable: {first}", err=True
        )
        return settings.source(source).registry(custom_data=False)
