"""The app's registration: the Nautobot releases it says it supports are the ones it is built for."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from nautobot.extras.plugins.exceptions import PluginImproperlyConfigured
from packaging.specifiers import SpecifierSet

import streamsync
from streamsync import StreamsyncConfig

ROOT = Path(__file__).resolve().parents[2]


def test_the_version_is_the_distributions() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == streamsync.DISTRIBUTION == "nautobot-app-streamsync"
    assert StreamsyncConfig.version == streamsync.__version__ == project["version"]


def test_min_and_max_version_match_the_nautobot_the_dependencies_allow() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (nautobot,) = [d for d in project["dependencies"] if d.startswith("nautobot>")]
    allowed = SpecifierSet(nautobot.removeprefix("nautobot"))
    pinned = next(
        line.split("==")[1]
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line.startswith("nautobot==")
    )
    assert StreamsyncConfig.min_version in allowed and pinned in allowed
    assert StreamsyncConfig.max_version in allowed
    StreamsyncConfig.validate({}, pinned)  # the pinned release loads it
    with pytest.raises(PluginImproperlyConfigured, match="maximum version"):
        StreamsyncConfig.validate({}, "3.3.0")
    with pytest.raises(PluginImproperlyConfigured, match="minimum version"):
        StreamsyncConfig.validate({}, "3.1.9")
