"""A small remote-system adapter in the nautobot-ssot style, for `streamsync snapshot` tests.

Its `load()` reads the JSON file named by REMOTE_DATA: {"vlans": [{vid, vlan_group__name, name,
description}, ...], "tenants": [name, ...]}. Tenants are a model the test source does not write.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from diffsync import Adapter, DiffSyncModel


class RemoteVLAN(DiffSyncModel):
    """A VLAN as the remote system describes it."""

    _modelname = "vlan"
    _identifiers = ("vid", "vlan_group__name")
    _attributes = ("name", "description")

    vid: int
    vlan_group__name: str | None = None
    name: str
    description: Any = ""


class RemoteTenant(DiffSyncModel):
    """A tenant: the source under test does not write tenants, so a snapshot skips them."""

    _modelname = "tenant"
    _identifiers = ("name",)

    name: str


class RemoteAdapter(Adapter):
    """Constructed like an SSoT job's remote adapter: with a job (None outside a job)."""

    vlan = RemoteVLAN
    tenant = RemoteTenant
    top_level = ["vlan", "tenant"]

    def __init__(self, *args: Any, job: Any, sync: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.job = job
        self.sync = sync

    def load(self) -> None:
        """Everything the remote system has."""
        data = json.loads(Path(os.environ["REMOTE_DATA"]).read_text())
        for vlan in data["vlans"]:
            self.add(RemoteVLAN(**vlan))
        for name in data.get("tenants", []):
            self.add(RemoteTenant(name=name))
