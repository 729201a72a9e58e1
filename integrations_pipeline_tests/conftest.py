"""Warehouse fixtures shared by every test package.

- ``duckdb_url``: a DuckDB file in the test's ``tmp_path``.
- ``postgres_url``: a fresh, empty PostgreSQL database created for this test and dropped after it
  (server from ``$TEST_POSTGRES_URL``, default ``postgresql://postgres@127.0.0.1:5432/test``). When
  the role may not create databases, the server's database itself is used: then keep schema names
  unique (``unique_schema``). Unreachable server → skip, or fail when ``CI=true``.
- ``warehouse_url``: parametrized over both (``[duckdb]`` and ``[postgres]`` test ids).
- ``warehouse``: ``connect_warehouse(warehouse_url)``, closed after the test.
- ``unique_schema``: ``unique_schema("trackstar")`` → ``"trackstar_3f9c0a1b2d"``; such schemas are
  dropped after the test when it ran against PostgreSQL.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import pytest

POSTGRES_DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
_POSTGRES_USED = pytest.StashKey[str]()


def postgres_server_url() -> str:
    return os.environ.get("TEST_POSTGRES_URL") or POSTGRES_DEFAULT_URL


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def _postgres_server() -> tuple[str, str | None]:
    """(server URL, why it is unusable or None), probed once per session."""
    import psycopg

    url = postgres_server_url()
    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # any failure means: no usable server
        return url, " ".join(str(exc).split()) or type(exc).__name__
    return url, None


@pytest.fixture
def duckdb_url(tmp_path) -> str:
    return f"duckdb://{tmp_path / 'warehouse.duckdb'}"


def service_missing(message: str) -> NoReturn:
    """A service a test needs does not answer: the test is skipped on a developer's machine, and fails under
    ``CI=true``, where ``.ci/run`` started every service (a skip there would hide a broken deployment)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def postgres_url(request, _postgres_server) -> Iterator[str]:
    import psycopg

    from integrations_pipeline.warehouse import redact_url

    server, problem = _postgres_server
    if problem is not None:
        service_missing(f"PostgreSQL not reachable at {redact_url(server)}: {problem}")
    database = f"ip_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
    except psycopg.errors.InsufficientPrivilege:
        request.node.stash[_POSTGRES_USED] = server
        yield server  # shared database: tests keep to their unique schemas
        return
    url = _with_database(server, database)
    request.node.stash[_POSTGRES_USED] = url
    try:
        yield url
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse_url(request) -> str:
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def warehouse(warehouse_url):
    from integrations_pipeline.warehouse import connect_warehouse

    wh = connect_warehouse(warehouse_url)
    try:
        yield wh
    finally:
        wh.close()


@pytest.fixture
def unique_schema(request) -> Iterator[Callable[[str], str]]:
    created: list[str] = []

    def make(prefix: str = "test") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        created.append(name)
        return name

    yield make
    url = request.node.stash.get(_POSTGRES_USED, None)
    if url and created:
        import psycopg

        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
                for name in created:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
                if conn.execute('SELECT to_regclass(\'"_integrations"."cursor_state"\')').fetchone()[0]:
                    for name in created:
                        conn.execute(
                            'DELETE FROM "_integrations"."cursor_state" WHERE position(%s in state_key) > 0', [name]
                        )
        except psycopg.OperationalError:
            pass  # the per-test database is already gone
