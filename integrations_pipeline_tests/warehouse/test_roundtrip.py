"""What goes in comes back: types, nested JSON, nulls, timestamps, fields outside the schema."""

from __future__ import annotations

import dataclasses
import json

import pandas
import pytest

from integrations_pipeline.warehouse import Column, TableSpec, WarehouseError
from integrations_pipeline_tests.warehouse.conftest import by_key, inventory_record, simple_record


def _load(wh, table, records, key="k", state=None, page=1000):
    with wh.open_load(table, key) as load:
        for i in range(0, len(records), page):
            load.write_batch(records[i : i + page])
        return load.commit(state)


def test_inventory_round_trip_is_exact(warehouse, inventory_table):
    records = [inventory_record(i, connection=c) for c in ("conn_b", "conn_a") for i in range(25)]
    warehouse.ensure_table(inventory_table)
    result = _load(warehouse, inventory_table, records, page=7)
    assert result.staged == result.inserted == 50
    back = warehouse.read_records(inventory_table)
    assert back == by_key(records, inventory_table)
    # exact types, not just equal values
    first = back[0]
    assert type(first["unit_cost"]) is float and type(first["onhand"]) is int and type(first["active"]) is bool
    assert first["fulfillable"] == 2**40  # beyond 32 bits
    assert "_synced_at" not in first and "_extra" not in first
    assert list(first)[:3] == ["_connection_id", "id", "warehouse_customer_id"]  # schema order
    assert warehouse.row_count(inventory_table) == 50


def test_where_connection(warehouse, inventory_table):
    records = [inventory_record(i, connection=c) for c in ("conn_a", "conn_b") for i in range(3)]
    _load(warehouse, inventory_table, records)
    only_b = warehouse.read_records(inventory_table, where_connection="conn_b")
    assert only_b == [r for r in by_key(records, inventory_table) if r["_connection_id"] == "conn_b"]
    assert warehouse.read_records(inventory_table, where_connection="nobody") == []


def test_where_connection_needs_a_connection_column(warehouse, simple_table):
    with pytest.raises(ValueError, match="_connection_id"):
        warehouse.read_records(simple_table, where_connection="x")


def test_all_types_nulls_and_absent_fields(warehouse, simple_table):
    records = [
        simple_record(1),
        simple_record(2, name=None, n=None, x=None, flag=None, data=None),
        simple_record(3, name="", n=0, x=0.0, flag=False, data={}),
        simple_record(4, data=[]),
        simple_record(5, data="just a string"),
        simple_record(6, data=42),
        simple_record(7, data=[{"a": [None, {"b": 1.5e-7}]}, "x", True, None]),
        simple_record(8, x=-1e300, n=-(2**63), name="tab\tquote' dq\" back\\slash nul-free ünïcödé 😀"),
        simple_record(9, n=2**63 - 1, x=1234567.000001, updated="2026-11-03T10:00:00.123Z"),
        simple_record(10, updated="2026-11-03T10:00:00.123456Z"),
    ]
    _load(warehouse, simple_table, records)
    assert warehouse.read_records(simple_table) == records
    # a record lacking some schema fields reads back with them as None
    _load(warehouse, simple_table, [{"id": "t999", "updated_at": "2026-11-03T10:00:00Z"}], key="k2")
    sparse = warehouse.read_records(simple_table)[-1]
    assert sparse == {
        "id": "t999",
        "updated_at": "2026-11-03T10:00:00Z",
        "name": None,
        "n": None,
        "x": None,
        "flag": None,
        "data": None,
    }


def test_timestamps_normalise_to_utc_z(warehouse, simple_table):
    records = [
        simple_record(1, updated="2026-11-03T12:00:00+02:00"),
        simple_record(2, updated="2026-11-03T10:00:00"),
        simple_record(3, updated="2026-11-03 10:00:00Z"),
        simple_record(4, updated="2026-11-03T10:00:00.500Z"),
    ]
    _load(warehouse, simple_table, records)
    got = [r["updated_at"] for r in warehouse.read_records(simple_table)]
    assert got == ["2026-11-03T10:00:00Z", "2026-11-03T10:00:00Z", "2026-11-03T10:00:00Z", "2026-11-03T10:00:00.500Z"]


def test_fields_outside_the_schema_are_kept_in_extra(warehouse, inventory_table):
    records = [
        inventory_record(1, brand_new_field={"x": [1, None]}, another=None),
        inventory_record(2),
        inventory_record(3, _extra="a field literally named _extra", _synced_at="not ours"),
    ]
    _load(warehouse, inventory_table, records)
    back = warehouse.read_records(inventory_table)
    assert back == by_key(records, inventory_table)
    frame = warehouse.read_frame(inventory_table)
    extras = [None if pandas.isna(v) else json.loads(v) for v in frame["_extra"]]
    assert extras == [
        {"brand_new_field": {"x": [1, None]}, "another": None},
        None,
        {"_extra": "a field literally named _extra", "_synced_at": "not ours"},
    ]


def test_values_that_do_not_fit_their_column_are_not_lost(warehouse, simple_table):
    records = [
        simple_record(1),
        simple_record(2, n="n/a", x="1.5", flag="yes", name=12, updated_at="2026-11-03T10:00:00Z"),
        simple_record(3, n=3.5, x=[1], flag=1, name={"first": "A", "last": None}),
        simple_record(4, n=2**64, name=True),
    ]
    # record 2's cursor field is fine; the others' cursor is fine too
    _load(warehouse, simple_table, records)
    assert warehouse.read_records(simple_table) == records
    frame = warehouse.read_frame(simple_table)
    assert frame.loc[1, "n"] is None or pandas.isna(frame.loc[1, "n"])  # the column itself holds NULL


def test_unparseable_timestamp_is_kept(warehouse, simple_table):
    records = [simple_record(1, updated="yesterday"), simple_record(2), simple_record(3, updated=1700000000)]
    _load(warehouse, simple_table, records)
    assert warehouse.read_records(simple_table) == records


def test_read_frame(warehouse, inventory_table):
    records = [inventory_record(i) for i in range(4)]
    _load(warehouse, inventory_table, records)
    frame = warehouse.read_frame(inventory_table)
    assert isinstance(frame, pandas.DataFrame)
    assert list(frame.columns) == [*inventory_table.column_names, "_extra", "_synced_at"]
    assert len(frame) == 4
    assert list(frame["id"]) == [r["id"] for r in records]
    assert str(frame["updated_date"].dtype).startswith("datetime64") and str(frame["updated_date"].dt.tz) == "UTC"
    assert json.loads(frame.loc[0, "inventory_by_warehouse_id"]) == records[0]["inventory_by_warehouse_id"]
    assert frame["_synced_at"].notna().all()


def test_reads_of_a_missing_table(warehouse, simple_table):
    assert warehouse.read_records(simple_table) == []
    assert warehouse.row_count(simple_table) == 0
    assert list(warehouse.read_frame(simple_table).columns) == [*simple_table.column_names, "_extra", "_synced_at"]
    assert warehouse.read_state("never") is None


def test_commit_creates_the_table_itself(warehouse, simple_table):
    result = _load(warehouse, simple_table, [simple_record(1)])  # no ensure_table first
    assert result.inserted == 1
    assert warehouse.read_records(simple_table) == [simple_record(1)]


def test_sorted_by_primary_key_in_code_point_order(warehouse, simple_table):
    ids = ["b", "B", "a", "A", "_x", "ä", "Z", "10", "9"]
    records = [simple_record(i, id=v) for i, v in enumerate(ids)]
    _load(warehouse, simple_table, records)
    assert [r["id"] for r in warehouse.read_records(simple_table)] == sorted(ids)


def test_camel_case_and_odd_identifiers(warehouse, unique_schema):
    table = TableSpec(
        schema=unique_schema("odd"),
        name="deals",
        columns=(
            Column("id", "string"),
            Column("idOwner", "string"),
            Column("updatedAt", "timestamp"),
            Column('we"ird col', "integer"),
            Column("select", "json"),
        ),
        primary_key=("id",),
        cursor_field="updatedAt",
    )
    records = [{"id": "d1", "idOwner": "u1", "updatedAt": "2026-11-03T10:00:00Z", 'we"ird col': 5, "select": {"a": 1}}]
    _load(warehouse, table, records)
    assert warehouse.read_records(table) == records


def test_composite_key_with_integer_part(warehouse, unique_schema):
    table = TableSpec(
        schema=unique_schema("comp"),
        name="lines",
        columns=(Column("order", "string"), Column("line", "integer"), Column("qty", "integer")),
        primary_key=("order", "line"),
        cursor_field=None,
    )
    records = [{"order": o, "line": n, "qty": n * 2} for o in ("b", "a") for n in (10, 2, 1)]
    _load(warehouse, table, records)
    assert warehouse.read_records(table) == sorted(records, key=lambda r: (r["order"], r["line"]))


def test_null_primary_key_is_refused(warehouse, simple_table):
    with warehouse.open_load(simple_table, "k") as load:
        load.write_batch([simple_record(1), simple_record(2, id=None)])
        with pytest.raises(WarehouseError, match=r"primary key \['id'\]"):
            load.commit({"c": 1})
    assert warehouse.row_count(simple_table) == 0
    assert warehouse.read_state("k") is None


def test_records_must_be_json_dicts(warehouse, simple_table):
    with warehouse.open_load(simple_table, "k") as load:
        with pytest.raises(WarehouseError, match="dict"):
            load.write_batch([["not", "a", "dict"]])  # type: ignore[list-item]
        with pytest.raises(WarehouseError, match="JSON"):
            load.write_batch([simple_record(1, data=float("nan"))])
        with pytest.raises(WarehouseError, match="not JSON serializable"):
            load.write_batch([simple_record(1, data=object())])


def test_python_datetimes_are_accepted(warehouse, simple_table):
    from datetime import UTC, datetime

    _load(warehouse, simple_table, [simple_record(1, updated=datetime(2026, 11, 3, 10, tzinfo=UTC))])
    assert warehouse.read_records(simple_table)[0]["updated_at"] == "2026-11-03T10:00:00Z"


def test_many_pages_of_a_big_load(warehouse, inventory_table):
    records = [inventory_record(i, connection=f"conn_{i % 3}") for i in range(3000)]
    result = _load(warehouse, inventory_table, records, page=250)
    assert (result.staged, result.inserted) == (3000, 3000)
    assert warehouse.read_records(inventory_table) == by_key(records, inventory_table)


def test_table_spec_schema_is_isolated(warehouse, inventory_table):
    other = dataclasses.replace(inventory_table, schema=inventory_table.schema + "_other")
    _load(warehouse, inventory_table, [inventory_record(1)])
    assert warehouse.row_count(other) == 0


def test_benign_misfits_per_backend(warehouse, simple_table):
    """A misfit the typed fast path can coerce: DuckDB stores the coercion, PostgreSQL the original.

    (DuckDB re-reads a load value by value only when a value cannot be coerced at all; see
    ``warehouse/duckdb.py``.)
    """
    records = [simple_record(1, name=12, flag="true"), simple_record(2)]
    _load(warehouse, simple_table, records)
    back = warehouse.read_records(simple_table)
    if warehouse.backend == "postgres":
        assert back == records
    else:
        assert back[0]["name"] == "12" and back[0]["flag"] is True
        assert back[1] == records[1]
