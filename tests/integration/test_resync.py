"""`streamsync resync`: Nautobot brought back to a source's state topic, within what the source owns."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import STREAMSYNC, Stream, wait_for
from tests.integration.state_helpers import own_source, produce_state, publish, vlan_event, vlan_key, vlans

pytestmark = pytest.mark.integration


def _summary(output: str) -> dict[str, list[int]]:
    """The summary table: model -> [create, update, delete, unchanged, claim]."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["MODEL", "CREATE"])
    rows = {}
    for line in lines[start + 1 :]:
        cells = line.split()
        if len(cells) != 6 or not all(c.isdigit() for c in cells[1:]):
            break
        rows[cells[0]] = [int(c) for c in cells[1:]]
    return rows


def test_resync_repairs_drift_and_leaves_unowned_objects_alone(
    stream: Stream, start_worker: Any, tmp_path: Path
) -> None:
    from nautobot.extras.models import Status
    from nautobot.ipam.models import VLAN, VLANGroup

    stream, source = own_source(stream, tmp_path)
    group = f"rs-{uuid.uuid4().hex[:6]}"
    VLANGroup.objects.create(name=group)
    worker = start_worker("--source", source, "--batch-timeout", "0.2", on=stream)
    publish(
        stream,
        tmp_path,
        *(vlan_event("upsert", vid, group, source, name=f"v{vid}", description=f"d{vid}") for vid in (1, 2, 3, 4)),
        source=source,
    )
    streamed = {vid: (f"v{vid}", f"d{vid}") for vid in (1, 2, 3, 4)}
    wait_for(lambda: vlans(group) == streamed, 120, "the streamed VLANs", worker)
    assert worker.stop() == 0

    # Drift: edited by hand, deleted by hand, renumbered by hand (it keeps its unique name), made by
    # hand outside the source, and gone at the source (a tombstone, as a snapshot that lacks it writes).
    edited = VLAN.objects.get(vlan_group__name=group, vid=1)
    edited.description = "edited by hand"
    edited.validated_save()
    renumbered = VLAN.objects.get(vlan_group__name=group, vid=4)
    renumbered.vid = 14
    renumbered.validated_save()
    VLAN.objects.get(vlan_group__name=group, vid=2).delete()
    active = Status.objects.get(name="Active")
    VLAN.objects.create(vlan_group=VLANGroup.objects.get(name=group), vid=5, name="by hand", status=active)
    produce_state(stream, source, [(vlan_key(3, group), None)])
    drifted = {1: ("v1", "edited by hand"), 3: ("v3", "d3"), 14: ("v4", "d4"), 5: ("by hand", "")}
    assert vlans(group) == drifted

    dry = stream.cli("resync", source, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert _summary(dry.stdout) == {"vlan": [2, 1, 2, 0, 0], "total": [2, 1, 2, 0, 0]}
    assert "dry run: nothing changed" in dry.stdout
    assert vlans(group) == drifted

    applied = stream.cli("resync", source, "--yes")
    assert applied.returncode == 0, applied.stderr
    assert "created 2, updated 1, deleted 2, claimed 0" in applied.stdout
    assert vlans(group) == {1: ("v1", "d1"), 2: ("v2", "d2"), 4: ("v4", "d4"), 5: ("by hand", "")}

    # The recreated VLANs are owned again, so the next resync has nothing left to do.
    again = stream.cli("resync", source, "--dry-run")
    assert again.returncode == 0, again.stderr
    assert _summary(again.stdout)["total"] == [0, 0, 0, 3, 0]


def test_resync_claims_matching_objects_and_reports_what_fails(stream: Stream, tmp_path: Path) -> None:
    """A state written by a snapshot: objects that already match are claimed; what Nautobot refuses fails loudly."""
    from nautobot.extras.models import Status
    from nautobot.ipam.models import VLAN, VLANGroup

    stream, source = own_source(stream, tmp_path)
    group = f"rs-{uuid.uuid4().hex[:6]}"
    vlan_group = VLANGroup.objects.create(name=group)
    VLAN.objects.create(vlan_group=vlan_group, vid=7, name="seven", status=Status.objects.get(name="Active"))

    def state(vid: int, **attrs: Any) -> tuple[str, dict[str, Any]]:
        return vlan_key(vid, group), vlan_event("upsert", vid, group, source, **attrs)

    produce_state(stream, source, [state(7, name="seven"), state(8, name="eight", status__name="No such status")])

    refused = subprocess.run(
        [STREAMSYNC, "resync", source], env=stream.env(), input="n\n", capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 1, refused.stderr
    assert "apply 1 change(s) to Nautobot? [y/N]" in refused.stdout
    assert set(vlans(group)) == {7}

    result = stream.cli("resync", source, "--yes")
    assert result.returncode == 1
    assert _summary(result.stdout)["vlan"] == [1, 0, 0, 1, 1]
    assert f"failed: {vlan_key(8, group)}: " in result.stderr
    assert "1 object(s) could not be applied" in result.stderr
    assert vlans(group) == {7: ("seven", "")}

    # Claimed: once the source no longer has it, a resync deletes it.
    produce_state(stream, source, [(vlan_key(7, group), None), (vlan_key(8, group), None)])
    result = stream.cli("resync", source, "--yes")
    assert result.returncode == 0, result.stderr
    assert "deleted 1" in result.stdout
    assert vlans(group) == {}


def test_resync_applies_what_workers_put_on_the_state_topic_while_it_ran(stream: Stream, tmp_path: Path) -> None:
    """The state read at the start must not win over changes streamed during the resync."""
    from nautobot.extras.models import Status
    from nautobot.ipam.models import VLAN, VLANGroup

    stream, source = own_source(stream, tmp_path)
    group = f"rs-{uuid.uuid4().hex[:6]}"
    vlan_group = VLANGroup.objects.create(name=group)
    one = VLAN.objects.create(vlan_group=vlan_group, vid=1, name="hand", status=Status.objects.get(name="Active"))

    def state(vid: int, **attrs: Any) -> tuple[str, dict[str, Any]]:
        return vlan_key(vid, group), vlan_event("upsert", vid, group, source, **attrs)

    produce_state(stream, source, [state(1, name="old"), state(2, name="two")])
    resync = subprocess.Popen(
        [STREAMSYNC, "resync", source],
        env=stream.env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert resync.stdout is not None
    summary: list[list[str]] = []
    for line in iter(resync.stdout.readline, ""):
        summary.append(line.split())
        if line.startswith("total"):
            break
    assert summary[-1] == ["total", "1", "1", "0", "0", "0"], (summary, resync.stderr and resync.stderr.read())

    # While it waits for its confirmation, a worker applies newer events: VLAN 1 renamed, VLAN 2 deleted.
    one.name = "new"
    one.validated_save()
    produce_state(stream, source, [state(1, name="new"), (vlan_key(2, group), None)])

    out, err = resync.communicate("y\n", timeout=180)
    assert resync.returncode == 0, err
    assert "created 1, updated 2, deleted 1," in out  # the second update and the delete: catching up
    assert "then applied 2 record(s) the workers added to the state topic meanwhile" in out
    assert vlans(group) == {1: ("new", "")}
