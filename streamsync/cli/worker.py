"""`streamsync worker`: run sync and target agents."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    pass

from streamsync.cli.main import (
    main,
    setup_nautobot,
)


@main.command()
@click.option("--source", "sources", multiple=True, help="Source(s) to consume (default: every configured source).")
@click.option(
    "--target", "targets", multiple=True, help="Target(s) to write Nautobot's changes to (default: every configured)."
)
@click.option("--batch-size", type=int, help="Events per batch (PLUGINS_CONFIG batch_size).")
@click.option(
    "--batch-timeout",
    type=float,
    help="Longest a batch keeps taking in events already queued (batch_timeout); never a wait for more.",
)
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
        # Unknown source or model, or one a derivation refuses: fail now, not mid-stream.
        registries = {source: settings.source(source).registry() for source in chosen}
        for target in chosen_targets:
            settings.target(target).adapter_class()  # and the target's adapter, checked against its models
    except ConfigError as error:
        raise click.ClickException(str(error)) from error
    try:
        prepare_data_dir(data_dir(settings))  # faust changes into it at start and creates only its last part
    except StartupRefused as error:
        raise click.ClickException(str(error)) from None
    check_user(settings, chosen)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        app = build(settings, chosen, chosen_targets, loop)  # refuses a state topic that is not compacted
    except (BrokerUnavailable, TopicRefused, prometheus.MetricsError) as error:
        raise click.ClickException(str(error)) from error
    log = structlog.get_logger("streamsync.worker")
    for source, registry in registries.items():
        for cycle in registry.cycles:  # where parents-first order cannot hold (streamsync models says too)
            log.warning("models refer to each other in a cycle", source=source, **cycle.model_dump())
    log.info(
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


def check_user(settings: Any, sources: list[str]) -> None:
    """Refuse to start unless the Nautobot user may write the sources' models (created, with them, if missing)."""
    from django.db import DatabaseError

    from streamsync.sync.permissions import UserNotPermitted, check_worker_user

    try:
        check_worker_user(settings, sources)
    except UserNotPermitted as error:
        raise click.ClickException(str(error)) from error
    except DatabaseError as error:
        raise click.ClickException(f"cannot check Nautobot user {settings.user!r}: {error}".strip()) from error
