"""Warehouse writers (DuckDB embedded, PostgreSQL beyond one machine)."""

from .base import (
    ACCEPTED_URLS,
    STATE_SCHEMA,
    STATE_TABLE,
    Load,
    LoadResult,
    Warehouse,
    WarehouseError,
    connect_warehouse,
    default_warehouse_url,
    format_timestamp,
    redact_url,
)
from .tables import (
    COLUMN_TYPES,
    CONNECTION_COLUMN,
    EXTRA_COLUMN,
    RESERVED_COLUMNS,
    SYNCED_AT_COLUMN,
    Column,
    ColumnType,
    TableSpec,
    column_type_for,
    table_spec_for,
)

__all__ = [
    "ACCEPTED_URLS",
    "COLUMN_TYPES",
    "CONNECTION_COLUMN",
    "EXTRA_COLUMN",
    "RESERVED_COLUMNS",
    "STATE_SCHEMA",
    "STATE_TABLE",
    "SYNCED_AT_COLUMN",
    "Column",
    "ColumnType",
    "DuckDBWarehouse",
    "Load",
    "LoadResult",
    "PostgresWarehouse",
    "TableSpec",
    "Warehouse",
    "WarehouseError",
    "column_type_for",
    "connect_warehouse",
    "default_warehouse_url",
    "format_timestamp",
    "redact_url",
    "table_spec_for",
]


def __getattr__(name: str):
    # The backends import their drivers (duckdb, psycopg); load them only when asked for.
    if name == "DuckDBWarehouse":
        from .duckdb import DuckDBWarehouse

        return DuckDBWarehouse
    if name == "PostgresWarehouse":
        from .postgres import PostgresWarehouse

        return PostgresWarehouse
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
