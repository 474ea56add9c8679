"""`streamsync setup-user`: the least-privilege Nautobot user streamsync writes as."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    pass

from streamsync.cli.main import (
    main,
    setup_nautobot,
)


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
