"""connect_warehouse URL handling, defaults, ConfigError text and password redaction."""

from __future__ import annotations

import os

import pytest

from integrations_pipeline.engine.errors import ConfigError
from integrations_pipeline.warehouse import (
    ACCEPTED_URLS,
    DuckDBWarehouse,
    PostgresWarehouse,
    Warehouse,
    WarehouseError,
    connect_warehouse,
    redact_url,
)


def test_duckdb_absolute_path(tmp_path):
    path = tmp_path / "sub" / "w.duckdb"
    url = f"duckdb://{path}"
    assert url.startswith("duckdb:///")
    with connect_warehouse(url) as wh:
        assert isinstance(wh, DuckDBWarehouse) and isinstance(wh, Warehouse)
        assert wh.path == str(path)
        assert wh.url == url
        assert path.parent.is_dir()  # the directory is created
        assert wh.backend == "duckdb"


def test_duckdb_four_slashes_and_relative(tmp_path, monkeypatch):
    with connect_warehouse(f"duckdb:///{tmp_path}/a.duckdb") as wh:  # duckdb:////abs (SQLAlchemy style)
        assert wh.path == str(tmp_path / "a.duckdb")
    monkeypatch.chdir(tmp_path)
    with connect_warehouse("duckdb://rel/b.duckdb") as wh:
        assert wh.path == str(tmp_path / "rel" / "b.duckdb")


def test_duckdb_memory(inventory_table):
    from integrations_pipeline_tests.warehouse.conftest import inventory_record

    with connect_warehouse("duckdb:///:memory:") as wh:
        assert wh.path == ":memory:"
        wh.ensure_table(inventory_table)
        with wh.open_load(inventory_table, "k") as load:
            load.write_batch([inventory_record(1)])
            load.commit({"a": 1})
        assert wh.row_count(inventory_table) == 1
        assert wh.read_state("k") == {"a": 1}
    assert wh.closed
    with pytest.raises(WarehouseError, match="closed"):
        wh.row_count(inventory_table)


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "POSTGRESQL"])
def test_postgres_schemes(scheme):
    wh = connect_warehouse(f"{scheme}://someone@db.example:5433/analytics")
    assert isinstance(wh, PostgresWarehouse)
    assert wh.backend == "postgres"
    wh.close()  # never connected: nothing to release


def test_default_url_is_a_duckdb_file_under_dot_data(tmp_path, monkeypatch):
    monkeypatch.delenv("WAREHOUSE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    with connect_warehouse() as wh:
        assert isinstance(wh, DuckDBWarehouse)
        assert wh.path == str(tmp_path / ".data" / "warehouse.duckdb")
        assert wh.url == f"duckdb://{tmp_path / '.data' / 'warehouse.duckdb'}"
    assert (tmp_path / ".data").is_dir()


def test_env_url_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("WAREHOUSE_URL", f"duckdb://{tmp_path}/env.duckdb")
    with connect_warehouse() as wh:
        assert wh.path == str(tmp_path / "env.duckdb")
    monkeypatch.setenv("WAREHOUSE_URL", "")  # empty means unset
    monkeypatch.chdir(tmp_path)
    with connect_warehouse() as wh:
        assert wh.path.endswith(os.path.join(".data", "warehouse.duckdb"))


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("sqlite:///tmp/x.db", "sqlite"),
        ("mysql://u:hunter2@h/db", "mysql"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg"),
        ("snowflake://acct", "snowflake"),
    ],
)
def test_unsupported_scheme_names_scheme_and_accepted(url, scheme):
    with pytest.raises(ConfigError) as info:
        connect_warehouse(url)
    text = str(info.value)
    assert f"unsupported warehouse URL scheme '{scheme}'" in text
    for accepted in ACCEPTED_URLS:
        assert accepted in text
    assert "hunter2" not in text


@pytest.mark.parametrize("url", ["/tmp/warehouse.duckdb", "warehouse.duckdb", "   "])
def test_url_without_scheme(url):
    with pytest.raises(ConfigError, match="duckdb:///"):
        connect_warehouse(url)


def test_duckdb_url_without_path():
    with pytest.raises(ConfigError, match="names no DuckDB file"):
        connect_warehouse("duckdb://")


def test_password_is_redacted_everywhere():
    wh = connect_warehouse("postgresql://loader:s3cr%40t-pw@db.example:5432/analytics?sslmode=require")
    for text in (wh.url, str(wh), repr(wh)):
        assert "s3cr" not in text
        assert "loader:***@db.example:5432/analytics?sslmode=require" in text
    assert repr(wh) == "PostgresWarehouse('postgresql://loader:***@db.example:5432/analytics?sslmode=require')"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://u:p@ss/w@rd@h:5432/db", "postgresql://u:***@h:5432/db"),
        (
            "postgresql://h/db?user=u&password=pw&sslmode=require",
            "postgresql://h/db?user=u&password=***&sslmode=require",
        ),
        ("postgres://:onlypw@h/db", "postgres://:***@h/db"),
        ("duckdb:///data/w.duckdb", "duckdb:///data/w.duckdb"),
    ],
)
def test_redact_url(url, expected):
    assert redact_url(url) == expected


def test_unreachable_postgres_is_a_warehouse_error_without_password():
    wh = connect_warehouse("postgresql://u:topsecret@127.0.0.1:1/db", connect_timeout=1)
    with pytest.raises(WarehouseError) as info:
        wh.read_state("x")
    assert "topsecret" not in str(info.value)
    assert "postgresql://u:***@127.0.0.1:1/db" in str(info.value)


def test_duckdb_url_options(tmp_path):
    with connect_warehouse(f"duckdb://{tmp_path}/o.duckdb?lock_timeout=2.5&memory_limit=1GB") as wh:
        assert wh.path == str(tmp_path / "o.duckdb")
        assert (wh.lock_timeout, wh.memory_limit) == (2.5, "1GB")
    with connect_warehouse(f"duckdb://{tmp_path}/o.duckdb") as wh:
        assert (wh.lock_timeout, wh.memory_limit) == (60.0, "256MB")  # the defaults
    with connect_warehouse(f"duckdb://{tmp_path}/o.duckdb", lock_timeout=1, memory_limit=None) as wh:
        assert (wh.lock_timeout, wh.memory_limit) == (1.0, None)
    with connect_warehouse("duckdb:///:memory:") as wh:
        assert wh.memory_limit is None


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?threads=4", "unknown option 'threads'"),
        ("?memory_limit=lots", "memory_limit must look like"),
        ("?lock_timeout=soon", "lock_timeout must be a number"),
    ],
)
def test_bad_duckdb_url_options(tmp_path, query, message):
    with pytest.raises(ConfigError, match=message):
        connect_warehouse(f"duckdb://{tmp_path}/o.duckdb{query}")


def test_memory_limit_is_applied(tmp_path, simple_table):
    from integrations_pipeline_tests.warehouse.conftest import simple_record

    with connect_warehouse(f"duckdb://{tmp_path}/o.duckdb?memory_limit=300MB") as wh:
        with wh.open_load(simple_table, "k") as load:
            load.write_batch([simple_record(1)])
            load.commit(None)
        with wh._connection() as conn:
            limit = conn.execute("SELECT current_setting('memory_limit')").fetchone()[0]
        assert limit.replace(" ", "").upper().startswith(("286.1MIB", "300MB", "300.0MB", "286MIB"))


def test_each_registry_line_names_its_backend_and_its_url_forms():
    """One line per backend: its class loads by name, and the URL forms it lists are the class's own."""
    from integrations_pipeline.warehouse.registry import BACKENDS

    assert [b.load() for b in BACKENDS] == [DuckDBWarehouse, PostgresWarehouse]
    for backend in BACKENDS:
        assert backend.load().url_forms == backend.urls
    assert ACCEPTED_URLS == tuple(url for b in BACKENDS for url in b.urls)
