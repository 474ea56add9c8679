"""Tenancy models: the tenant group tree and tenants."""

from nautobot.tenancy.models import Tenant, TenantGroup
from nautobot_ssot.contrib.typeddicts import TagDict

from streamsync.models.base import BuiltinModel


class TenantGroupModel(BuiltinModel):
    """A tenant group, identified by its name (unique in Nautobot, at any depth of the tree).

    `parent__name` is an attribute, as for location types: a group can move under another parent
    and keep its key. A group before its parent waits for it (the parent may arrive later).
    """

    _model = TenantGroup
    _modelname = "tenantgroup"
    _identifiers = ("name",)
    _attributes = ("parent__name", "description")

    name: str
    parent__name: str | None = None
    description: str = ""


class TenantModel(BuiltinModel):
    """A tenant, identified by its name (unique in Nautobot); most other models point at one by name."""

    _model = Tenant
    _modelname = "tenant"
    _identifiers = ("name",)
    _attributes = ("tenant_group__name", "description", "comments", "tags")

    name: str
    tenant_group__name: str | None = None
    description: str = ""
    comments: str = ""
    tags: list[TagDict] = []
