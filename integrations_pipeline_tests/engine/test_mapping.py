"""Sync mappings: each way to fill a field, transforms, lineage, and the spec errors users will meet."""

from __future__ import annotations

import calendar

import pytest

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.engine.errors import SpecError
from integrations_pipeline.engine.mapping import (
    TRANSFORMS,
    SyncSpec,
    column_lineage,
    map_record,
    parse_sync,
)
from integrations_pipeline.engine.sinks import validate_record
from integrations_pipeline.sandbox.trackstar import TrackstarSandbox
from integrations_pipeline.syncs import load_syncs

CONNECTORS = load_connectors()
SYNCS = load_syncs(CONNECTORS)

ORDER = {
    "id": "ord_1",
    "order_number": "#1001",
    "created_date": "2026-11-01T10:00:00Z",
    "total_price": "240.50",
    "invoice_currency_code": "EUR",
    "ship_to_address": {"email_address": "  Ann@Example.COM "},
    "line_items": [{"sku": "A-1"}, {"sku": None}, {"sku": "B-2"}],
    "status": "shipped",
}


def sync(fields: dict, **extra) -> SyncSpec:
    return SyncSpec.model_validate(
        {"name": "t", "description": "t", "source": "trackstar/orders", "target": "salesmanago/events", "fields": fields, **extra}
    )


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ({"from": "ship_to_address.email_address", "transform": ["strip", "lower"]}, "ann@example.com"),
        ({"value": "PURCHASE"}, "PURCHASE"),
        ({"template": "Order {order_number} ({status})"}, "Order #1001 (shipped)"),
        ({"from": "line_items[].sku", "join": ","}, "A-1,B-2"),
        ({"from": "total_price", "transform": ["number"]}, 240.5),
        ({"from": "created_date", "transform": ["epoch_ms"]}, calendar.timegm((2026, 11, 1, 10, 0, 0)) * 1000),
        ({"from": "created_date", "transform": ["date"]}, "2026-11-01"),
        ({"from": "nope", "default": 0}, 0),
        ({"from": "order_number", "truncate": 3}, "#10"),
        ({"cases": [{"when": {"status": "cancelled"}, "value": "CANCELLED"}, {"when": {"status": "shipped"}, "value": "PURCHASE"}]}, "PURCHASE"),
        ({"cases": [{"when": {"status": "cancelled"}, "value": "CANCELLED"}], "default": "OTHER"}, "OTHER"),
    ],
    ids=["from+transforms", "value", "template", "list-join", "number", "epoch_ms", "date", "default", "truncate", "cases", "cases-default"],
)
def test_each_way_to_fill_a_field(field, expected):
    assert map_record(sync({"x": field}), ORDER) == {"x": expected}


def test_epoch_ms_is_milliseconds_utc():
    assert TRANSFORMS["epoch_ms"]("1970-01-01T00:00:01Z") == 1000


def test_dotted_targets_nest_and_unfillable_fields_are_left_out():
    out = map_record(
        sync({"contactEvent.value": {"from": "total_price", "transform": ["number"]},
              "contactEvent.description": {"template": "{missing} x"},
              "email": {"from": "status", "transform": ["number"]}}),
        ORDER,
    )
    # The template lacks a value and the email cannot be a number: both are left out, so the
    # sink's validation rejects the record naming the field instead of sending a guess.
    assert out == {"contactEvent": {"value": 240.5}}


def test_where_filters_source_records():
    s = sync({"x": {"value": 1}}, where={"status": "cancelled"})
    assert map_record(s, ORDER) is None
    assert map_record(s, {**ORDER, "status": "cancelled"}) == {"x": 1}


def test_column_lineage_names_top_level_source_columns():
    lineage = column_lineage(SYNCS["trackstar_orders_to_salesmanago_events"])
    assert lineage["email"] == ["ship_to_address"]
    assert lineage["contactEvent.products"] == ["line_items"]
    assert lineage["contactEvent.contactExtEventType"] == []
    assert lineage["contactEvent.description"] == ["order_number"]


BROKEN = [
    ({"source": "trackstar/nope"}, "s.yaml: source: got 'trackstar/nope', expected one of ["),
    ({"target": "trakor/nope"}, "s.yaml: target: got 'trakor/nope', expected one of ['datatalks/contact_delete'"),
    ({"fields": {"name": {"from": "name"}, "colour": {"from": "x"}}}, "s.yaml: fields.colour: not a field of sink 'trakor/products', expected one of ['name', 'description', 'price']"),
    ({"fields": {"price": {"from": "unit_price"}}}, "s.yaml: fields: sink 'trakor/products' requires ['name'], which this mapping does not fill"),
    ({"fields": {"name": {"from": "name", "value": "x"}}}, "s.yaml: fields.name: give exactly one of from, value, template, cases (got ['from', 'value'])"),
    ({"fields": {"name": {"from": "name", "transform": ["shout"]}}}, "s.yaml: fields.name.transform: got 'shout', expected one of ['strip', 'lower'"),
    ({"name": "Bad Name"}, "s.yaml: name: String should match pattern"),
]


@pytest.mark.parametrize(("change", "message"), BROKEN, ids=[m.split(": ")[1] + str(i) for i, (_, m) in enumerate(BROKEN)])
def test_broken_sync_specs_name_the_file_and_field(change, message):
    doc = {"name": "s", "description": "d", "source": "trackstar/products", "target": "trakor/products",
           "fields": {"name": {"from": "name"}}, **change}
    with pytest.raises(SpecError) as info:
        parse_sync(doc, "s.yaml", CONNECTORS)
    assert message in str(info.value)


@pytest.mark.parametrize("name", sorted(SYNCS))
def test_every_builtin_sync_maps_sandbox_records_to_valid_sink_records(name):
    s = SYNCS[name]
    sink = CONNECTORS[s.target_connector].sinks[s.target_sink]
    box = TrackstarSandbox(seed=5) if s.source_connector == "trackstar" else None
    assert box is not None, f"add a sandbox source for {s.source}"
    records = [{**r, "_connection_id": "conn_a"} for r in box.truth(s.source_stream, "conn_a")]
    mapped = [m for m in (map_record(s, r) for r in records) if m is not None]
    assert mapped
    problems = {i: validate_record(sink, m) for i, m in enumerate(mapped)}
    assert not {i: p for i, p in problems.items() if p}
