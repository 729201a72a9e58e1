"""The link flow for tests: the service app over a warehouse, and a customer's WMS linked through it.

``POST /trackstar/store-token`` exchanges the sandbox's ``auth_code`` for the connection's access token and seals
it into the warehouse's connection registry, as a customer finishing Trackstar Link does.
"""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.engine.auth import Credentials, secret_env_vars
from integrations_pipeline.engine.client import ClientFactory
from integrations_pipeline.service.app import ServiceSettings, create_app
from integrations_pipeline.warehouse.inbox import open_inbox

SPECS = load_connectors()


def service(env: dict[str, str], warehouse_url: str) -> TestClient:
    """The service app, configured from ``env``, over the warehouse at ``warehouse_url``."""

    def client_for(spec):  # type: ignore[no-untyped-def]
        credentials = Credentials.from_environ(spec.name, secret_env_vars(spec), env)
        return ClientFactory(credentials, environ=env).connector(spec)

    settings = ServiceSettings.from_environ(SPECS, env)
    return TestClient(create_app(settings, SPECS, lambda: open_inbox(warehouse_url), client_for))


def link(http: TestClient, env: dict[str, str], code: str, **extra: Any) -> None:
    """Store the token of the connection the sandbox issued ``code`` for; ``extra``: more body fields."""
    answer = http.post(
        "/trackstar/store-token",
        headers={"authorization": f"Bearer {env['INTEGRATIONS_PIPELINE_API_KEY']}"},
        json={"auth_code": code, **extra},
    )
    assert answer.status_code == 200, answer.text
