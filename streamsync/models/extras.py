"""Extras models: statuses and roles, the reference data most other models name."""

from nautobot.extras.models import Role, Status
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


class StatusModel(BuiltinModel):
    """A status, identified by its name (unique in Nautobot); other models name theirs as `status__name`.

    `content_types` says which models may use the status: Nautobot refuses a location, device,
    interface, ... whose status does not list its type. Nautobot's own statuses come with theirs.
    """

    _model = Status
    _modelname = "status"
    _identifiers = ("name",)
    _attributes = ("color", "description", "content_types")

    name: str
    color: str = "9e9e9e"
    description: str = ""
    content_types: list[ContentTypeDict] = []
