"""Tables and records for the warehouse tests (the backends come from the top-level conftest)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.warehouse import Column, TableSpec, table_spec_for


@pytest.fixture(params=["duckdb", "duckdb-small-parts", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse_url(request, monkeypatch) -> str:
    """Both backends, plus DuckDB staging in parts of 2 records so multi-part commits get exercised."""
    if request.param == "duckdb-small-parts":
        from integrations_pipeline.warehouse.duckdb import DuckDBLoad

        monkeypatch.setattr(DuckDBLoad, "part_records", 2)
        return request.getfixturevalue("duckdb_url")
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture(scope="session")
def connectors():
    return load_connectors()


@pytest.fixture
def inventory_table(connectors, unique_schema) -> TableSpec:
    """Trackstar inventory (per-connection, cursor ``updated_date``) in a schema of its own."""
    spec = table_spec_for(connectors["trackstar"], "inventory")
    return dataclasses.replace(spec, schema=unique_schema("trackstar"))


@pytest.fixture
def simple_table(unique_schema) -> TableSpec:
    """One column of every type; key ``id``, cursor ``updated_at``."""
    return TableSpec(
        schema=unique_schema("simple"),
        name="things",
        columns=(
            Column("id", "string"),
            Column("updated_at", "timestamp"),
            Column("name", "string"),
            Column("n", "integer"),
            Column("x", "number"),
            Column("flag", "boolean"),
            Column("data", "json"),
        ),
        primary_key=("id",),
        cursor_field="updated_at",
    )


def inventory_record(
    i: int, *, connection: str = "conn_a", updated: str = "2026-11-03T10:00:00Z", **overrides: Any
) -> dict:
    """A Trackstar inventory record as the API returns it (plus ``_connection_id``)."""
    record = {
        "_connection_id": connection,
        "id": f"inv_{i:05d}",
        "warehouse_customer_id": f"cust_{i % 7}" if i % 5 else None,
        "created_date": "2026-10-01T08:30:00Z",
        "updated_date": updated,
        "name": f'Widget {i} — "deluxe" \\ edition\nline two ✓',
        "sku": f"SKU-{i:05d}",
        "unit_cost": round(i * 1.25 + 0.1, 2),
        "active": i % 2 == 0,
        "awaiting": i,
        "onhand": 1000 + i,
        "committed": 0,
        "unfulfillable": None,
        "fulfillable": 2**40 + i,
        "unsellable": -i,
        "sellable": 7,
        "substitute_skus": [f"SKU-{i + 1:05d}", f"SKU-{i + 2:05d}"],
        "inventory_by_warehouse_id": {"wh_1": {"onhand": i, "committed": 0, "nested": {"deep": [1, None, "x"]}}},
        "lots": [] if i % 3 else [{"lot_id": f"L{i}", "expiration_date": "2027-01-01T00:00:00Z", "onhand": 3}],
        "measurements": {"length": 1.5, "width": 0.1, "height": 3, "unit": "in", "weight": None},
        "locations": None,
        "external_system_url": f"https://wms.example.com/items/{i}",
        "trackstar_tags": [],
        "additional_fields": {"note": None, "flags": [True, False], "émoji": "🚚"},
    }
    record.update(overrides)
    return record


def simple_record(i: int, updated: str = "2026-11-03T10:00:00Z", **overrides: Any) -> dict:
    record = {
        "id": f"t{i:03d}",
        "updated_at": updated,
        "name": f"thing {i}",
        "n": i,
        "x": i / 4,
        "flag": bool(i % 2),
        "data": {"i": i, "list": [i, {"k": None}]},
    }
    record.update(overrides)
    return record


def by_key(records: list[dict], table: TableSpec) -> list[dict]:
    return sorted(records, key=lambda r: tuple(r[k] for k in table.primary_key))
