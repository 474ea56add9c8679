"""`streamsync dlq list|replay`: inspect and re-drive dead letters."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import click

from streamsync.contract.topics import dlq_topic, events_topic, nautobot_events_topic

if TYPE_CHECKING:
    from streamsync.kafka.connection import KafkaConnection

from streamsync.cli.main import (
    kafka_options,
    main,
    run_kafka,
    setup_nautobot,
)


@main.group()
def dlq() -> None:
    """Inspect and re-drive dead letters (events that could not be applied)."""


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
    letters = run_kafka(read_letters(bootstrap, dlq_topic(source, topic_prefix), group))
    shown = mark_superseded(
        [s for s in letters if show_all or not s.replayed], source, nautobot_events_topic(topic_prefix)
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
    nautobot = nautobot_events_topic(topic_prefix)
    pending = [s for s in run_kafka(read_letters(bootstrap, topic, group)) if not s.replayed]
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
    count = run_kafka(replay(bootstrap, topic, group, records, sending + passed))
    click.echo(f"replayed {count} dead letter(s){f' to {target}' if sending else ''}; {skipped}")


# ---------------------------------------------------------------- state topic: snapshot, resync, replay
