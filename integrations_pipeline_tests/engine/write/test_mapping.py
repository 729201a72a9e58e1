"""Sync mappings: each way to fill a field, transforms, lineage, and the spec errors users will meet."""

from __future__ import annotations

import calendar

import pytest

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.engine.errors import SpecError
from integrations_pipeline.engine.write.mapping import (
    TRANSFORMS,
    SyncSpec,
    build_lookups,
    column_lineage,
    forwards,
    map_record,
    map_records,
    parse_sync,
    route,
)
from integrations_pipeline.engine.write.plan import validate_record
from integrations_pipeline.sandbox.salestrekker import SalestrekkerSandbox
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
        {
            "name": "t",
            "description": "t",
            "source": "trackstar/orders",
            "target": "salesmanago/events",
            "fields": fields,
            **extra,
        }
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
        (
            {
                "cases": [
                    {"when": {"status": "cancelled"}, "value": "CANCELLED"},
                    {"when": {"status": "shipped"}, "value": "PURCHASE"},
                ]
            },
            "PURCHASE",
        ),
        ({"cases": [{"when": {"status": "cancelled"}, "value": "CANCELLED"}], "default": "OTHER"}, "OTHER"),
    ],
    ids=[
        "from+transforms",
        "value",
        "template",
        "list-join",
        "number",
        "epoch_ms",
        "date",
        "default",
        "truncate",
        "cases",
        "cases-default",
    ],
)
def test_each_way_to_fill_a_field(field, expected):
    assert map_record(sync({"x": field}), ORDER) == {"x": expected}


def test_epoch_ms_is_milliseconds_utc():
    assert TRANSFORMS["epoch_ms"]("1970-01-01T00:00:01Z") == 1000


def test_dotted_targets_nest_and_unfillable_fields_are_left_out():
    out = map_record(
        sync(
            {
                "contactEvent.value": {"from": "total_price", "transform": ["number"]},
                "contactEvent.description": {"template": "{missing} x"},
                "email": {"from": "status", "transform": ["number"]},
            }
        ),
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
    assert lineage["email"] == [("trackstar/orders", "ship_to_address")]
    assert lineage["contactEvent.products"] == [("trackstar/orders", "line_items")]
    assert lineage["contactEvent.contactExtEventType"] == []
    assert lineage["contactEvent.description"] == [("trackstar/orders", "order_number")]


def test_column_lineage_follows_lookups_to_their_stream():
    lineage = column_lineage(SYNCS["salestrekker_deals_to_salesmanago_events"])
    assert lineage["email"] == [("salestrekker/contacts", "person")]
    assert lineage["contactEvent.detail3"] == [("salestrekker/workflows", "name")]
    # A nested lookup (a workflow's stage) is fed by the list column that holds it.
    assert lineage["contactEvent.detail4"] == [("salestrekker/workflows", "stages")]
    assert lineage["contactEvent.externalId"] == [("salestrekker/deals", "id"), ("salestrekker/deals", "idStage")]


BROKEN = [
    ({"source": "trackstar/nope"}, "s.yaml: source: got 'trackstar/nope', expected one of ["),
    ({"target": "trakor/nope"}, "s.yaml: target: got 'trakor/nope', expected one of ['datatalks/contact_delete'"),
    (
        {"fields": {"name": {"from": "name"}, "colour": {"from": "x"}}},
        "s.yaml: fields.colour: not a field of sink 'trakor/products', expected one of ['name', 'description', 'price']",
    ),
    (
        {"fields": {"price": {"from": "unit_price"}}},
        "s.yaml: fields: sink 'trakor/products' requires ['name'], which this mapping does not fill",
    ),
    (
        {"fields": {"name": {"from": "name", "value": "x"}}},
        "s.yaml: fields.name: give exactly one of from, value, template, cases (got ['from', 'value'])",
    ),
    (
        {"fields": {"name": {"from": "name", "transform": ["shout"]}}},
        "s.yaml: fields.name.transform: got 'shout', expected one of ['strip', 'lower'",
    ),
    ({"name": "Bad Name"}, "s.yaml: name: String should match pattern"),
    (
        {"fields": {"name": {"from": "name", "reduce": "median"}}},
        "s.yaml: fields.name.reduce: got 'median', expected one of ['count', 'sum'",
    ),
    (
        {"where": {"name": {"like": "x"}}},
        "s.yaml: where: name: got operator ['like'], expected one of ['not', 'in', 'exists', 'same_as', 'differs_from']",
    ),
    ({"fields": {}}, "s.yaml: give fields (one target record per source record) or emit (several)"),
    (
        {"lookups": {"inv": {"stream": "trackstar/nope", "key": "sku", "match": "sku"}}},
        "s.yaml: lookups.inv.stream: got 'trackstar/nope', expected one of [",
    ),
    (
        {"lookups": {"sku": {"stream": "trackstar/inventory", "key": "sku", "match": "sku"}}},
        "s.yaml: lookups.sku: 'sku' is a column of trackstar/products; name the lookup otherwise",
    ),
    (
        {"emit": [{"name": "a", "fields": {"price": {"value": 1}}}], "fields": {"description": {"value": "x"}}},
        "s.yaml: emit.a: sink 'trakor/products' requires ['name'], which this mapping does not fill",
    ),
    (
        {"via": "datatalks"},
        "s.yaml: via: datatalks does not forward to 'trakor/products'; it forwards to ['salesmanago/contacts'",
    ),
    ({"routed_from": "x/y"}, "s.yaml: routed_from: set by the route, not in a sync spec; use via"),
]


@pytest.mark.parametrize(
    ("change", "message"), BROKEN, ids=[m.split(": ")[1] + str(i) for i, (_, m) in enumerate(BROKEN)]
)
def test_broken_sync_specs_name_the_file_and_field(change, message):
    doc = {
        "name": "s",
        "description": "d",
        "source": "trackstar/products",
        "target": "trakor/products",
        "fields": {"name": {"from": "name"}},
        **change,
    }
    with pytest.raises(SpecError) as info:
        parse_sync(doc, "s.yaml", CONNECTORS)
    assert message in str(info.value)


def _source_records(s):
    """Sandbox truth for a sync's source and lookup streams: ``read('<connector>/<stream>')``."""
    boxes = {
        "trackstar": TrackstarSandbox(seed=5),
        "salestrekker": SalestrekkerSandbox(seed=5, sizes={"deals": 120, "contacts": 150}),
    }

    def read(stream):
        connector, name = stream.split("/")
        box = boxes[connector]
        if connector == "trackstar":
            return [{**r, "_connection_id": "conn_a"} for r in box.truth(name, "conn_a")]
        return box.truth(name)

    return read


@pytest.mark.parametrize("name", sorted(SYNCS))
def test_every_builtin_sync_maps_sandbox_records_to_valid_sink_records(name):
    s = SYNCS[name]
    sink = CONNECTORS[s.target_connector].sinks[s.target_sink]
    read = _source_records(s)
    lookups = build_lookups(s, read)
    mapped = [m for r in read(s.source) for m in map_records(s, r, lookups)]
    assert mapped
    problems = {i: validate_record(sink, m) for i, m in enumerate(mapped)}
    assert not {i: p for i, p in problems.items() if p}


@pytest.mark.parametrize("name", sorted(n for n, s in SYNCS.items() if forwards(CONNECTORS["datatalks"], s.target)))
def test_every_syncs_routed_through_datatalks_still_maps_to_valid_records(name):
    s = route(SYNCS[name], "datatalks", CONNECTORS)
    assert s.target_connector == "datatalks" and s.asset_ref == SYNCS[name].asset_ref
    sink = CONNECTORS["datatalks"].sinks[s.target_sink]
    read = _source_records(s)
    lookups = build_lookups(s, read)
    mapped = [m for r in read(s.source) for m in map_records(s, r, lookups)]
    assert mapped
    assert not [p for m in mapped if (p := validate_record(sink, m))]


# -- lookups, emit, conditions, reduce ------------------------------------------------------------

DEAL = {
    "id": "d1",
    "idClients": ["c2"],
    "idContacts": ["c2", "c1"],
    "idWorkflow": "w1",
    "idStage": "s2",
    "isWon": True,
    "values": {"onceOff": 100.5},
}
CONTACTS = [{"id": "c1", "email": "one@x.io"}, {"id": "c2", "email": "two@x.io"}]
WORKFLOWS = [
    {"id": "w1", "name": "Home loans", "stages": [{"id": "s1", "name": "Lead"}, {"id": "s2", "name": "Offer"}]}
]


def _lookup_sync(**extra):
    return SyncSpec.model_validate(
        {"name": "t", "description": "t", "source": "salestrekker/deals", "target": "salesmanago/events", **extra}
    )


def _index(s):
    data = {
        "salestrekker/contacts": CONTACTS,
        "salestrekker/workflows": WORKFLOWS,
        "salestrekker/deals": [DEAL, {**DEAL, "id": "d2", "idContacts": ["c1"], "isWon": False}],
    }
    return build_lookups(s, data.__getitem__)


def test_lookups_join_first_match_every_match_and_nested_items():
    s = _lookup_sync(
        lookups={
            "client": {"stream": "salestrekker/contacts", "key": "id", "match": "idClients[]"},
            "people": {"stream": "salestrekker/contacts", "key": "id", "match": "idContacts[]", "many": True},
            "stage": {"stream": "salestrekker/workflows", "items": "stages[]", "key": "id", "match": "idStage"},
            "nobody": {"stream": "salestrekker/contacts", "key": "id", "match": "idOwner"},
        },
        fields={
            "a": {"from": "client.email"},
            "b": {"from": "people[].email", "join": ","},
            "c": {"from": "stage.name"},
            "d": {"from": "nobody.email", "default": "none"},
        },
    )
    assert map_records(s, DEAL, _index(s)) == [{"a": "two@x.io", "b": "two@x.io,one@x.io", "c": "Offer", "d": "none"}]


def test_many_lookup_by_list_key_and_reduce():
    s = SyncSpec.model_validate(
        {
            "name": "t",
            "description": "t",
            "source": "salestrekker/contacts",
            "target": "salesmanago/contacts",
            "lookups": {"deals": {"stream": "salestrekker/deals", "key": "idContacts[]", "match": "id", "many": True}},
            "fields": {
                "n": {"from": "deals[].id", "reduce": "count"},
                "won": {"from": "deals[].isWon", "reduce": "sum"},
                "value": {"from": "deals[].values.onceOff", "reduce": "sum", "default": 0},
                "first": {"from": "deals[].id", "reduce": "first"},
            },
        }
    )
    index = _index(s)
    assert map_records(s, {"id": "c1"}, index) == [{"n": 2, "won": 1, "value": 201.0, "first": "d1"}]
    assert map_records(s, {"id": "c9"}, index) == [{"n": 0, "won": 0, "value": 0}]  # 'first' of nothing: left out


def test_emit_makes_one_record_per_matching_variant():
    s = _lookup_sync(
        lookups={"workflow": {"stream": "salestrekker/workflows", "key": "id", "match": "idWorkflow"}},
        fields={"email": {"value": "a@b.c"}},
        emit=[
            {"name": "created", "fields": {"id": {"template": "{id}-created"}}},
            {
                "name": "stage",
                "where": {"idStage": {"differs_from": "workflow.stages[0].id"}},
                "fields": {"id": {"template": "{id}-stage-{idStage}"}},
            },
            {"name": "won", "where": {"isWon": True}, "fields": {"id": {"template": "{id}-won"}}},
        ],
    )
    index = _index(s)
    ids = lambda r: [m["id"] for m in map_records(s, r, index)]  # noqa: E731
    assert ids(DEAL) == ["d1-created", "d1-stage-s2", "d1-won"]
    assert ids({**DEAL, "idStage": "s1", "isWon": False}) == ["d1-created"]  # still in the first stage


@pytest.mark.parametrize(
    ("condition", "holds"),
    [
        ({"status": "shipped"}, True),
        ({"status": {"not": "shipped"}}, False),
        ({"status": {"in": ["a", "shipped"]}}, True),
        ({"nope": {"exists": False}}, True),
        ({"status": {"exists": True}}, True),
        ({"order_number": {"same_as": "status"}}, False),
        ({"order_number": {"differs_from": "status"}}, True),
        ({"line_items[0].sku": "A-1"}, True),
    ],
)
def test_conditions(condition, holds):
    s = sync({"x": {"value": 1}}, where=condition)
    assert (map_record(s, ORDER) is not None) is holds


def test_route_renames_fields_and_prefixes_for_the_proxy():
    routed = route(SYNCS["salestrekker_contacts_to_salesmanago_contacts"], "datatalks", CONNECTORS)
    assert routed.target == "datatalks/contacts" and routed.routed_from == "salesmanago/contacts_batch"
    assert {"email", "name", "phone", "externalId", "salestrekker_deals"} <= set(routed.fields)
    assert (
        route(SYNCS["trackstar_products_to_trakor_products"], None, CONNECTORS)
        is SYNCS["trackstar_products_to_trakor_products"]
    )


def test_a_route_the_proxy_cannot_carry_names_the_field():
    doc = {
        "name": "s",
        "description": "d",
        "source": "salestrekker/contacts",
        "target": "salesmanago/contacts_batch",
        "via": "datatalks",
        "fields": {"contact.email": {"from": "person.contact.email"}, "tags": {"value": ["X"]}},
    }
    with pytest.raises(SpecError) as info:
        parse_sync(doc, "s.yaml", CONNECTORS)
    assert str(info.value) == "s.yaml: fields.tags: datatalks/contacts has no field for it"
    doc["via"] = "trakor"
    with pytest.raises(SpecError) as info:
        parse_sync(doc, "s.yaml", CONNECTORS)
    assert str(info.value) == "s.yaml: via: trakor does not forward to 'salesmanago/contacts_batch'; it forwards to []"
