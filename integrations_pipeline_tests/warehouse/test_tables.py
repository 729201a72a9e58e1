"""table_spec_for: columns, types and keys derived from the real connector specs."""

from __future__ import annotations

import dataclasses

import pytest

from integrations_pipeline.engine.errors import ConfigError
from integrations_pipeline.warehouse import Column, TableSpec, column_type_for, table_spec_for


def test_trackstar_inventory_is_per_connection(connectors):
    spec = table_spec_for(connectors["trackstar"], "inventory")
    assert (spec.schema, spec.name, spec.full_name) == ("trackstar", "inventory", "trackstar.inventory")
    assert spec.primary_key == ("_connection_id", "id")
    assert spec.cursor_field == "updated_date"
    assert spec.columns[0] == Column("_connection_id", "string")
    assert spec.per_connection
    types = {c.name: c.type for c in spec.columns}
    assert types == {
        "_connection_id": "string",
        "id": "string",
        "warehouse_customer_id": "string",
        "created_date": "timestamp",
        "updated_date": "timestamp",
        "name": "string",
        "sku": "string",
        "unit_cost": "number",
        "active": "boolean",
        "awaiting": "integer",
        "onhand": "integer",
        "committed": "integer",
        "unfulfillable": "integer",
        "fulfillable": "integer",
        "unsellable": "integer",
        "sellable": "integer",
        "substitute_skus": "json",
        "inventory_by_warehouse_id": "json",
        "lots": "json",
        "measurements": "json",
        "locations": "json",
        "external_system_url": "string",
        "trackstar_tags": "json",
        "additional_fields": "json",
    }
    # schema order is kept, after the connection column
    props = list(connectors["trackstar"].streams["inventory"].json_schema["properties"])
    assert list(spec.column_names) == ["_connection_id", *props]


@pytest.mark.parametrize("stream", ["inventory", "products", "orders", "warehouses", "inbound_shipments", "returns"])
def test_every_trackstar_stream(connectors, stream):
    spec = table_spec_for(connectors["trackstar"], stream)
    assert spec.primary_key == ("_connection_id", "id")
    assert spec.cursor_field == "updated_date"
    assert spec.column("updated_date").type == "timestamp"
    assert spec.column("additional_fields").type == "json"
    assert spec.column_names.count("_connection_id") == 1


def test_salestrekker_deals(connectors):
    spec = table_spec_for(connectors["salestrekker"], "deals")
    assert (spec.schema, spec.name) == ("salestrekker", "deals")
    assert spec.primary_key == ("id",)
    assert spec.cursor_field == "updatedAt"
    assert not spec.per_connection
    types = {c.name: c.type for c in spec.columns}
    assert types == {
        "id": "string",
        "idOwner": "string",
        "isActive": "boolean",
        "timeStamp": "timestamp",
        "updatedAt": "timestamp",
        "ref": "string",
        "idWorkflow": "string",
        "idStage": "string",
        "idClients": "json",
        "idContacts": "json",
        "idLabels": "json",
        "name": "string",
        "description": "string",
        "values": "json",
        "isWon": "boolean",
        "isLost": "boolean",
        "isSettled": "boolean",
        "wonAt": "timestamp",
        "lostAt": "timestamp",
        "settledAt": "timestamp",
    }


def test_salestrekker_contacts_and_workflows(connectors):
    contacts = table_spec_for(connectors["salestrekker"], "contacts")
    assert [(c.name, c.type) for c in contacts.columns] == [
        ("id", "string"),
        ("idOwner", "string"),
        ("isActive", "boolean"),
        ("updatedAt", "timestamp"),
        ("person", "json"),
    ]
    workflows = table_spec_for(connectors["salestrekker"], "workflows")
    assert workflows.cursor_field is None  # full refresh: the latest write wins
    assert workflows.primary_key == ("id",)
    assert [c.type for c in workflows.columns] == ["string", "string", "json"]


def test_every_builtin_stream_maps(connectors):
    for connector in connectors.values():
        for stream in connector.streams:
            spec = table_spec_for(connector, stream)
            assert spec.schema == connector.name and spec.name == stream
            assert set(spec.primary_key) <= set(spec.column_names)


@pytest.mark.parametrize(
    ("prop", "expected"),
    [
        ({"type": "string"}, "string"),
        ({"type": ["string", "null"]}, "string"),
        ({"type": "string", "format": "date-time"}, "timestamp"),
        ({"type": ["null", "string"], "format": "date-time"}, "timestamp"),
        ({"type": "string", "format": "date"}, "string"),
        ({"type": "integer"}, "integer"),
        ({"type": ["integer", "null"]}, "integer"),
        ({"type": "number"}, "number"),
        ({"type": "boolean"}, "boolean"),
        ({"type": "object"}, "json"),
        ({"type": ["array", "null"]}, "json"),
        ({"type": ["string", "integer"]}, "json"),
        ({"type": ["string", "number", "null"]}, "json"),
        ({}, "json"),
        ({"type": "null"}, "json"),
        ({"anyOf": [{"type": "string"}]}, "json"),
    ],
)
def test_column_type_for(prop, expected):
    assert column_type_for(prop) == expected


def test_unknown_stream_is_a_config_error(connectors):
    with pytest.raises(ConfigError, match="trackstar.*no stream 'nope'.*inventory"):
        table_spec_for(connectors["trackstar"], "nope")


def test_tablespec_validates():
    cols = (Column("id", "string"), Column("v", "integer"))
    spec = TableSpec("s", "t", list(cols), ["id"], None)  # lists are accepted, stored as tuples
    assert spec.columns == cols and spec.primary_key == ("id",)
    hash(spec)
    with pytest.raises(ValueError, match="primary_key columns"):
        TableSpec("s", "t", cols, ("nope",), None)
    with pytest.raises(ValueError, match="cursor_field"):
        TableSpec("s", "t", cols, ("id",), "nope")
    with pytest.raises(ValueError, match="reserved"):
        TableSpec("s", "t", (*cols, Column("_extra", "json")), ("id",), None)
    with pytest.raises(ValueError, match="duplicate"):
        TableSpec("s", "t", (*cols, Column("v", "string")), ("id",), None)
    with pytest.raises(ValueError, match="expected one of"):
        Column("x", "float")  # type: ignore[arg-type]


def test_reserved_property_in_a_spec_is_a_config_error(connectors):
    connector = connectors["salestrekker"]
    stream = connector.streams["workflows"]
    schema = dict(stream.json_schema)
    schema["properties"] = {**schema["properties"], "_synced_at": {"type": "string"}}
    bad_stream = stream.model_copy(update={"json_schema": schema})
    bad = connector.model_copy(update={"streams": {"workflows": bad_stream}})
    with pytest.raises(ConfigError, match="salestrekker.yaml: streams.workflows: .*reserved"):
        table_spec_for(bad, "workflows")


def test_replace_schema_keeps_everything_else(connectors):
    spec = table_spec_for(connectors["trackstar"], "orders")
    moved = dataclasses.replace(spec, schema="elsewhere")
    assert moved.columns == spec.columns and moved.full_name == "elsewhere.orders"
