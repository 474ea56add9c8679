"""IPAM models."""

from nautobot.ipam.models import VLAN
from nautobot_ssot.contrib import NautobotModel


class VLANModel(NautobotModel):
    """A VLAN, identified by its VID within a VLAN group (no group: a global VLAN)."""

    _model = VLAN
    _modelname = "vlan"
    _identifiers = ("vid", "vlan_group__name")
    _attributes = ("name", "status__name", "description")

    vid: int
    vlan_group__name: str | None = None
    name: str
    # Nautobot requires a status; a source that has no notion of one gets Nautobot's usual default.
    status__name: str = "Active"
    description: str = ""
