"""What every built-in model adds to contrib's `NautobotModel`."""

from typing import Any

from diffsync.exceptions import ObjectCrudException
from django.core.exceptions import FieldDoesNotExist
from django.db.models import QuerySet
from nautobot.extras.models import Tag
from nautobot_ssot.contrib import NautobotModel


class BuiltinModel(NautobotModel):
    """A contrib model that loads its list attributes in bulk and only takes tags allowed on it."""

    @classmethod
    def get_queryset(cls) -> QuerySet:
        """Prefetch to-many attributes (tags, content types): contrib prefetches only foreign keys.

        Without this, loading a batch costs one query per object for each list attribute.
        """
        to_many = []
        for name in cls.get_synced_attributes():
            try:
                field = cls._model._meta.get_field(name)
            except FieldDoesNotExist:  # a foreign-key path or a custom field
                continue
            if field.many_to_many or field.one_to_many:
                to_many.append(name)
        return super().get_queryset().prefetch_related(*to_many)

    @classmethod
    def _set_many_to_many_fields(cls, many_to_many_fields: dict[str, Any], obj: Any) -> None:
        """Refuse tags not allowed on this model, as Nautobot's API and UI do (the ORM does not check)."""
        tags = many_to_many_fields.get("tags") or []
        if tags:
            allowed = set(Tag.objects.get_for_model(type(obj)).values_list("pk", flat=True))
            refused = sorted(t.name for t in tags if t.pk not in allowed)
            if refused:
                raise ObjectCrudException(f"tag(s) {refused} not allowed on {obj._meta.verbose_name_plural}")
        super()._set_many_to_many_fields(many_to_many_fields, obj)
