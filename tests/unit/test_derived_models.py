"""Models derived from Nautobot's metadata: keys, attributes, what is required, what is refused and why.

No database here: a derivation must not read data (a location's natural key in Nautobot grows with
the depth of the location tree stored, which a key must not).
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Any, get_args, get_type_hints

import pytest
from django.test import override_settings
from nautobot.dcim.models import Rack
from nautobot_ssot.contrib import NautobotModel
from nautobot_ssot.contrib.typeddicts import TagDict
from pydantic_core import PydanticUndefined

from streamsync.models import builtin_model
from streamsync.models.base import BuiltinModel
from streamsync.settings import ConfigError, resolve_model
from streamsync.sync.registry import ModelRegistry
from streamsync.sync.schema import model_facts


def _required(model: type[Any]) -> set[str]:
    return {name for name in model._attributes if model.model_fields[name].is_required()}


def _defaults(model: type[Any]) -> dict[str, Any]:
    fields = model.model_fields
    return {name: fields[name].get_default(call_default_factory=True) for name in model._attributes}


def test_a_rack_is_keyed_by_nautobots_natural_key_and_carries_every_editable_field() -> None:
    rack = resolve_model("dcim.rack")
    assert issubclass(rack, BuiltinModel) and issubclass(rack, NautobotModel)
    assert rack.get_type() == "rack"
    assert rack._identifiers == ("name", "rack_group__name", "rack_group__location__name")
    assert rack._attributes == (
        "status__name",
        "role__name",
        "facility_id",
        "location__name",
        "tenant__name",
        "serial",
        "asset_tag",
        "type",
        "width",
        "u_height",
        "desc_units",
        "outer_width",
        "outer_depth",
        "outer_unit",
        "comments",
        "tags",
    )
    assert _required(rack) == {"location__name"}  # as Nautobot requires it; a status defaults to Active
    assert _defaults(rack) == {
        "status__name": "Active",
        "role__name": None,
        "facility_id": None,
        "location__name": PydanticUndefined,  # required: no default of its own
        "tenant__name": None,
        "serial": "",
        "asset_tag": None,
        "type": "",
        "width": 19,
        "u_height": 42,
        "desc_units": False,
        "outer_width": None,
        "outer_depth": None,
        "outer_unit": "",
        "comments": "",
        "tags": [],
    }
    assert get_type_hints(rack)["tags"] == list[TagDict]  # as the built-in models spell tags
    fields = rack.model_fields
    assert fields["rack_group__name"].is_required() is False and fields["name"].is_required()


def test_a_location_is_named_by_its_name_alone_whatever_the_tree() -> None:
    cluster = resolve_model("virtualization.cluster")
    assert cluster._identifiers == ("name",)
    assert [name for name in cluster._attributes if name.startswith("location__")] == ["location__name"]
    assert resolve_model("dcim.rackgroup")._identifiers == ("name", "location__name")


def test_a_circuit_names_its_provider_and_type_by_their_natural_keys() -> None:
    circuit = resolve_model("circuits.circuit")
    assert circuit._identifiers == ("provider__name", "cid")
    assert _required(circuit) == {"circuit_type__name"}
    assert get_type_hints(circuit)["install_date"] == datetime.date | None
    # Nautobot sets the terminations itself (not editable): no event can.
    assert not {"circuit_termination_a", "circuit_termination_z"} & {n.split("__")[0] for n in circuit._attributes}


def test_a_virtual_machine_keys_its_tenant_and_names_what_it_leaves_out() -> None:
    vm = resolve_model("virtualization.virtualmachine")
    assert vm._identifiers == ("cluster__name", "tenant__name", "name")
    assert vm.model_fields["tenant__name"].default is None  # no tenant: null in the key
    assert "primary_ip4__host" in vm._attributes and "local_config_context_data" in vm._attributes
    assert "local_config_context_schema" in (vm.__doc__ or "")  # left out, with why
    assert not any(name.startswith("local_config_context_data_owner") for name in vm._attributes)


def test_many_to_many_fields_are_lists_of_the_related_natural_keys() -> None:
    vrf = resolve_model("ipam.vrf")
    assert vrf._identifiers == ("namespace__name", "rd")
    assert _required(vrf) == {"name"}
    item = get_args(get_type_hints(vrf)["import_targets"])[0]
    assert list(get_type_hints(item)) == ["name"]
    # Assigned through a model with fields of its own: not set by a plain list, so left out and said so.
    assert "devices" not in vrf._attributes
    # What is left out is said where producers read a model's contract (`streamsync models`, the schema).
    (facts,) = model_facts(ModelRegistry([vrf]))
    assert "Not synced: devices (it is assigned through ipam.vrfdeviceassignment" in facts.description
    values = {"namespace__name": "Global", "rd": "1:1", "name": "blue", "import_targets": [{"name": "65000:1"}]}
    assert vrf.model_validate(values).model_dump()["import_targets"] == [{"name": "65000:1"}]


@pytest.mark.parametrize(
    ("label", "builtin"),
    [
        ("dcim.device", "device"),
        ("dcim.interface", "interface"),
        ("ipam.ipaddress", "ipaddress"),
        ("dcim.module", "module"),
    ],
)
def test_a_builtin_model_wins_over_a_derived_one(label: str, builtin: str) -> None:
    assert resolve_model(label) is builtin_model(builtin)


def test_a_model_is_derived_once() -> None:
    assert resolve_model("circuits.provider") is resolve_model("circuits.provider")


@pytest.mark.parametrize(
    ("label", "why"),
    [
        ("dcim.cable", "a cable terminates on two ends, each of several types"),
        ("dcim.virtualchassis", "its master is one of its member devices"),
        ("dcim.frontport", "from its device or module type's templates"),
        ("dcim.consoleport", "from its device or module type's templates"),
        ("extras.note", "generic foreign key(s) ['assigned_object']"),
        ("extras.objectchange", "generic foreign key(s) ['changed_object', 'related_object']"),
        ("dcim.inventoryitem", "from its device or module type's templates"),
        ("dcim.cabletocabletermination", "Nautobot names it by a primary key (pk)"),
        ("load_balancers.loadbalancerpoolmember", "Nautobot names it by a primary key (load_balancer_pool__pk)"),
        ("extras.joblogentry", "Nautobot knows no natural key for it"),
        ("dcim.rackreservation", "its natural key units is a JSONArrayField, not a value an event can carry"),
        ("users.user", "password"),
        ("ipam.ipaddressrange", "its end host is an IP address field"),  # found by the factory round trip
        ("ipam.vrfdeviceassignment", "names the device alone"),  # likewise: 87 factory rows, 20 keys
    ],
)
def test_what_a_derivation_cannot_guess_is_refused_naming_the_model_and_why(label: str, why: str) -> None:
    with pytest.raises(ConfigError) as refused:
        resolve_model(label)
    message = str(refused.value)
    assert message.startswith(f"model {label!r}: {label} cannot be derived: ")
    assert why in message and message.endswith("no built-in model covers it")


def test_an_unknown_model_name_says_how_to_name_one() -> None:
    with pytest.raises(ConfigError, match=r"app_label.model \(dcim.rack\)"):
        resolve_model("rack")
    with pytest.raises(ConfigError, match=r"cannot import model 'dcim\.nosuchmodel'"):
        resolve_model("dcim.nosuchmodel")


def test_derived_models_go_parents_first_whatever_order_a_source_names_them_in() -> None:
    names = ["virtualization.virtualmachine", "virtualization.cluster", "virtualization.clustertype", "tenant"]
    names += ["dcim.rack", "dcim.rackgroup", "circuits.circuit", "circuits.provider", "circuits.circuittype"]
    registry = ModelRegistry(resolve_model(name) for name in names)
    order = [model.get_type() for model in registry.in_order(registry)]
    for child, parent in [
        ("virtualmachine", "cluster"),
        ("virtualmachine", "tenant"),
        ("cluster", "clustertype"),
        ("rack", "rackgroup"),
        ("circuit", "provider"),
        ("circuit", "circuittype"),
    ]:
        assert order.index(parent) < order.index(child), (child, parent)
    assert registry.cycles == []


def _circle(master_required: bool) -> list[Any]:
    """A device model and a virtual chassis model that name each other (no built-in does)."""
    from nautobot.dcim.models import Device, VirtualChassis

    class Member(NautobotModel):
        _model = Device
        _modelname = "member"
        _identifiers = ("name",)
        _attributes = ("virtual_chassis__name",)
        name: str
        virtual_chassis__name: str

    class Chassis(NautobotModel):
        _model = VirtualChassis
        _modelname = "chassis"
        _identifiers = ("name",)
        _attributes = ("master__name",)
        name: str
        master__name: str | None = None

    class RequiredMaster(Chassis):
        master__name: str

    return [Member, RequiredMaster if master_required else Chassis]


def test_a_cycle_is_reported_with_what_is_retried() -> None:
    registry = ModelRegistry(_circle(master_required=False))
    (cycle,) = registry.cycles
    # The model registered first goes first: a member before its chassis is what waits.
    assert (cycle.child, cycle.parent, cycle.fields) == ("member", "chassis", ["virtual_chassis__name"])
    assert cycle.retried and cycle.why == "a member that arrives before its chassis is retried until the chassis exists"
    assert [m.get_type() for m in registry.in_order(registry)] == ["member", "chassis"]  # registered first, first


def test_a_cycle_of_required_references_is_reported_as_never_written() -> None:
    (cycle,) = ModelRegistry(_circle(master_required=True)).cycles
    assert cycle.retried is False
    assert "cannot be written, since neither can exist first" in cycle.why
    assert "member.virtual_chassis__name" in cycle.why and "chassis.master__name" in cycle.why


def test_the_models_command_lists_a_derived_model_and_a_cycle() -> None:
    from click.testing import CliRunner
    from django.conf import settings

    from streamsync.cli import main

    plugins = {**settings.PLUGINS_CONFIG}
    plugins["streamsync"] = {
        **plugins["streamsync"],
        "sources": {"cmdb": {"models": ["circuits.provider", "circuits.circuittype", "circuits.circuit"]}},
    }
    runner = CliRunner()
    with override_settings(PLUGINS_CONFIG=plugins):
        text = runner.invoke(main, ["models", "cmdb"])
        as_json = runner.invoke(main, ["models", "cmdb", "--json"])
        plugins["streamsync"]["sources"]["cmdb"]["models"] = ["modulebay", "module", "dcim.cable"]
        cycle = runner.invoke(main, ["models", "cmdb"])
    assert text.exit_code == 0, text.output
    blocks = text.stdout.split("\n\n")
    assert blocks[0] == "source cmdb: 3 model(s) on streamsync.cmdb.events, parents first"
    circuit = next(block for block in blocks if block.startswith("circuit "))
    lines = circuit.splitlines()
    assert lines[0] == (
        "circuit (Nautobot circuits.circuit): A circuit (circuits.circuit), derived from Nautobot's metadata: "
        "identified by provider__name, cid."
    )
    assert re.fullmatch(r"    provider__name +string", lines[2])
    assert re.fullmatch(r"    cid +string", lines[3])
    assert re.fullmatch(r"    status__name +string, default \"Active\"", lines[5])
    assert re.fullmatch(r"    circuit_type__name \* +string", lines[6])
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [row["model"] for row in rows][-1] == "circuit"
    assert rows[-1]["nautobot_model"] == "circuits.circuit"
    # A refused model fails the command with the reason (the worker's start-up too).
    assert cycle.exit_code != 0 and "dcim.cable cannot be derived: a cable terminates" in cycle.output


def test_the_models_command_reports_a_cycle() -> None:
    from click.testing import CliRunner
    from django.conf import settings

    from streamsync.cli import main

    plugins = {**settings.PLUGINS_CONFIG}
    plugins["streamsync"] = {**plugins["streamsync"], "sources": {"cmdb": {"models": ["modulebay", "module"]}}}
    with override_settings(PLUGINS_CONFIG=plugins):
        result = CliRunner().invoke(main, ["models", "cmdb"])
    assert result.exit_code == 0, result.output
    assert result.stdout.rstrip().splitlines()[-1] == (
        "cycle modulebay -> module -> modulebay: modulebay goes before module (retried): "
        "a modulebay that arrives before its module is retried until the module exists"
    )


def test_a_model_nautobot_names_by_pk_is_referred_to_as_its_builtin_model_keys_it() -> None:
    """Nautobot names a VLAN by its pk; the built-in `vlan` model keys it by `vid` and `vlan_group__name`."""
    vminterface = resolve_model("virtualization.vminterface")
    assert {"untagged_vlan__vid", "untagged_vlan__vlan_group__name"} <= set(vminterface._attributes)
    item = get_args(get_type_hints(vminterface)["tagged_vlans"])[0]
    assert list(get_type_hints(item)) == ["vid", "vlan_group__name"]
    assert vminterface._identifiers == (
        "virtual_machine__cluster__name",
        "virtual_machine__tenant__name",
        "virtual_machine__name",
        "name",
    )


class MyRack(NautobotModel):
    """A user's own model that happens to be called as Django calls racks."""

    _model = Rack
    _modelname = "rack"
    _identifiers = ("name",)
    _attributes = ()
    name: str


def test_two_models_of_one_name_in_a_source_are_refused_as_configuration() -> None:
    from streamsync.settings import SourceSettings

    source = SourceSettings(models=["dcim.rack", "tests.unit.test_derived_models.MyRack"])
    with pytest.raises(ConfigError, match="two models registered as 'rack'"):
        source.registry()
