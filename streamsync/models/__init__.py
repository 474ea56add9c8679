"""DiffSync models bound to Nautobot models, in nautobot_ssot.contrib's `NautobotModel` style.

Any contrib model works with streamsync unchanged; the ones in this package ship ready to use.

Django imports this package while it populates its app registry (`streamsync` is a Nautobot
app), before models are ready, and `nautobot_ssot.contrib` cannot be imported that early: so
the model modules are imported on demand, never from here. streamsync's own tables (Django
models) live in `streamsync.models.bookkeeping` and `streamsync.outbox.backlog`; the app config imports them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from diffsync import DiffSyncModel

__all__ = ["BUILTIN_MODELS", "builtin_for", "builtin_model"]

# `_modelname` (Django's own model name; `moduleinterface`: dcim.Interface on a module) -> "module:Class",
# in dependency order (parents before children).
BUILTIN_MODELS = {
    "status": "streamsync.models.extras:StatusModel",
    "tenantgroup": "streamsync.models.tenancy:TenantGroupModel",
    "tenant": "streamsync.models.tenancy:TenantModel",
    "role": "streamsync.models.extras:RoleModel",
    "locationtype": "streamsync.models.dcim:LocationTypeModel",
    "location": "streamsync.models.dcim:LocationModel",
    "vlangroup": "streamsync.models.ipam:VLANGroupModel",
    "vlan": "streamsync.models.ipam:VLANModel",
    "namespace": "streamsync.models.ipam:NamespaceModel",
    "prefix": "streamsync.models.ipam:PrefixModel",
    "ipaddress": "streamsync.models.ipam:IPAddressModel",
    "manufacturer": "streamsync.models.dcim:ManufacturerModel",
    "devicetype": "streamsync.models.dcim:DeviceTypeModel",
    "moduletype": "streamsync.models.dcim:ModuleTypeModel",
    "platform": "streamsync.models.dcim:PlatformModel",
    "device": "streamsync.models.dcim:DeviceModel",
    # A bay of a device before the module in it; a bay of a module after it (their references form a cycle).
    "modulebay": "streamsync.models.dcim:ModuleBayModel",
    "module": "streamsync.models.dcim:ModuleModel",
    "interface": "streamsync.models.dcim:InterfaceModel",
    "moduleinterface": "streamsync.models.dcim:ModuleInterfaceModel",
}


def builtin_model(name: str) -> type[DiffSyncModel]:
    """Import and return the built-in model registered as `name`."""
    module, _, attr = BUILTIN_MODELS[name].partition(":")
    model: type[DiffSyncModel] = getattr(importlib.import_module(module), attr)
    return model


def builtin_for(label: str) -> str | None:
    """The first built-in model bound to Nautobot's model `label` (`dcim.interface`: "interface"), or None."""
    for name in BUILTIN_MODELS:
        orm = getattr(builtin_model(name), "_model", None)
        if orm is not None and orm._meta.label_lower == label:
            return name
    return None
