"""ensure_table: create once, add the columns a spec gains, widen integer → number, refuse the rest."""

from __future__ import annotations

import dataclasses

import pytest

from integrations_pipeline.warehouse import Column, TableSpec, WarehouseError


def _table(schema: str, *extra: Column) -> TableSpec:
    return TableSpec(
        schema=schema,
        name="deals",
        columns=(Column("id", "string"), Column("updatedAt", "timestamp"), Column("amount", "integer"), *extra),
        primary_key=("id",),
        cursor_field="updatedAt",
    )


def _commit(wh, table, records, key="k"):
    with wh.open_load(table, key) as load:
        load.write_batch(records)
        return load.commit(None)


def test_ensure_table_is_idempotent(warehouse, unique_schema):
    table = _table(unique_schema("evo"))
    warehouse.ensure_table(table)
    warehouse.ensure_table(table)
    assert warehouse.row_count(table) == 0
    assert list(warehouse.read_frame(table).columns) == ["id", "updatedAt", "amount", "_extra", "_synced_at"]


def test_added_columns_are_migrated(warehouse, unique_schema):
    v1 = _table(unique_schema("evo"))
    warehouse.ensure_table(v1)
    _commit(warehouse, v1, [{"id": "d1", "updatedAt": "2026-11-03T10:00:00Z", "amount": 5, "stage": "won"}])
    # v1 did not know "stage": it was kept in _extra
    assert warehouse.read_records(v1) == [
        {"id": "d1", "updatedAt": "2026-11-03T10:00:00Z", "amount": 5, "stage": "won"}
    ]

    v2 = _table(v1.schema, Column("stage", "string"), Column("labels", "json"), Column("closedAt", "timestamp"))
    warehouse.ensure_table(v2)
    assert list(warehouse.read_frame(v2).columns) == [
        "id",
        "updatedAt",
        "amount",
        "stage",
        "labels",
        "closedAt",
        "_extra",
        "_synced_at",
    ]
    # old rows: the new columns are empty, the old _extra still answers for "stage"
    assert warehouse.read_records(v2) == [
        {"id": "d1", "updatedAt": "2026-11-03T10:00:00Z", "amount": 5, "stage": "won", "labels": None, "closedAt": None}
    ]
    row = {
        "id": "d2",
        "updatedAt": "2026-11-04T10:00:00Z",
        "amount": 1,
        "stage": "lost",
        "labels": ["x"],
        "closedAt": "2026-11-04T09:00:00Z",
    }
    _commit(warehouse, v2, [row])
    assert warehouse.read_records(v2)[1] == row
    frame = warehouse.read_frame(v2)
    assert frame.loc[1, "stage"] == "lost"


def test_commit_migrates_without_an_explicit_ensure(warehouse, unique_schema):
    v1 = _table(unique_schema("evo"))
    _commit(warehouse, v1, [{"id": "d1", "updatedAt": "2026-11-03T10:00:00Z", "amount": 5}])
    v2 = _table(v1.schema, Column("stage", "string"))
    _commit(warehouse, v2, [{"id": "d2", "updatedAt": "2026-11-03T10:00:00Z", "amount": 6, "stage": "new"}])
    assert [r["stage"] for r in warehouse.read_records(v2)] == [None, "new"]


def test_reading_with_a_spec_ahead_of_the_table(warehouse, unique_schema):
    v1 = _table(unique_schema("evo"))
    _commit(warehouse, v1, [{"id": "d1", "updatedAt": "2026-11-03T10:00:00Z", "amount": 5}])
    v2 = _table(v1.schema, Column("stage", "string"))
    assert warehouse.read_records(v2) == [{"id": "d1", "updatedAt": "2026-11-03T10:00:00Z", "amount": 5, "stage": None}]


def test_removed_columns_stay_but_new_values_go_to_extra(warehouse, unique_schema):
    v1 = _table(unique_schema("evo"), Column("stage", "string"))
    _commit(warehouse, v1, [{"id": "d1", "updatedAt": "2026-11-03T10:00:00Z", "amount": 5, "stage": "won"}])
    v0 = _table(v1.schema)
    row = {"id": "d2", "updatedAt": "2026-11-03T10:00:00Z", "amount": 1, "stage": "lost"}
    _commit(warehouse, v0, [row])
    assert warehouse.read_records(v0)[1] == row
    assert "stage" not in warehouse.read_frame(v0).columns  # reads follow the spec
    assert warehouse.read_records(v1)[0]["stage"] == "won"  # the old column still holds its data


def test_integer_widens_to_number(warehouse, unique_schema):
    v1 = _table(unique_schema("evo"))
    _commit(warehouse, v1, [{"id": "d1", "updatedAt": "2026-11-03T10:00:00Z", "amount": 5}])
    v2 = dataclasses.replace(v1, columns=(v1.columns[0], v1.columns[1], Column("amount", "number")))
    warehouse.ensure_table(v2)
    _commit(warehouse, v2, [{"id": "d2", "updatedAt": "2026-11-03T10:00:00Z", "amount": 2.5}])
    back = warehouse.read_records(v2)
    assert [r["amount"] for r in back] == [5.0, 2.5]
    assert all(type(r["amount"]) is float for r in back)


def test_incompatible_type_change_is_refused(warehouse, unique_schema):
    v1 = _table(unique_schema("evo"))
    warehouse.ensure_table(v1)
    v2 = dataclasses.replace(v1, columns=(v1.columns[0], v1.columns[1], Column("amount", "boolean")))
    with pytest.raises(WarehouseError, match=r"deals\.amount is stored as .* spec now says boolean"):
        warehouse.ensure_table(v2)
