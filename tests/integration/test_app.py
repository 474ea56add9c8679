"""streamsync loads as a Nautobot app next to nautobot_ssot, and Nautobot's checks pass with it."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_streamsync_is_a_registered_nautobot_app_and_system_checks_pass() -> None:
    from django.apps import apps
    from django.core.management import call_command

    import streamsync

    config = apps.get_app_config("streamsync")
    assert config.version == streamsync.__version__
    assert apps.is_installed("nautobot_ssot")
    call_command("check", fail_level="ERROR")  # raises SystemCheckError on any error


def test_settings_come_from_plugins_config() -> None:
    from streamsync.settings import StreamsyncSettings

    settings = StreamsyncSettings.load()
    assert "ipam" in settings.sources
    assert [model.get_type() for model in settings.source("ipam").registry()] == settings.source("ipam").models


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"sources": {"ipam": {"models": ["nope"]}}}, "unknown model 'nope'"),
        ({"sources": {"ipam": {"models": ["no.such.Module"]}}}, "cannot import model 'no.such.Module'"),
        (
            {"sources": {"ipam": {"models": ["streamsync.contract.topics.events_topic"]}}},
            "is not a DiffSync model class",
        ),
    ],
)
def test_bad_model_configuration_fails_with_a_clear_message(config: dict[str, object], message: str) -> None:
    from streamsync.settings import ConfigError, StreamsyncSettings

    settings = StreamsyncSettings.model_validate(config)
    with pytest.raises(ConfigError, match=message):
        settings.source("ipam").registry()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"sources": {"nautobot": {"models": ["vlan"]}}}, "'nautobot' is reserved"),
        ({"sources": {"ip am": {"models": ["vlan"]}}}, "must be letters, digits"),
        ({"batch_size": 0}, "batch_size"),
        ({"kafka": "x"}, "kafka"),
    ],
)
def test_invalid_plugins_config_is_refused(config: dict[str, object], message: str) -> None:
    from pydantic import ValidationError

    from streamsync.settings import StreamsyncSettings

    with pytest.raises(ValidationError, match=message):
        StreamsyncSettings.model_validate(config)


def test_unknown_source_names_the_configured_ones() -> None:
    from streamsync.settings import ConfigError, StreamsyncSettings

    with pytest.raises(ConfigError, match=r"unknown source 'cmdb'; configured sources: \['ipam'\]"):
        StreamsyncSettings.model_validate({"sources": {"ipam": {"models": ["vlan"]}}}).source("cmdb")
