"""The built-in model library agrees with Nautobot's models: names, order, defaults, required fields."""

from __future__ import annotations

import subprocess
import sys

import pytest
from diffsync import DiffSyncModel
from django.db.models import Field
from nautobot_ssot.contrib import NautobotModel
from pydantic_core import PydanticUndefined

from streamsync.models import BUILTIN_MODELS, builtin_model

MODELS = {name: builtin_model(name) for name in BUILTIN_MODELS}


def _orm_field(model: type[DiffSyncModel], name: str) -> Field:
    field: Field = model._model._meta.get_field(name.split("__", 1)[0])  # type: ignore[attr-defined]
    return field


def test_each_builtin_model_is_a_contrib_model_named_as_django_names_it() -> None:
    for name, model in MODELS.items():
        assert issubclass(model, NautobotModel)
        assert model.get_type() == name == model._model._meta.model_name  # type: ignore[attr-defined]
        assert model._children == {}, f"{name}: streamsync models are flat"


def test_builtin_models_are_listed_parents_first() -> None:
    position = {model: i for i, model in enumerate(MODELS.values())}
    by_orm = {model._model: model for model in MODELS.values()}  # type: ignore[attr-defined]
    for model in MODELS.values():
        for name in (*model._identifiers, *model._attributes):
            parent = by_orm.get(_orm_field(model, name).related_model)
            if parent is not None and parent is not model:
                assert position[parent] < position[model], f"{model.get_type()}.{name} refers to a later model"


@pytest.mark.parametrize("name", list(BUILTIN_MODELS))
def test_defaults_are_nautobots_and_only_what_nautobot_requires_is_required(name: str) -> None:
    model = MODELS[name]
    for attr in model._attributes:
        default = model.model_fields[attr].default
        field = _orm_field(model, attr)
        if default is PydanticUndefined:
            # Required here only because Nautobot requires it and has no default either.
            assert not field.blank and not field.has_default(), f"{name}.{attr} need not be required"
        elif "__" in attr:
            # A reference: None where Nautobot allows none; otherwise a default Nautobot users expect.
            assert default is None or (attr, default) in {("status__name", "Active")}, f"{name}.{attr}"
            if default is None:
                assert field.null, f"{name}.{attr}: Nautobot requires it"
        elif field.many_to_many:
            assert default == [], f"{name}.{attr}"
        else:
            assert default == field.get_default(), f"{name}.{attr}: Nautobot's default is {field.get_default()!r}"


def test_the_models_package_imports_nothing_eagerly() -> None:
    """Django imports `streamsync.models` while loading apps, before contrib can be imported."""
    code = (
        "import sys, streamsync.models\n"
        "eager = [m for m in sys.modules if m.startswith(('nautobot_ssot', 'streamsync.models.'))]\n"
        "assert not eager, eager\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
