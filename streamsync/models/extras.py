"""Extras models."""

from nautobot.extras.models import Role
from nautobot_ssot.contrib.typeddicts import ContentTypeDict

from streamsync.models.base import BuiltinModel


class RoleModel(BuiltinModel):
    """A role, identified by its name (unique in Nautobot).

    `content_types` says which models may use the role (e.g. `{"app_label": "dcim", "model":
    "device"}`): Nautobot refuses a device, VLAN, prefix, ... whose role does not list its type.
    """

    _model = Role
    _modelname = "role"
    _identifiers = ("name",)
    _attributes = ("color", "weight", "description", "content_types")

    name: str
    color: str = "9e9e9e"
    weight: int | None = None
    description: str = ""
    content_types: list[ContentTypeDict] = []
