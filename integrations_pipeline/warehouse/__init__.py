"""Warehouse writers (DuckDB embedded, PostgreSQL beyond one machine)."""
