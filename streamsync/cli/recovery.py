"""`streamsync snapshot|resync|replay`: putting Nautobot right again from the state topic or the events log."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from streamsync.contract.topics import events_topic, state_topic

if TYPE_CHECKING:
    from streamsync.kafka.connection import KafkaConnection

from streamsync.cli.main import (
    Progress,
    kafka_options,
    main,
    operator,
    run_kafka,
    source_setup,
)


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

    settings, registry = source_setup(ctx, source)
    from streamsync.kafka.admin import TopicSpec, ensure_topics
    from streamsync.kafka.clients import produce_raw
    from streamsync.ops import snapshot as snap
    from streamsync.ops.statetopic import read_state

    kafka, topic = settings.kafka(), state_topic(source, settings.topic_prefix)
    spec = TopicSpec(topic, settings.topic_partitions, settings.topic_replication, compacted=True)
    run_kafka(ensure_topics(kafka, [spec], create=False))  # a state topic that is not compacted: refused before loading
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
    tombstones = snap.find_tombstones(taken, source, run_kafka(read_state(kafka, topic)).live())
    summary = f"{len(taken.changes)} object(s) and {len(tombstones)} tombstone(s) to {topic}"
    if dry_run:
        click.echo(f"dry run: would publish {summary}")
        return
    records = snap.write(taken, source)

    async def publish() -> int:
        await ensure_topics(kafka, [spec])
        return await produce_raw(kafka, topic, (record.kafka() for record in records))

    run_kafka(publish())
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
    settings, registry = source_setup(ctx, source)
    from streamsync.kafka.connection import BrokerUnavailable
    from streamsync.ops import resync as rs
    from streamsync.ops.cascade import format_report, headline
    from streamsync.ops.offsets import active_members
    from streamsync.sync.engine import ChangeLog, SyncEngine
    from streamsync.sync.permissions import Writer, WriterBlocked

    progress = Progress()
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
    if run_kafka(active_members(settings.kafka(), settings.group_id)):
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
    changelog = ChangeLog(note=f"resync started by {operator()} (streamsync resync)")
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
    _, registry = source_setup(ctx, source)  # it moves the stored positions, and reads the source's models
    try:
        resets = run_kafka(plan_reset(bootstrap, group, topic, offset=offset, at=at, only=only))
    except ReplayRefused as error:
        raise click.ClickException(str(error)) from error
    resets = with_positions(group, source, topic, resets)
    click.echo(format_resets(topic, resets))
    events = sum(r.reprocess for r in resets)
    if all(r.current is None for r in resets):
        click.echo(f"note: group {group} has committed nothing on {topic}: is it the workers' group?", err=True)
    members = run_kafka(active_members(bootstrap, group))
    if members and not dry_run:
        raise click.ClickException(refusal(group, members))
    deletes = ""
    if dry_run or not yes:  # what the replayed deletes would take with them, before anyone says yes
        progress = Progress()
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
        run_kafka(reset(bootstrap, group, topic, resets))
    except ReplayRefused as error:
        raise click.ClickException(str(error)) from error
    move_positions(group, source, topic, resets)
    click.echo(f"group {group} will reprocess {events} event(s) of {topic} when its workers start")
