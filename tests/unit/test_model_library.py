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
        # An interface of a module is keyed otherwise than one of the device: a model of its own.
        django_name = "moduleinterface" if name == "moduleinterface" else model._model._meta.model_name  # type: ignore[attr-defined]
        assert model.get_type() == name == django_name
        assert model._children == {}, f"{name}: streamsync models are flat"


def test_the_two_interface_models_split_nautobots_interfaces_between_them() -> None:
    """A device's own interfaces and its modules' share names: each key names one of one kind only."""
    device, module = MODELS["interface"], MODELS["moduleinterface"]
    assert device._identifiers == ("name", "device__name")  # what producers have always sent
    assert set(module._identifiers) - set(device._identifiers) == {
        "module__parent_module_bay__name",
        "module__parent_module_bay__parent_module__parent_module_bay__name",
    }
    assert module._attributes == device._attributes


def test_a_module_is_named_alike_wherever_a_key_names_it() -> None:
    """By the bay it sits in and the bay its parent module sits in, on one device."""
    bay = ("parent_module_bay__name", "parent_module_bay__parent_module__parent_module_bay__name")
    module_ids = MODELS["module"]._identifiers
    assert set(module_ids) == {"parent_module_bay__parent_device__name", *bay}
    assert {f"parent_module__{name}" for name in bay} < set(MODELS["modulebay"]._identifiers)
    assert {f"module__{name}" for name in bay} < set(MODELS["moduleinterface"]._identifiers)


def test_builtin_models_are_listed_parents_first() -> None:
    position = {model: i for i, model in enumerate(MODELS.values())}
    by_orm = {model._model: model for model in MODELS.values()}  # type: ignore[attr-defined]
    # The one cycle: a bay of a module refers to the module, which sits in a bay; bays go first.
    cycle = {(MODELS["modulebay"], MODELS["module"])}
    for model in MODELS.values():
        for name in (*model._identifiers, *model._attributes):
            parent = by_orm.get(_orm_field(model, name).related_model)
            if parent is not None and parent is not model and (model, parent) not in cycle:
                assert position[parent] < position[model], f"{model.get_type()}.{name} refers to a later model"


def test_the_registry_puts_parents_first_whatever_order_a_source_names_the_models_in() -> None:
    from streamsync.sync.registry import ModelRegistry

    registry = ModelRegistry(reversed(MODELS.values()))
    rank = {model.get_type(): i for i, model in enumerate(registry.in_order(registry))}
    pairs = [
        ("status", "location"),
        ("tenantgroup", "tenant"),
        ("tenant", "module"),
        ("moduletype", "module"),
        ("device", "modulebay"),
        ("device", "module"),
        ("module", "moduleinterface"),
        ("device", "interface"),
    ]
    assert [(a, b) for a, b in pairs if rank[a] > rank[b]] == []
    # In the bay/module cycle the model the source lists first goes first.
    assert rank["module"] < rank["modulebay"]
    forward = ModelRegistry(MODELS.values())
    order = [model.get_type() for model in forward.in_order(forward)]
    assert order.index("modulebay") < order.index("module")


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
