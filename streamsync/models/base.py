"""What every built-in model adds to contrib's `NautobotModel`."""

from typing import Any

from diffsync.exceptions import ObjectCrudException
from nautobot.extras.models import Tag
from nautobot_ssot.contrib import NautobotModel


class BuiltinModel(NautobotModel):
    """A contrib model that only takes tags allowed on it."""

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
