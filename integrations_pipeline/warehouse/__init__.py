"""Warehouse writers (DuckDB embedded, PostgreSQL beyond one machine), one module per backend.

``base.py`` is the interface and everything written once (schema evolution, readers), ``delivery.py``
the reverse-ETL bookkeeping written once, ``duckdb.py`` and ``postgres.py`` each a backend with all
of its SQL, and ``registry.py`` the URL scheme → backend table behind ``connect_warehouse``.
"""

from .base import (
    STATE_SCHEMA,
    STATE_TABLE,
    Load,
    LoadResult,
    Warehouse,
    WarehouseError,
    format_timestamp,
    redact_url,
)
from .registry import ACCEPTED_URLS, backend_class, connect_warehouse, default_warehouse_url
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
    # The backends import their drivers (duckdb, psycopg): a backend class loads only when asked for.
    cls = backend_class(name)
    if cls is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return cls
