"""Fixtures for the Dagster-layer tests: sandbox vendors on loopback, and warehouses to load into.

Each PostgreSQL test gets a database of its own, because the asset tables live in schemas named after
the vendors (``trackstar.inventory``) and parallel tests must not share them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from integrations_pipeline.sandbox import default_sandboxes, sandbox_environment
from integrations_pipeline.sandbox.server import serve

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def sandboxes():
    """Every sandbox vendor on a loopback port; yields (servers, sandboxes)."""
    boxes = default_sandboxes(seed=3)
    with serve(boxes) as servers:
        yield servers, boxes


@pytest.fixture
def sandbox_env(sandboxes, monkeypatch) -> dict[str, str]:
    """The process environment pointed at the sandboxes (credentials included)."""
    servers, boxes = sandboxes
    env = sandbox_environment(servers.base_urls, boxes)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WAREHOUSE_URL", raising=False)
    return env


def _pg_admin_url() -> str:
    return os.environ.get("TEST_POSTGRES_URL", DEFAULT_PG)


@pytest.fixture
def postgres_database_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database; dropped afterwards. Skips (fails under CI) without a server."""
    import psycopg

    admin = _pg_admin_url()
    try:
        conn = psycopg.connect(admin, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL not reachable at {admin.split('@')[-1]}: {str(exc).strip().splitlines()[0]}"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: PostgreSQL tests must run)")
        pytest.skip(message)
    name = f"ip_test_{uuid.uuid4().hex[:10]}"
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse_url(request, tmp_path) -> str:
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    return request.getfixturevalue("postgres_database_url")
