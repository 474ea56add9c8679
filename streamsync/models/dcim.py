"""DCIM models: the location tree and devices with what they are built from.

A reference names the related object by name (a device type also by its manufacturer): contrib
looks it up with exactly those fields, and a lookup that finds none or several fails the object
rather than guessing.
"""

from nautobot.dcim.models import Device, DeviceType, Interface, Location, LocationType, Manufacturer, Platform
from nautobot_ssot.contrib.typeddicts import ContentTypeDict, TagDict

from streamsync.models.base import BuiltinModel


class LocationTypeModel(BuiltinModel):
    """A location type (region, site, building, ...), identified by its name (unique in Nautobot).

    `content_types` lists what may be placed at locations of this type: Nautobot refuses a device
    (or VLAN group, prefix, ...) at a location whose type does not list it.
    """

    _model = LocationType
    _modelname = "locationtype"
    _identifiers = ("name",)
    _attributes = ("parent__name", "nestable", "description", "content_types")

    name: str
    parent__name: str | None = None
    nestable: bool = False
    description: str = ""
    content_types: list[ContentTypeDict] = []


class LocationModel(BuiltinModel):
    """A location, identified by its name within its parent location (Nautobot's uniqueness).

    `parent__name` is None for a top-level location. Two locations of the same name under
    different parents are two objects; the parent itself is looked up by name.
    """

    _model = Location
    _modelname = "location"
    _identifiers = ("name", "parent__name")
    _attributes = (
        "location_type__name",
        "status__name",
        "tenant__name",
        "description",
        "facility",
        "asn",
        "physical_address",
        "shipping_address",
        "comments",
        "tags",
    )

    name: str
    parent__name: str | None = None
    location_type__name: str
    status__name: str = "Active"
    tenant__name: str | None = None
    description: str = ""
    facility: str = ""
    asn: int | None = None
    physical_address: str = ""
    shipping_address: str = ""
    comments: str = ""
    tags: list[TagDict] = []


class ManufacturerModel(BuiltinModel):
    """A manufacturer, identified by its name (unique in Nautobot)."""

    _model = Manufacturer
    _modelname = "manufacturer"
    _identifiers = ("name",)
    _attributes = ("description",)

    name: str
    description: str = ""


class DeviceTypeModel(BuiltinModel):
    """A device type, identified by its model name within its manufacturer (Nautobot's uniqueness).

    Interface (and other component) templates are not synced here: Nautobot instantiates them
    on each new device, and those interfaces can then be upserted like any other.
    """

    _model = DeviceType
    _modelname = "devicetype"
    _identifiers = ("model", "manufacturer__name")
    _attributes = ("part_number", "u_height", "is_full_depth", "subdevice_role", "comments", "tags")

    model: str
    manufacturer__name: str
    part_number: str = ""
    u_height: int = 1
    is_full_depth: bool = True
    subdevice_role: str = ""
    comments: str = ""
    tags: list[TagDict] = []


class PlatformModel(BuiltinModel):
    """A platform (OS), identified by its name alone: Nautobot keeps platform names unique.

    The manufacturer is an attribute, not part of the key, so it can be set or changed later.
    """

    _model = Platform
    _modelname = "platform"
    _identifiers = ("name",)
    _attributes = ("manufacturer__name", "network_driver", "napalm_driver", "description")

    name: str
    manufacturer__name: str | None = None
    network_driver: str = ""
    napalm_driver: str = ""
    description: str = ""


class DeviceModel(BuiltinModel):
    """A device, identified by its name within its location (Nautobot's default device uniqueness).

    The location is looked up by name, so device locations need unique names. Role and device
    type have no sensible default and must be named on create; status defaults to Active.
    Interfaces are separate objects: an event about a device never touches its interfaces.
    """

    _model = Device
    _modelname = "device"
    _identifiers = ("name", "location__name")
    _attributes = (
        "device_type__manufacturer__name",
        "device_type__model",
        "role__name",
        "status__name",
        "platform__name",
        "tenant__name",
        "serial",
        "asset_tag",
        "comments",
        "tags",
    )

    name: str
    location__name: str
    device_type__manufacturer__name: str
    device_type__model: str
    role__name: str
    status__name: str = "Active"
    platform__name: str | None = None
    tenant__name: str | None = None
    serial: str = ""
    asset_tag: str | None = None
    comments: str = ""
    tags: list[TagDict] = []


class InterfaceModel(BuiltinModel):
    """A device interface, identified by its name on its device (the device looked up by name).

    `type` (e.g. "1000base-t", "virtual") has no default: Nautobot requires one and has none.
    Interfaces Nautobot created from the device type's templates are upserted like any other.
    """

    _model = Interface
    _modelname = "interface"
    _identifiers = ("name", "device__name")
    _attributes = (
        "type",
        "status__name",
        "role__name",
        "label",
        "description",
        "enabled",
        "mgmt_only",
        "mtu",
        "tags",
    )

    name: str
    device__name: str
    type: str
    status__name: str = "Active"
    role__name: str | None = None
    label: str = ""
    description: str = ""
    enabled: bool = True
    mgmt_only: bool = False
    mtu: int | None = None
    tags: list[TagDict] = []
