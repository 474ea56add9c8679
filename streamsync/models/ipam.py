"""IPAM models: VLAN groups and VLANs, namespaces, prefixes and IP addresses."""

import ipaddress
from typing import Annotated, Any

from diffsync.exceptions import ObjectCrudException
from nautobot.ipam.models import VLAN, IPAddress, Namespace, Prefix, VLANGroup
from nautobot_ssot.contrib.typeddicts import TagDict
from pydantic import AfterValidator

from streamsync.models.base import BuiltinModel


def _canonical_ip(value: str) -> str:
    """The address as Nautobot stores it (`2001:DB8::1` is `2001:db8::1`): keys must match stored values."""
    return str(ipaddress.ip_address(value))


# An IP address or network address, normalised when an event is checked.
IPText = Annotated[str, AfterValidator(_canonical_ip)]


class VLANGroupModel(BuiltinModel):
    """A VLAN group, identified by its name (unique in Nautobot); its `range` bounds its VLANs' VIDs."""

    _model = VLANGroup
    _modelname = "vlangroup"
    _identifiers = ("name",)
    _attributes = ("location__name", "range", "description", "tags")

    name: str
    location__name: str | None = None
    range: str = "1-4094"
    description: str = ""
    tags: list[TagDict] = []


class VLANModel(BuiltinModel):
    """A VLAN, identified by its VID within a VLAN group (no group: a global VLAN)."""

    _model = VLAN
    _modelname = "vlan"
    _identifiers = ("vid", "vlan_group__name")
    _attributes = ("name", "status__name", "role__name", "tenant__name", "description", "tags")

    vid: int
    vlan_group__name: str | None = None
    name: str
    # Nautobot requires a status; a source that has no notion of one gets Nautobot's usual default.
    status__name: str = "Active"
    role__name: str | None = None
    tenant__name: str | None = None
    description: str = ""
    tags: list[TagDict] = []


class NamespaceModel(BuiltinModel):
    """A namespace (an IP space of its own, like a VRF), identified by its name (unique in Nautobot)."""

    _model = Namespace
    _modelname = "namespace"
    _identifiers = ("name",)
    _attributes = ("tenant__name", "description", "tags")

    name: str
    tenant__name: str | None = None
    description: str = ""
    tags: list[TagDict] = []


class PrefixModel(BuiltinModel):
    """A prefix, identified by network and length within its namespace (Nautobot's uniqueness)."""

    _model = Prefix
    _modelname = "prefix"
    _identifiers = ("network", "prefix_length", "namespace__name")
    _attributes = ("type", "status__name", "role__name", "tenant__name", "description", "tags")

    network: IPText
    prefix_length: int
    namespace__name: str = "Global"
    type: str = "network"
    status__name: str = "Active"
    role__name: str | None = None
    tenant__name: str | None = None
    description: str = ""
    tags: list[TagDict] = []


class IPAddressModel(BuiltinModel):
    """An IP address, identified by host and mask length within a namespace.

    Nautobot keeps an address under the narrowest prefix of its namespace that contains it and
    moves it when a narrower prefix appears, so the parent prefix cannot be part of the key (a
    key must not change under the producer). The key names the namespace as
    `parent__namespace__name`, Nautobot's own natural key for addresses; on create the parent
    is found in that namespace, and no containing prefix yet is a failure worth retrying.
    """

    _model = IPAddress
    _modelname = "ipaddress"
    _identifiers = ("host", "mask_length", "parent__namespace__name")
    _attributes = ("type", "status__name", "role__name", "tenant__name", "dns_name", "description", "tags")

    host: IPText
    mask_length: int
    parent__namespace__name: str = "Global"
    type: str = "host"
    status__name: str = "Active"
    role__name: str | None = None
    tenant__name: str | None = None
    dns_name: str = ""
    description: str = ""
    tags: list[TagDict] = []

    @classmethod
    def _lookup_and_set_foreign_keys(cls, foreign_keys: dict[str, Any], obj: Any, adapter: Any) -> None:
        """Resolve `parent__namespace__name` to the closest containing prefix, as Nautobot would."""
        parent = foreign_keys.pop("parent", None)
        if parent is not None:
            name = parent["namespace__name"]
            try:
                namespace = adapter.get_from_orm_cache({"name": name}, Namespace)
            except Namespace.DoesNotExist as error:
                raise ObjectCrudException(f"no namespace {name!r}") from error
            try:
                obj.parent = Prefix.objects.filter(namespace=namespace).get_closest_parent(obj.host, include_self=True)
            except Prefix.DoesNotExist as error:
                raise ObjectCrudException(f"no prefix in namespace {name!r} contains {obj.host}") from error
        super()._lookup_and_set_foreign_keys(foreign_keys, obj, adapter)
