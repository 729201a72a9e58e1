"""Fixtures for the Dagster-layer tests: sandbox vendors on loopback, the environment pointing at them.

Warehouses come from the top-level conftest (``warehouse_url``, ``postgres_url``): each PostgreSQL test
gets a database of its own, because asset tables live in schemas named after the vendors.
"""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from integrations_pipeline.sandbox import default_sandboxes, sandbox_environment
from integrations_pipeline.sandbox.server import serve


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


@pytest.fixture
def linked_env(sandbox_env, monkeypatch) -> dict[str, str]:
    """The service's keys set and no fallback variable: Trackstar connections come from the registry only."""
    env = {
        **sandbox_env,
        "INTEGRATIONS_PIPELINE_API_KEY": "svc-key",
        "INTEGRATIONS_PIPELINE_SECRET_KEY": Fernet.generate_key().decode(),
    }
    for name in ("INTEGRATIONS_PIPELINE_API_KEY", "INTEGRATIONS_PIPELINE_SECRET_KEY"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.delenv("TRACKSTAR_ACCESS_TOKEN")
    env.pop("TRACKSTAR_ACCESS_TOKEN")
    return env
