"""Tenancy models."""

from nautobot.tenancy.models import Tenant
from nautobot_ssot.contrib.typeddicts import TagDict

from streamsync.models.base import BuiltinModel


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
