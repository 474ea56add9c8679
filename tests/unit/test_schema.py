"""The JSON Schemas producers validate against say what the worker accepts, no more and no less."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamsync.contract.envelope import MAX_DEPTH, SCHEMA_V1, EnvelopeError, decode
from streamsync.contract.schema import envelope_schema
from streamsync.models import BUILTIN_MODELS, builtin_model
from streamsync.sync.registry import ModelRegistry, RejectedEvent
from streamsync.sync.schema import REQUIRED_ON_CREATE, source_schema

ROOT = Path(__file__).resolve().parents[2]
ENVELOPE = jsonschema.Draft202012Validator(envelope_schema())


def test_the_committed_schema_is_the_codes() -> None:
    committed = json.loads((ROOT / "docs" / "schema" / "event-v1.json").read_text())
    assert committed == envelope_schema(), "regenerate it: streamsync schema > docs/schema/event-v1.json"


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(envelope_schema())


# ---------------------------------------------------------------- the envelope, property-tested

MISSING = object()

# Strings with what the worker refuses (NUL, lone surrogates) among ordinary and astral characters.
awkward = st.text(alphabet=st.sampled_from(["a", "é", "🚀", " ", "\n", "\x00", "\ud800", "\udfff", '"', "\\"]))
strings = st.one_of(st.text(max_size=30), awkward)
numbers = st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False))
scalars = st.one_of(st.none(), st.booleans(), numbers, strings)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(strings, inner, max_size=3)),
    max_leaves=20,
)


def _nested(levels: int, as_dict: bool) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = {"a": value} if as_dict else [value]
    return value


# Around the depth limit: an attribute value nesting 30 levels is the deepest the envelope holds.
deep = st.builds(_nested, st.integers(MAX_DEPTH - 4, MAX_DEPTH + 2), st.booleans())


def _stamp(moment: datetime, sep: str, precision: int, offset: str) -> str:
    text = moment.strftime(f"%Y-%m-%d{sep}%H:%M:%S")
    return text + (f".{moment.microsecond:06d}"[: precision + 1] if precision else "") + offset


# A string of digits: the worker takes it as Unix time too (pydantic's leniency), the schema does not
# offer it (see test_a_string_of_digits_for_ts_is_the_one_form_the_worker_reads_beyond_the_schema).
NUMERIC = re.compile(r"^[+-]?[0-9]*\.?[0-9]*$")

# What producers send for ts, and near misses: impossible dates and times, odd separators, Unix time.
calendar = st.builds(
    "{:04d}-{:02d}-{:02d}{}{:02d}:{:02d}{}{}".format,
    st.integers(0, 9999),
    st.integers(0, 13),
    st.integers(0, 32),
    st.sampled_from(["T", "t", " ", "_", "x"]),
    st.integers(0, 25),
    st.integers(0, 61),
    st.sampled_from(["", ":00", ":59", ":60", ":00.5", ":00,123456789", ":00."]),
    st.sampled_from(["", "Z", "z", "+01:00", "-0530", "+24:00", "+01", " Z"]),
)
timestamps = st.one_of(
    st.builds(
        _stamp,
        st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
        st.sampled_from(["T", " ", "t"]),
        st.integers(0, 6),
        st.sampled_from(["", "Z", "+02:00", "-08:00"]),
    ),
    calendar,
    calendar.map(lambda text: text[:10]),
    st.integers(-62_135_596_800_001, 253_402_300_800_001),
    st.floats(-7e13, 3e14, allow_nan=False),
    st.sampled_from([-62_135_596_800_000, -62_135_596_800_001, 253_402_300_799_999, 253_402_300_800_000]),
    st.text(max_size=25).filter(lambda text: not NUMERIC.match(text)),
    st.from_regex(r"[+-]?[0-9]{0,16}[eE_x ][0-9]{0,3}", fullmatch=True),
)

# Identifier values: JSON scalars; a float with a fraction is refused by both (100.0: see below).
key_values = st.one_of(
    st.none(), st.booleans(), st.integers(), strings, st.floats(allow_nan=False).filter(lambda f: not f.is_integer())
)


def _field(valid: st.SearchStrategy[Any], *invalid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(valid, st.just(MISSING), *invalid)


envelopes = st.fixed_dictionaries(
    {
        "schema": _field(st.just(SCHEMA_V1), st.sampled_from(["streamsync.event/v2", "", None, 1])),
        "id": _field(st.text(max_size=5), st.text(min_size=195, max_size=205), awkward, numbers),
        "source": _field(strings, st.text(min_size=98, max_size=102), st.none()),
        "model": _field(strings, st.text(min_size=98, max_size=102), st.integers()),
        "op": _field(st.sampled_from(["upsert", "delete"]), st.sampled_from(["UPSERT", "", None, 1, ["upsert"]])),
        "key": _field(st.dictionaries(strings, key_values, max_size=3), st.lists(scalars, max_size=2), strings),
        "attrs": _field(st.dictionaries(strings, st.one_of(values, deep), max_size=3), st.lists(scalars), numbers),
        "ts": _field(timestamps, st.none(), st.booleans()),
        "extra": st.one_of(
            st.just(MISSING), st.dictionaries(st.sampled_from(["schema_version", "attributes", "x"]), scalars)
        ),
    }
)


def _document(fields: dict[str, Any]) -> dict[str, Any]:
    document = {name: value for name, value in fields.items() if value is not MISSING and name != "extra"}
    if fields["extra"] is not MISSING:
        document.update(fields["extra"])
    return document


def _decodes(raw: bytes) -> bool:
    try:
        decode(raw)
    except EnvelopeError:
        return False
    return True


VALID = {
    "schema": SCHEMA_V1,
    "id": "e1",
    "source": "ipam",
    "model": "vlan",
    "op": "upsert",
    "key": {"vid": 100, "vlan_group__name": "dc1"},
    "attrs": {"name": "users"},
    "ts": "2026-11-25T17:00:00.123Z",
    "extra": MISSING,
}


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes, st.booleans())
@example(VALID, True)
@example({**VALID, "ts": "2024-02-29"}, True)
@example({**VALID, "ts": "2100-02-29T00:00:00Z"}, True)
@example({**VALID, "ts": 253_402_300_799_999.9}, True)
@example({**VALID, "attrs": {"a": _nested(MAX_DEPTH - 2, False)}}, True)
@example({**VALID, "attrs": {"a": _nested(MAX_DEPTH - 1, True)}}, True)
@example({**VALID, "id": MISSING, "attrs": MISSING, "ts": MISSING}, True)
@example({**VALID, "extra": {"schema_version": SCHEMA_V1}}, True)
def test_the_schema_accepts_exactly_what_the_decoder_accepts(fields: dict[str, Any], ascii_only: bool) -> None:
    _agree(_document(fields), ascii_only)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(VALID)), st.data(), st.booleans())
def test_the_schema_and_the_decoder_agree_on_each_field_of_a_valid_envelope(
    name: str, data: st.DataObject, ascii_only: bool
) -> None:
    """One field at a time: a field's own difference is not hidden behind another field's."""
    fields = {**VALID, name: data.draw(envelopes.map(lambda drawn: drawn[name]))}
    _agree(_document(fields), ascii_only)


def _agree(document: dict[str, Any], ascii_only: bool) -> None:
    """The schema accepts the JSON text's document exactly when the decoder accepts the text."""
    raw = json.dumps(document, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    try:
        # What the text says: escaped "\ud800\udfff" is one character, not the two surrogates it was made of.
        seen = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:  # surrogates written raw: no UTF-8, no JSON text; the schema judges the document
        seen = document
    valid, decodes = ENVELOPE.is_valid(seen), _decodes(raw)
    assert valid == decodes, f"schema says {valid}, decoder says {decodes}: {raw[:500]!r}"


def test_a_string_of_digits_for_ts_is_the_one_form_the_worker_reads_beyond_the_schema() -> None:
    """pydantic reads "1700000000" as Unix time; the contract offers ISO 8601 strings and numbers only."""
    document = {**_document(VALID), "ts": "1700000000"}
    assert _decodes(json.dumps(document).encode())
    assert not ENVELOPE.is_valid(document)
    assert ENVELOPE.is_valid({**document, "ts": 1700000000})


def test_the_one_difference_json_schema_cannot_express_an_integer_written_with_a_fraction() -> None:
    """JSON Schema's integer includes 100.0; the worker compares identifiers as written and refuses it."""
    document = {**_document(VALID), "key": {"vid": 100.0, "vlan_group__name": "dc1"}}
    assert ENVELOPE.is_valid(document)
    assert not _decodes(json.dumps(document).encode())
    assert "100, not 100.0" in envelope_schema()["properties"]["key"]["description"]


def test_a_timestamp_in_the_schema_is_one_the_worker_reads_as_that_moment() -> None:
    moment = datetime(2026, 11, 25, 17, 0, 0, 123000, tzinfo=UTC)
    for text in ["2026-11-25T17:00:00.123Z", "2026-11-25 18:00:00.123+01:00", "2026-11-25t17:00:00.123z"]:
        document = {**_document(VALID), "ts": text}
        assert ENVELOPE.is_valid(document)
        assert decode(json.dumps(document)).ts == moment
    assert decode(json.dumps({**_document(VALID), "ts": 1764090000})).ts == datetime(2025, 11, 25, 17, 0, tzinfo=UTC)
    assert moment - timedelta(0) == moment


# ---------------------------------------------------------------- a source's models

REGISTRY = ModelRegistry(builtin_model(name) for name in BUILTIN_MODELS)
SOURCE = source_schema("cmdb", REGISTRY)
SOURCE_VALIDATOR = jsonschema.Draft202012Validator(SOURCE)


def _models(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        rule["if"]["properties"]["model"]["const"]: rule["then"]["properties"]
        for rule in schema["allOf"]
        if "if" in rule
    }


def test_a_source_schema_lists_its_models_parents_first_with_what_a_create_needs() -> None:
    jsonschema.Draft202012Validator.check_schema(SOURCE)
    models = _models(SOURCE)
    assert list(models) == [m.get_type() for m in REGISTRY.in_order(REGISTRY)]
    required = {name: schema["attrs"][REQUIRED_ON_CREATE] for name, schema in models.items()}
    assert required["vlan"] == ["name"]
    assert required["interface"] == ["type"]
    assert required["device"] == ["device_type__manufacturer__name", "device_type__model", "role__name"]
    assert required["location"] == ["location_type__name"]
    assert required["tenant"] == []
    assert models["device"]["key"]["required"] == ["name", "location__name"]
    assert models["vlan"]["key"]["properties"]["vid"] == {"type": "integer"}


def test_a_source_schema_names_the_values_nautobot_allows_where_the_model_knows_them() -> None:
    attrs = {name: schema["attrs"]["properties"] for name, schema in _models(SOURCE).items()}
    assert {"1000base-t", "virtual", "lag"} <= set(attrs["interface"]["type"]["enum"])
    assert attrs["prefix"]["type"]["enum"] == ["container", "network", "pool"]
    assert attrs["devicetype"]["subdevice_role"]["enum"] == ["parent", "child", "parent-child", ""]
    assert "enum" not in attrs["interface"]["status__name"]  # a status is a database row, not a fixed choice
    assert attrs["interface"]["mtu"]["default"] is None


def test_a_source_schema_says_how_modules_and_their_interfaces_are_named() -> None:
    models = _models(SOURCE)
    nullable = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    assert models["moduleinterface"]["key"]["properties"] == {
        "name": {"type": "string"},
        "device__name": {"type": "string"},
        "module__parent_module_bay__name": {
            "type": "string",
            "description": "the bay the interface's module is in, on the key's device",
        },
        "module__parent_module_bay__parent_module__parent_module_bay__name": {
            **nullable,
            "description": (
                "the bay the parent of the interface's module is in; null for a module in a bay of the device"
            ),
        },
    }
    assert models["interface"]["key"]["required"] == ["name", "device__name"]  # unchanged for producers
    assert models["module"]["key"]["required"] == [
        "parent_module_bay__parent_device__name",
        "parent_module_bay__name",
        "parent_module_bay__parent_module__parent_module_bay__name",
    ]
    assert models["modulebay"]["key"]["properties"]["parent_module__parent_module_bay__name"] == {
        **nullable,
        "description": "the bay the bay's module is in; null for a bay of the device",
    }
    required = {name: schema["attrs"][REQUIRED_ON_CREATE] for name, schema in models.items()}
    assert required["module"] == ["module_type__manufacturer__name", "module_type__model"]
    assert required["moduleinterface"] == ["type"]
    assert required["status"] == required["tenantgroup"] == required["modulebay"] == required["moduletype"] == []
    attrs = models["moduleinterface"]["attrs"]["properties"]
    assert attrs["type"] == models["interface"]["attrs"]["properties"]["type"]
    assert models["status"]["attrs"]["properties"]["content_types"] == {
        "items": {"$ref": "#/$defs/ContentTypeDict"},
        "type": "array",
        "default": [],
    }
    assert models["status"]["attrs"]["properties"]["color"] == {"type": "string", "default": "9e9e9e"}
    assert models["tenantgroup"]["attrs"]["properties"]["parent__name"]["default"] is None


def _event(model: str, key: dict[str, Any], attrs: dict[str, Any]) -> dict[str, Any]:
    return {"schema": SCHEMA_V1, "source": "cmdb", "model": model, "op": "upsert", "key": key, "attrs": attrs}


@pytest.mark.parametrize(
    ("model", "key", "attrs"),
    [
        ("vlan", {"vid": 100, "vlan_group__name": "dc1"}, {"name": "users", "tags": [{"name": "t"}]}),
        ("vlan", {"vid": 100, "vlan_group__name": None}, {}),
        ("vlan", {"vid": "100", "vlan_group__name": "dc1"}, {}),
        ("vlan", {"vid": 100}, {}),
        ("vlan", {"vid": 100, "vlan_group__name": "dc1", "x": 1}, {}),
        ("vlan", {"vid": 100, "vlan_group__name": "dc1"}, {"colour": "red"}),
        ("vlan", {"vid": 100, "vlan_group__name": "dc1"}, {"name": 5}),
        ("interface", {"name": "eth0", "device__name": "sw1"}, {"type": "1000base-t", "mtu": 9000}),
        ("interface", {"name": "eth0", "device__name": "sw1"}, {"enabled": None}),
        ("device", {"name": "sw1", "location__name": "dc1"}, {"serial": None}),
        ("location", {"name": "dc1", "parent__name": None}, {"asn": 65000, "tags": []}),
        ("status", {"name": "Staged"}, {"content_types": [{"app_label": "dcim", "model": "module"}]}),
        ("status", {"name": "Staged"}, {"content_types": ["dcim.module"]}),
        ("tenantgroup", {"name": "eu"}, {"parent__name": None}),
        ("moduletype", {"model": "LC-8", "manufacturer__name": "acme"}, {"part_number": "LC"}),
        ("modulebay", {"name": "1", "parent_device__name": "sw1"}, {}),
        (
            "modulebay",
            {
                "name": "1",
                "parent_device__name": "sw1",
                "parent_module__parent_module_bay__name": "slot1",
                "parent_module__parent_module_bay__parent_module__parent_module_bay__name": None,
            },
            {"position": "1"},
        ),
        (
            "module",
            {
                "parent_module_bay__parent_device__name": "sw1",
                "parent_module_bay__name": "slot1",
                "parent_module_bay__parent_module__parent_module_bay__name": None,
            },
            {"module_type__model": "LC-8", "serial": None},
        ),
        ("moduleinterface", {"name": "eth0", "device__name": "sw1"}, {"type": "1000base-t"}),
        (
            "moduleinterface",
            {
                "name": "eth0",
                "device__name": "sw1",
                "module__parent_module_bay__name": "slot1",
                "module__parent_module_bay__parent_module__parent_module_bay__name": None,
            },
            {"type": "1000base-t"},
        ),
        (
            "moduleinterface",
            {
                "name": "eth0",
                "device__name": "sw1",
                "module__parent_module_bay__name": None,
                "module__parent_module_bay__parent_module__parent_module_bay__name": None,
            },
            {},
        ),
        ("nope", {"name": "x"}, {}),
    ],
)
def test_a_source_schema_accepts_an_events_key_and_attrs_as_the_registry_does(
    model: str, key: dict[str, Any], attrs: dict[str, Any]
) -> None:
    from streamsync.contract.envelope import Event

    event = Event.model_validate(_event(model, key, attrs))
    try:
        REGISTRY.split(event)
        accepted = True
    except RejectedEvent:
        accepted = False
    assert SOURCE_VALIDATOR.is_valid(_event(model, key, attrs)) == accepted


def test_a_source_schema_refuses_another_sources_events_and_interface_types_nautobot_does_not_know() -> None:
    key = {"name": "eth0", "device__name": "sw1"}
    assert SOURCE_VALIDATOR.is_valid(_event("interface", key, {"type": "virtual"}))
    assert not SOURCE_VALIDATOR.is_valid(_event("interface", key, {"type": "warp-drive"}))
    assert not SOURCE_VALIDATOR.is_valid({**_event("interface", key, {}), "source": "ipam"})


def test_attributes_are_read_leniently_beyond_what_the_schema_states() -> None:
    """The worker coerces attribute values as pydantic's lax mode does; the schema states the types to send."""
    from streamsync.contract.envelope import Event

    document = _event("interface", {"name": "eth0", "device__name": "sw1"}, {"enabled": "yes", "mtu": "9000"})
    _, _, attrs = REGISTRY.split(Event.model_validate(document))
    assert attrs == {"enabled": True, "mtu": 9000}
    assert not SOURCE_VALIDATOR.is_valid(document)


def test_the_schema_command_prints_the_envelopes_or_a_sources() -> None:
    from click.testing import CliRunner

    from streamsync.cli import main

    runner = CliRunner()
    envelope = runner.invoke(main, ["schema"])
    assert envelope.exit_code == 0, envelope.output
    assert json.loads(envelope.output) == envelope_schema()

    ipam = runner.invoke(main, ["schema", "ipam"])  # deploy/nautobot_config.py: source ipam writes VLANs
    assert ipam.exit_code == 0, ipam.output
    assert list(_models(json.loads(ipam.stdout))) == ["vlan"]

    unknown = runner.invoke(main, ["schema", "nope"])
    assert unknown.exit_code != 0
    assert "unknown source 'nope'" in unknown.output


def test_the_models_command_states_what_the_schema_states() -> None:
    """`streamsync models` is the schema read by people: every model's key, attrs, required, choices and defaults."""
    from streamsync.sync.schema import model_facts

    by_model = _models(source_schema("all", REGISTRY))
    facts = model_facts(REGISTRY)
    assert [model.model for model in facts] == list(by_model)  # parents first, as the schema lists them
    for model in facts:
        schema = by_model[model.model]
        assert model.nautobot_model == builtin_model(model.model)._model._meta.label_lower  # type: ignore[attr-defined]
        assert [f.name for f in model.key] == schema["key"]["required"] == list(schema["key"]["properties"])
        attrs = schema["attrs"]["properties"]
        assert [f.name for f in model.attrs] == list(attrs)
        assert [f.name for f in model.attrs if f.required_on_create] == schema["attrs"][REQUIRED_ON_CREATE]
        for field in model.attrs:
            stated = attrs[field.name]
            assert (field.has_default, field.default) == ("default" in stated, stated.get("default")), field.name
            enum = [value for value in stated.get("enum", []) if value is not None]
            assert field.choices == (enum or None), field.name
    interface = next(model for model in facts if model.model == "interface")
    kind = next(field for field in interface.attrs if field.name == "type")
    assert kind.required_on_create and "1000base-t" in (kind.choices or [])
    location = next(model for model in facts if model.model == "location")
    assert {f.name: f.type for f in location.key} == {"name": "string", "parent__name": "string or null"}
    tags = next(field for field in location.attrs if field.name == "tags")
    assert tags.type == "list of {name: string}"


def test_the_models_command_lists_a_sources_models_as_text_or_json() -> None:
    from click.testing import CliRunner

    from streamsync.cli import main

    runner = CliRunner()  # without a database, stderr says custom fields are left out: stdout is the same
    text = runner.invoke(main, ["models", "ipam"])  # deploy/nautobot_config.py: source ipam writes VLANs
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[0] == "source ipam: 1 model(s) on streamsync.ipam.events, parents first"
    assert lines[2].startswith("vlan (Nautobot ipam.vlan): A VLAN")
    assert re.fullmatch(r"    vid +integer", lines[4])
    assert re.fullmatch(r"    name \* +string", lines[7])
    assert re.fullmatch(r"    status__name +string, default \"Active\"", lines[8])

    as_json = runner.invoke(main, ["models", "--json"])  # every configured source
    assert as_json.exit_code == 0, as_json.output
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [(row["source"], row["model"]) for row in rows] == [("ipam", "vlan")]
    assert [field["name"] for field in rows[0]["key"]] == ["vid", "vlan_group__name"]

    unknown = runner.invoke(main, ["models", "nope"])
    assert unknown.exit_code != 0
    assert "unknown source 'nope'" in unknown.output
