"""The `streamsync` command."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import IO, TYPE_CHECKING, Any

import click

from streamsync.contract.envelope import EnvelopeError, Event, decode
from streamsync.contract.topics import DEFAULT_PREFIX, dlq_topic, events_topic, state_topic

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


@main.command()
@click.option("--source", "sources", multiple=True, help="Source(s) to consume (default: every configured source).")
@click.option(
    "--target", "targets", multiple=True, help="Target(s) to write Nautobot's changes to (default: every configured)."
)
@click.option("--batch-size", type=int, help="Events per batch (PLUGINS_CONFIG batch_size).")
@click.option("--batch-timeout", type=float, help="Seconds to wait for a batch to fill (batch_timeout).")
@click.option("--retry-max-attempts", type=int, help="Attempts before a retryable failure is dead-lettered.")
@click.option("--retry-backoff", type=float, help="Seconds before the first retry; doubles with each attempt.")
@click.option("--metrics-port", type=int, help="Port of the Prometheus /metrics endpoint; 0 turns it off (9721).")
@click.option("--metrics-address", help="Address the /metrics endpoint listens on (metrics_address, 0.0.0.0).")
@click.option("--loglevel", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
@click.pass_context
def worker(
    ctx: click.Context,
    sources: tuple[str, ...],
    targets: tuple[str, ...],
    batch_size: int | None,
    batch_timeout: float | None,
    retry_max_attempts: int | None,
    retry_backoff: float | None,
    metrics_port: int | None,
    metrics_address: str | None,
    loglevel: str,
) -> None:
    """Run sync workers; processes with the same settings form one consumer group.

    Without --source or --target, a worker runs every configured source and target.
    """
    setup_nautobot(ctx.obj["config"], migrated=True)
    import faust
    import structlog

    from streamsync.agents.app import data_dir
    from streamsync.agents.worker import build
    from streamsync.cli.preflight import StartupRefused, prepare_data_dir
    from streamsync.kafka.admin import TopicRefused
    from streamsync.kafka.connection import BrokerUnavailable
    from streamsync.monitor import logging as streamsync_logging
    from streamsync.monitor import prometheus
    from streamsync.settings import ConfigError, StreamsyncSettings

    log_config = streamsync_logging.configure(loglevel.upper())
    try:
        settings = StreamsyncSettings.load(
            {
                "batch_size": batch_size,
                "batch_timeout": batch_timeout,
                "metrics_port": metrics_port,
                "metrics_address": metrics_address,
            }
        )
        retry = {"max_attempts": retry_max_attempts, "backoff": retry_backoff}
        settings.retry = settings.retry.model_copy(update={k: v for k, v in retry.items() if v is not None})
        named = bool(sources or targets)
        chosen = list(sources) if named else list(settings.sources)
        chosen_targets = list(targets) if named else list(settings.targets)
        if not chosen and not chosen_targets:
            raise ConfigError('no sources or targets configured: add PLUGINS_CONFIG["streamsync"]["sources"]')
        for source in chosen:
            settings.source(source).registry()  # unknown source or model: fail now, not mid-stream
        for target in chosen_targets:
            settings.target(target).adapter_class()  # and the target's adapter, checked against its models
    except ConfigError as error:
        raise click.ClickException(str(error)) from error
    try:
        prepare_data_dir(data_dir(settings))  # faust changes into it at start and creates only its last part
    except StartupRefused as error:
        raise click.ClickException(str(error)) from None
    _check_user(settings, chosen)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        app = build(settings, chosen, chosen_targets, loop)  # refuses a state topic that is not compacted
    except (BrokerUnavailable, TopicRefused, prometheus.MetricsError) as error:
        raise click.ClickException(str(error)) from error
    structlog.get_logger("streamsync.worker").info(
        "worker starting",
        group=settings.group_id,
        sources=chosen,
        targets=chosen_targets,
        kafka=settings.kafka().describe(),
        pid=os.getpid(),
    )
    faust.Worker(
        app, loop=loop, loglevel=loglevel, logging_config=log_config, redirect_stdouts=False, quiet=True
    ).execute_from_commandline()


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

    click.echo(f"published {_run(run())} event(s) to {topic}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per partition instead of a table.")
@click.option("--group", "groups", multiple=True, help="Consumer group(s) to show (default: every group).")
@BOOTSTRAP_OPTION
@click.option("--topic-prefix", envvar="STREAMSYNC_TOPIC_PREFIX", default=DEFAULT_PREFIX, show_default=True)
def lag(as_json: bool, groups: tuple[str, ...], bootstrap: KafkaConnection, topic_prefix: str) -> None:
    """Consumer lag per group, topic and partition on streamsync's topics."""
    import json

    from streamsync.ops.lag import consumer_lag, format_table

    rows = _run(consumer_lag(bootstrap, topic_prefix, groups or None))
    if as_json:
        for row in rows:
            click.echo(json.dumps(row.as_dict()))
    elif rows:
        click.echo(format_table(rows))
    else:
        click.echo(f"no consumer group has committed offsets on {topic_prefix}.* topics yet")


@main.group()
def dlq() -> None:
    """Inspect and re-drive dead letters (events that could not be applied)."""


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


@dlq.command("list")
@click.argument("source")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per dead letter.")
@click.option("--all", "show_all", is_flag=True, help="Include letters already replayed.")
@kafka_options
@click.pass_context
def dlq_list(
    ctx: click.Context,
    source: str,
    as_json: bool,
    show_all: bool,
    bootstrap: KafkaConnection,
    topic_prefix: str,
    group: str,
) -> None:
    """Show SOURCE's dead letters: where each came from, why it failed, and whether it is superseded.

    A letter is superseded when a newer event for its key has been applied since (read from
    Nautobot's database: NAUTOBOT_CONFIG or --config).
    """
    import json

    from streamsync.ops.deadletters import mark_superseded, read_letters

    setup_nautobot(ctx.obj["config"], migrated=True)
    letters = _run(read_letters(bootstrap, dlq_topic(source, topic_prefix), group))
    shown = mark_superseded(
        [s for s in letters if show_all or not s.replayed], source, events_topic("nautobot", topic_prefix)
    )
    for stored in shown:
        info, newer = stored.letter, stored.superseded_by
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "partition": stored.partition,
                        "offset": stored.offset,
                        "key": stored.key.decode(errors="replace") if stored.key else None,
                        "replayed": stored.replayed,
                        "superseded_by": dataclasses.asdict(newer) if newer else None,
                        **(info.model_dump(mode="json") if info else {"code": "unknown", "reason": "no headers"}),
                        "value": stored.value.decode(errors="replace") if stored.value else None,
                    }
                )
            )
        else:
            where = f"{info.original_topic}[{info.original_partition}]@{info.original_offset}" if info else "?"
            click.echo(
                f"{stored.partition}@{stored.offset}  {info.code if info else 'unknown'}  "
                f"attempts={info.attempts if info else '?'}  from {where}"
                f"{'  (replayed)' if stored.replayed else ''}"
                f"{f'  superseded by {newer}' if newer else ''}\n"
                f"    key:    {stored.key.decode(errors='replace') if stored.key else '-'}\n"
                f"    reason: {info.reason if info else 'no streamsync headers'}"
            )
    if not as_json:
        replayed = len(letters) - len([s for s in letters if not s.replayed])
        superseded = sum(1 for s in shown if s.superseded_by)
        click.echo(
            f"{len(shown)} dead letter(s) shown, {superseded} of them superseded; "
            f"{replayed} of {len(letters)} already replayed",
            err=True,
        )


@dlq.command("replay")
@click.argument("source")
@click.option("--dry-run", is_flag=True, help="Show what would be replayed; send nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--include-superseded", is_flag=True, help="Replay superseded letters too (a newer event was applied since)."
)
@kafka_options
@click.pass_context
def dlq_replay(
    ctx: click.Context,
    source: str,
    dry_run: bool,
    yes: bool,
    include_superseded: bool,
    bootstrap: KafkaConnection,
    topic_prefix: str,
    group: str,
) -> None:
    """Send SOURCE's dead letters not replayed yet back to its events topic, as they were.

    A target's dead letters (Nautobot's change events it refused) go back to <prefix>.nautobot.events,
    marked for that target alone. A letter whose key has had a newer event applied since is
    superseded: it is passed over for good (replaying it would roll the object back) unless
    --include-superseded. Fix the cause first (the missing object, the bad value at the producer):
    a replayed event that fails again becomes a new dead letter.
    """
    from streamsync.ops.deadletters import mark_superseded, read_letters, redrive, replay

    setup_nautobot(ctx.obj["config"], migrated=True)
    topic, events = dlq_topic(source, topic_prefix), events_topic(source, topic_prefix)
    nautobot = events_topic("nautobot", topic_prefix)
    pending = [s for s in _run(read_letters(bootstrap, topic, group)) if not s.replayed]
    cut = [s for s in pending if s.letter is not None and s.letter.truncated is not None]
    for stored in cut:
        assert stored.letter is not None
        click.echo(
            f"not replayed: {stored.partition}@{stored.offset} holds only the start of a "
            f"{stored.letter.truncated:,}-byte record; the whole record is at {stored.letter.original_topic}"
            f"[{stored.letter.original_partition}]@{stored.letter.original_offset}",
            err=True,
        )
    pending = mark_superseded([s for s in pending if s not in cut], source, nautobot)
    superseded = [s for s in pending if s.superseded_by is not None]
    for stored in superseded:
        click.echo(
            f"superseded{', replayed anyway' if include_superseded else ', not replayed'}: "
            f"{stored.partition}@{stored.offset}  key {stored.object_key}  "
            f"(a newer event was applied since: {stored.superseded_by})",
            err=True,
        )
    passed = [] if include_superseded else superseded
    sending = [s for s in pending if s not in passed]
    records = [redrive(s, source, events, nautobot) for s in sending]
    target = " and ".join(sorted({r.topic for r in records}))
    skipped = f"skipped {len(passed)} superseded, left out {len(cut)} truncated"
    if not pending:
        click.echo(f"no dead letters to replay; {skipped}")
        return
    codes: dict[str, int] = {}
    for stored in sending:
        code = stored.letter.code if stored.letter else "unknown"
        codes[code] = codes.get(code, 0) + 1
    summary = ", ".join(f"{n} {code}" for code, n in sorted(codes.items()))
    what = f"{len(sending)} dead letter(s)" + (f" ({summary}) to {target}" if sending else "")
    if dry_run:
        click.echo(f"would replay {what}; would skip {len(passed)} superseded, leave out {len(cut)} truncated")
        return
    if not yes:
        click.confirm(f"replay {what} and pass over {len(passed)} superseded?", abort=True)
    count = _run(replay(bootstrap, topic, group, records, sending + passed))
    click.echo(f"replayed {count} dead letter(s){f' to {target}' if sending else ''}; {skipped}")


# ---------------------------------------------------------------- state topic: snapshot, resync, replay


def _source_setup(ctx: click.Context, source: str) -> tuple[Any, Any]:
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


class _Progress:
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


@main.command()
@click.argument("source")
@click.option("--adapter", "adapter_path", required=True, help="Dotted path to a DiffSync or nautobot-ssot adapter.")
@click.option("--dry-run", is_flag=True, help="Load and count; write and publish nothing.")
@click.pass_context
def snapshot(ctx: click.Context, source: str, adapter_path: str, dry_run: bool) -> None:
    """Publish what an existing adapter's load() holds as SOURCE's full state, with tombstones for the rest.

    Then `streamsync resync SOURCE` brings Nautobot to that state.
    """
    import time

    settings, registry = _source_setup(ctx, source)
    from streamsync.kafka.admin import TopicSpec, ensure_topics
    from streamsync.kafka.clients import produce_raw
    from streamsync.ops import snapshot as snap
    from streamsync.ops.statetopic import read_state

    kafka, topic = settings.kafka(), state_topic(source, settings.topic_prefix)
    spec = TopicSpec(topic, settings.topic_partitions, settings.topic_replication, compacted=True)
    _run(ensure_topics(kafka, [spec], create=False))  # a state topic that is not compacted: refused before loading
    started = time.monotonic()
    try:
        adapter = snap.load_adapter(adapter_path)
        click.echo(f"loading {adapter_path} ...", err=True)
        try:
            adapter.load()
        except Exception as error:
            raise snap.SnapshotError(f"{adapter_path}.load() failed: {error!r}") from error
        taken = snap.collect(adapter, registry, source)
    except snap.SnapshotError as error:
        raise click.ClickException(str(error)) from error
    click.echo(
        f"loaded {len(taken.changes)} object(s) of {', '.join(sorted(taken.covered)) or 'no model'} "
        f"in {time.monotonic() - started:.1f}s",
        err=True,
    )
    if taken.skipped:
        click.echo(f"skipped, not written by source {source}: {snap.describe_skipped(taken.skipped)}", err=True)
    tombstones = snap.find_tombstones(taken, source, _run(read_state(kafka, topic)).live())
    summary = f"{len(taken.changes)} object(s) and {len(tombstones)} tombstone(s) to {topic}"
    if dry_run:
        click.echo(f"dry run: would publish {summary}")
        return
    records = snap.write(taken, source)

    async def publish() -> int:
        await ensure_topics(kafka, [spec])
        return await produce_raw(kafka, topic, (record.kafka() for record in records))

    _run(publish())
    click.echo(f"published {summary}")


@main.command()
@click.argument("source")
@click.option("--dry-run", is_flag=True, help="Show the difference; change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--chunk-size", type=click.IntRange(1, 10_000), default=500, show_default=True, help="Objects per transaction."
)
@click.pass_context
def resync(ctx: click.Context, source: str, dry_run: bool, yes: bool, chunk_size: int) -> None:
    """Bring Nautobot to SOURCE's state topic: create, update, and delete what SOURCE owns.

    Deletes only objects SOURCE owns and its state lacks, with what Django cascades to from them
    (listed before the question), and each only if it is unchanged and still owned when applied.
    """
    settings, registry = _source_setup(ctx, source)
    from streamsync.kafka.connection import BrokerUnavailable
    from streamsync.ops import resync as rs
    from streamsync.ops.cascade import format_report, headline
    from streamsync.ops.offsets import active_members
    from streamsync.sync.engine import ChangeLog, SyncEngine
    from streamsync.sync.permissions import Writer, WriterBlocked

    progress = _Progress()
    try:
        state = rs.read(settings.kafka(), source, settings.topic_prefix, progress)
        plan = rs.plan(source, registry, state, progress)
    except (rs.ResyncError, BrokerUnavailable) as error:
        raise click.ClickException(str(error)) from error
    finally:
        progress.close()
    click.echo(rs.format_summary(plan))
    for problem in plan.problems:
        click.echo(f"left alone: {problem.key}: {problem.reason}", err=True)
    if _run(active_members(settings.kafka(), settings.group_id)):
        click.echo(
            f"note: workers of group {settings.group_id} are running: what they add to the state topic meanwhile "
            "is applied after the resync's own changes (docs/resync.md)",
            err=True,
        )
    deletes = ""
    if plan.deletes and (dry_run or not yes):  # what the deletes would take with them, before anyone says yes
        try:
            found = rs.cascade_of(plan, registry, progress)
        finally:
            progress.close()
        line = f"this resync will delete {headline(found)}"
        click.echo(f"{format_report(found)}\n{line}")
        deletes = f"; {line}"
    if dry_run:
        click.echo("dry run: nothing changed")
        return
    if not plan.changes and not plan.claims:
        click.echo(f"Nautobot already matches the state of {source}")
        return
    # Written as the streamsync user (checked now, and in every chunk's transaction); the change log
    # names who started it.
    writer = Writer.of(settings.user, registry)
    standing = writer.standing()
    if standing.blocked is not None:
        raise click.ClickException(str(WriterBlocked(standing)))
    if not yes:
        click.confirm(f"apply {plan.changes} change(s) to Nautobot{deletes}?", abort=True)
    changelog = ChangeLog(note=f"resync started by {_operator()} (streamsync resync)")
    try:
        result = rs.apply(plan, SyncEngine(registry, writer, changelog), progress, chunk_size)
    except WriterBlocked as error:
        raise click.ClickException(
            f"stopped: {error}. The chunks applied before stay; run the resync again once it is fixed"
        ) from error
    finally:
        progress.close()
    left = f", left alone {len(result.left_alone)}" if result.left_alone else ""
    click.echo(
        f"created {result.count('created')}, updated {result.count('updated')}, deleted {result.count('deleted')}, "
        f"claimed {result.claimed}{left} in {result.seconds:.1f}s"
    )
    for line in rs.describe_problems(result.left_alone):
        click.echo(line, err=True)
    if result.caught_up:
        click.echo(f"then applied {result.caught_up} record(s) the workers added to the state topic meanwhile")
    problems = [f"{f.key}: {f.reason}" for f in result.failed] + [f"{r.key}: {r.reason}" for r in result.rejected]
    if problems:
        for line in problems[:50]:
            click.echo(f"failed: {line}", err=True)
        raise click.ClickException(f"{len(problems)} object(s) could not be applied")


@main.command()
@click.argument("source")
@click.option("--offset", type=click.IntRange(min=0), help="Move to this offset (clamped to each partition's range).")
@click.option("--datetime", "when", help="Move to the first event at or after this time (ISO 8601; UTC if no zone).")
@click.option("--earliest", is_flag=True, help="Move to the start of each partition.")
@click.option("--partition", "only", type=int, multiple=True, help="Only this partition (repeatable; default: all).")
@click.option("--dry-run", is_flag=True, help="Show the moves; change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@kafka_options
@click.pass_context
def replay(
    ctx: click.Context,
    source: str,
    offset: int | None,
    when: str | None,
    earliest: bool,
    only: tuple[int, ...],
    dry_run: bool,
    yes: bool,
    bootstrap: KafkaConnection,
    topic_prefix: str,
    group: str,
) -> None:
    """Reprocess SOURCE's events from an offset or a time: move the workers' positions back.

    Moves both the group's Kafka offsets and the positions in Nautobot's database that workers read
    from. The workers must be stopped; the next one to start reprocesses from there. An upsert
    whose change is already in Nautobot changes nothing; a delete deletes its object as it is now,
    with everything Django cascades to: --dry-run, and the confirmation, list those first.
    """
    from datetime import UTC, datetime

    from streamsync.ops.offsets import (
        ReplayRefused,
        active_members,
        format_resets,
        move_positions,
        plan_reset,
        refusal,
        reset,
        with_positions,
    )
    from streamsync.ops.offsets_preview import format_preview, preview, summary

    if sum((offset is not None, when is not None, earliest)) != 1:
        raise click.UsageError("give exactly one of --offset, --datetime or --earliest")
    at = None
    if when is not None:
        try:
            at = datetime.fromisoformat(when)
        except ValueError as error:
            raise click.BadParameter(f"{when!r} is not an ISO 8601 time", param_hint="--datetime") from error
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
    topic = events_topic(source, topic_prefix)
    _, registry = _source_setup(ctx, source)  # it moves the stored positions, and reads the source's models
    try:
        resets = _run(plan_reset(bootstrap, group, topic, offset=offset, at=at, only=only))
    except ReplayRefused as error:
        raise click.ClickException(str(error)) from error
    resets = with_positions(group, source, topic, resets)
    click.echo(format_resets(topic, resets))
    events = sum(r.reprocess for r in resets)
    if all(r.current is None for r in resets):
        click.echo(f"note: group {group} has committed nothing on {topic}: is it the workers' group?", err=True)
    members = _run(active_members(bootstrap, group))
    if members and not dry_run:
        raise click.ClickException(refusal(group, members))
    deletes = ""
    if dry_run or not yes:  # what the replayed deletes would take with them, before anyone says yes
        progress = _Progress()
        try:
            found = preview(bootstrap, topic, resets, registry, source, progress)
        finally:
            progress.close()
        click.echo(format_preview(found))
        deletes = f"; {summary(found)}"
    if dry_run:
        click.echo(f"dry run: group {group} would reprocess {events} event(s); nothing changed")
        if members:
            click.echo(f"note: {refusal(group, members)}", err=True)
        return
    if not yes:
        click.confirm(f"reset group {group} on {topic}: {events} event(s) to reprocess{deletes}?", abort=True)
    try:
        _run(reset(bootstrap, group, topic, resets))
    except ReplayRefused as error:
        raise click.ClickException(str(error)) from error
    move_positions(group, source, topic, resets)
    click.echo(f"group {group} will reprocess {events} event(s) of {topic} when its workers start")


@main.command("setup-user")
@click.option("--user", help="Nautobot username (default: PLUGINS_CONFIG user, else 'streamsync').")
@click.option("--source", "sources", multiple=True, help="Only these sources' models (default: every configured one).")
@click.pass_context
def setup_user(ctx: click.Context, user: str | None, sources: tuple[str, ...]) -> None:
    """Create the Nautobot user streamsync writes as, with view/add/change/delete on the configured models only.

    Idempotent: creates the user (not staff, no usable password) and its "streamsync: <user>" object
    permission when missing, and extends the permission to models configured since. Prints what it granted.
    """
    setup_nautobot(ctx.obj["config"], migrated=True)
    from streamsync.settings import ConfigError, StreamsyncSettings
    from streamsync.sync.permissions import grant, source_models

    try:
        settings = StreamsyncSettings.load({"user": user})
        models = source_models(settings, sources or settings.sources)
    except ConfigError as error:
        raise click.ClickException(str(error)) from error
    if not models:
        raise click.ClickException("the configured sources write no Nautobot models: nothing to grant")
    for line in grant(settings.user, models).lines():
        click.echo(line)


def _operator() -> str:
    """Who runs this command, as the change log should name them: login name and host."""
    import getpass
    import socket

    try:
        login = getpass.getuser()
    except (KeyError, OSError):  # no login name for this uid (e.g. a container)
        login = f"uid {os.getuid()}"
    return f"{login} on {socket.gethostname()}"


def _check_user(settings: Any, sources: list[str]) -> None:
    """Refuse to start unless the Nautobot user may write the sources' models (created, with them, if missing)."""
    from django.db import DatabaseError

    from streamsync.sync.permissions import UserNotPermitted, check_worker_user

    try:
        check_worker_user(settings, sources)
    except UserNotPermitted as error:
        raise click.ClickException(str(error)) from error
    except DatabaseError as error:
        raise click.ClickException(f"cannot check Nautobot user {settings.user!r}: {error}".strip()) from error


def _run(coro: Any) -> Any:
    """Run a Kafka coroutine for a command; an unreachable broker or a refused topic is one line, not a traceback."""
    from streamsync.kafka.admin import TopicRefused
    from streamsync.kafka.connection import BrokerUnavailable

    try:
        return asyncio.run(coro)
    except (BrokerUnavailable, TopicRefused) as error:
        raise click.ClickException(str(error)) from error


if __name__ == "__main__":
    main()
