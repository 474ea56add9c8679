"""`streamsync snapshot`: an existing remote adapter's load(), published as a source's state, tombstones included."""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import ROOT, Stream
from tests.integration.state_helpers import own_source, state_values, vlan_key, vlans

pytestmark = pytest.mark.integration

ADAPTER = "tests.integration.remote_adapter.RemoteAdapter"


def _remote(stream: Stream, tmp_path: Path) -> tuple[Stream, Path]:
    """The stream with the remote adapter importable and its data file named."""
    data = tmp_path / "remote.json"
    env = {"PYTHONPATH": str(ROOT), "REMOTE_DATA": str(data)}
    return dataclasses.replace(stream, extra_env={**stream.extra_env, **env}), data


def _vlan(vid: int, group: str, name: str, description: Any = "") -> dict[str, Any]:
    return {"vid": vid, "vlan_group__name": group, "name": name, "description": description}


def test_snapshot_publishes_the_adapter_and_tombstones_what_it_no_longer_has(stream: Stream, tmp_path: Path) -> None:
    from nautobot.ipam.models import VLANGroup

    stream, source = own_source(stream, tmp_path)
    stream, data = _remote(stream, tmp_path)
    group = f"sn-{uuid.uuid4().hex[:6]}"
    VLANGroup.objects.create(name=group)
    topic = f"{stream.prefix}.{source}.state"

    data.write_text(
        json.dumps(
            {
                "vlans": [_vlan(1, group, "one", "first"), _vlan(2, group, "two"), _vlan(3, group, "three")],
                "tenants": ["acme"],
            }
        )
    )
    first = stream.cli("snapshot", source, "--adapter", ADAPTER)
    assert first.returncode == 0, first.stderr
    assert f"published 3 object(s) and 0 tombstone(s) to {topic}" in first.stdout
    assert f"skipped, not written by source {source}: tenant (1 object(s))" in first.stderr
    state = state_values(stream, source)
    assert set(state) == {vlan_key(vid, group) for vid in (1, 2, 3)}
    assert state[vlan_key(1, group)]["op"] == "upsert"
    assert state[vlan_key(1, group)]["source"] == source
    assert state[vlan_key(1, group)]["key"] == {"vid": 1, "vlan_group__name": group}
    assert state[vlan_key(1, group)]["attrs"] == {"name": "one", "description": "first"}
    assert vlans(group) == {}  # a snapshot writes the state, not Nautobot

    # The migration path: a resync creates what the snapshot holds, and owns it.
    resync = stream.cli("resync", source, "--yes")
    assert resync.returncode == 0, resync.stderr
    assert vlans(group) == {1: ("one", "first"), 2: ("two", ""), 3: ("three", "")}

    # The remote system changed: VLAN 2 is gone, VLAN 1 renamed.
    data.write_text(json.dumps({"vlans": [_vlan(1, group, "uno"), _vlan(3, group, "three")]}))
    dry = stream.cli("snapshot", source, "--adapter", ADAPTER, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"dry run: would publish 2 object(s) and 1 tombstone(s) to {topic}" in dry.stdout
    assert state_values(stream, source) == state

    second = stream.cli("snapshot", source, "--adapter", ADAPTER)
    assert second.returncode == 0, second.stderr
    assert f"published 2 object(s) and 1 tombstone(s) to {topic}" in second.stdout
    state = state_values(stream, source)
    assert state[vlan_key(2, group)] is None
    assert state[vlan_key(1, group)]["attrs"] == {"name": "uno", "description": ""}

    resync = stream.cli("resync", source, "--yes")
    assert resync.returncode == 0, resync.stderr
    assert vlans(group) == {1: ("uno", ""), 3: ("three", "")}


def test_snapshot_writes_nothing_when_an_object_does_not_fit_the_source(stream: Stream, tmp_path: Path) -> None:
    stream, source = own_source(stream, tmp_path)
    stream, data = _remote(stream, tmp_path)
    group = f"sn-{uuid.uuid4().hex[:6]}"
    data.write_text(json.dumps({"vlans": [_vlan(1, group, "one")]}))
    assert stream.cli("snapshot", source, "--adapter", ADAPTER).returncode == 0

    data.write_text(json.dumps({"vlans": [_vlan(2, group, "two", description=["not", "text"])]}))
    bad = stream.cli("snapshot", source, "--adapter", ADAPTER)
    assert bad.returncode == 1
    assert "1 object(s) do not fit source" in bad.stderr
    assert f"{vlan_key(2, group)}: vlan.description: " in bad.stderr
    assert "nothing written" in bad.stderr
    assert set(state_values(stream, source)) == {vlan_key(1, group)}

    missing = stream.cli("snapshot", source, "--adapter", "tests.integration.remote_adapter.NoSuchAdapter")
    assert missing.returncode == 1
    assert "cannot import adapter 'tests.integration.remote_adapter.NoSuchAdapter'" in missing.stderr
