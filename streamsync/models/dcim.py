"""DCIM models: the location tree and devices with what they are built from.

A reference names the related object by name (a device type also by its manufacturer): contrib
looks it up with exactly those fields, and a lookup that finds none or several fails the object
rather than guessing.

Modules have no natural key in Nautobot (`natural_key_field_lookups` is the pk: a module sits in a
bay of a device or of another module, to any depth). Here a module is named where it sits: its
device, the bay it is in and the bay its parent module is in (null for a module in a bay of the
device). That names every module up to two levels deep; deeper, modules in bays of the same names
on one device cannot be told apart and their events fail rather than write the wrong one.
"""

from typing import Any, ClassVar

from django.db.models import QuerySet
from nautobot.dcim.models import (
    Device,
    DeviceType,
    Interface,
    Location,
    LocationType,
    Manufacturer,
    Module,
    ModuleBay,
    ModuleType,
    Platform,
)
from nautobot_ssot.contrib.typeddicts import ContentTypeDict, TagDict
from pydantic import Field

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


class ModuleTypeModel(BuiltinModel):
    """A module type (line card, power supply, ...), identified by its model within its manufacturer."""

    _model = ModuleType
    _modelname = "moduletype"
    _identifiers = ("model", "manufacturer__name")
    _attributes = ("part_number", "comments", "tags")

    model: str
    manufacturer__name: str
    part_number: str = ""
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


# How an interface's key names its module (the JSON schema shows these).
_IN_BAY = "the bay the interface's module is in, on the key's device"
_PARENT_IN_BAY = "the bay the parent of the interface's module is in; null for a module in a bay of the device"


class _NamesAModule(BuiltinModel):
    """A model whose key names a module by the bays it sits in: that module is looked up on the key's device.

    A bay's name is unique only within its device or module, so contrib's lookup of the module by
    its bays alone could find one on every device; the device named in the key narrows it to one.
    """

    # The foreign key to the module, and the one to the device the module is on.
    _module_field: ClassVar[str] = "module"
    _device_field: ClassVar[str] = "device"

    @classmethod
    def _lookup_and_set_foreign_keys(cls, foreign_keys: dict[str, Any], obj: Any, adapter: Any) -> None:
        module, device = foreign_keys.get(cls._module_field), foreign_keys.get(cls._device_field)
        if module is not None and device is not None and module.get("parent_module_bay__name") is not None:
            module["parent_module_bay__parent_device__name"] = device.get("name")
        super()._lookup_and_set_foreign_keys(foreign_keys, obj, adapter)


class ModuleBayModel(_NamesAModule):
    """A module bay of a device, or of a module on a device, identified by its name there.

    A bay of the device itself has null `parent_module__...`; a bay of a module names the module
    by the bays it sits in (see the module). `parent_device__name` is always the device the bay is
    in, as Nautobot stores it, also for a bay of a module. Bays Nautobot created from a device or
    module type's templates are upserted like any other.
    """

    _model = ModuleBay
    _modelname = "modulebay"
    _identifiers = (
        "name",
        "parent_device__name",
        "parent_module__parent_module_bay__name",
        "parent_module__parent_module_bay__parent_module__parent_module_bay__name",
    )
    _attributes = ("position", "label", "description", "requires_first_party_modules", "tags")
    _module_field: ClassVar[str] = "parent_module"
    _device_field: ClassVar[str] = "parent_device"

    name: str
    parent_device__name: str = Field(description="the device the bay is in, also when it is a bay of a module")
    parent_module__parent_module_bay__name: str | None = Field(
        None, description="the bay the bay's module is in; null for a bay of the device"
    )
    parent_module__parent_module_bay__parent_module__parent_module_bay__name: str | None = Field(
        None, description="the bay the parent of the bay's module is in; null unless that parent is a module"
    )
    position: str = ""
    label: str = ""
    description: str = ""
    requires_first_party_modules: bool = False
    tags: list[TagDict] = []

    @classmethod
    def get_queryset(cls) -> QuerySet[ModuleBay]:
        """Bays of modules not installed in a device have no key here."""
        return ModuleBay.objects.filter(parent_device__isnull=False)


class ModuleModel(BuiltinModel):
    """A module installed in a device, identified by where it sits: the bay it is in, on its device.

    `parent_module_bay__parent_module__parent_module_bay__name` is the bay its parent module is in,
    null for a module in a bay of the device. Modules in no device (kept at a location, or in a
    module kept there) are not synced.
    Module type has no default and must be named on create; status defaults to Active.
    """

    _model = Module
    _modelname = "module"
    _identifiers = (
        "parent_module_bay__parent_device__name",
        "parent_module_bay__name",
        "parent_module_bay__parent_module__parent_module_bay__name",
    )
    _attributes = (
        "module_type__manufacturer__name",
        "module_type__model",
        "status__name",
        "role__name",
        "tenant__name",
        "serial",
        "asset_tag",
        "tags",
    )

    parent_module_bay__parent_device__name: str = Field(description="the device the module is in")
    parent_module_bay__name: str = Field(description="the bay the module is in")
    parent_module_bay__parent_module__parent_module_bay__name: str | None = Field(
        None, description="the bay the module's parent module is in; null for a module in a bay of the device"
    )
    module_type__manufacturer__name: str
    module_type__model: str
    status__name: str = "Active"
    role__name: str | None = None
    tenant__name: str | None = None
    serial: str | None = None
    asset_tag: str | None = None
    tags: list[TagDict] = []

    @classmethod
    def get_queryset(cls) -> QuerySet[Module]:
        """Modules in no device (kept at a location, or in a bay of a module kept there) have no key here."""
        return Module.objects.filter(parent_module_bay__parent_device__isnull=False)


class InterfaceModel(BuiltinModel):
    """An interface of a device itself, identified by its name on its device (the device looked up by name).

    `type` (e.g. "1000base-t", "virtual") has no default: Nautobot requires one and has none.
    Interfaces Nautobot created from the device type's templates are upserted like any other.
    Interfaces of the device's modules are `moduleinterface`'s: they may share a name with the
    device's own, and this key never names them.
    """

    _model = Interface
    _modelname = "interface"
    _identifiers: ClassVar[tuple[str, ...]] = ("name", "device__name")
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

    @classmethod
    def get_queryset(cls) -> QuerySet[Interface]:
        """The device's own interfaces: Nautobot keeps a module's unique per module, not per device."""
        return Interface.objects.filter(module__isnull=True)


class ModuleInterfaceModel(_NamesAModule, InterfaceModel):
    """An interface of a module on a device, identified by its name on the module.

    The module is named as `module` names it (its bays on the device), with `module__` before each
    lookup; `device__name` is the device the module is in. Interfaces Nautobot created from the
    module type's templates are upserted like any other.
    """

    _modelname = "moduleinterface"
    _identifiers = (
        "name",
        "device__name",
        "module__parent_module_bay__name",
        "module__parent_module_bay__parent_module__parent_module_bay__name",
    )

    module__parent_module_bay__name: str = Field(description=_IN_BAY)
    module__parent_module_bay__parent_module__parent_module_bay__name: str | None = Field(
        None, description=_PARENT_IN_BAY
    )

    @classmethod
    def get_queryset(cls) -> QuerySet[Interface]:
        """Interfaces of modules installed in a device."""
        return Interface.objects.filter(module__isnull=False, device__isnull=False)
