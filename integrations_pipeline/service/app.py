"""The service: the link flow's backend half and the webhook receivers, as one Starlette app.

Routes (``integrations-pipeline serve --host H --port P`` runs it under uvicorn):

- ``POST /<connector>/link-token`` → ``{"linkToken"}`` for the front end's link widget (Trackstar);
- ``POST /<connector>/store-token`` ``{"auth_code", "customer_id"}`` → exchanges the code, stores the connection
  with its token sealed (``engine.connections.TokenVault``), answers ``{"connection_id", "integration_name"}``:
  never the token;
- both require ``Authorization: Bearer <INTEGRATIONS_PIPELINE_API_KEY>`` (401 otherwise, compared in constant time);
- ``POST /webhooks/<connector>`` (Svix-signed: Trackstar) and ``POST /webhooks/<connector>/<token>`` (a secret
  path token: Salestrekker). A webhook is answered 2xx only after it is durably stored (the warehouse's
  ``_integrations.webhook_events``): a process killed after answering has lost nothing, and a vendor that got
  no answer retries. A replayed delivery is answered 2xx and stored once;
- ``GET /healthz``.

Nothing here reads the environment: ``ServiceSettings.from_environ`` does, once, in the CLI. Errors answer
with a message that names the cause and never a secret; what a vendor answered is redacted by its client.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from integrations_pipeline.engine.client import VendorClient
from integrations_pipeline.engine.connections import LinkFlow, TokenVault, seal_event_secrets
from integrations_pipeline.engine.errors import (
    AuthError,
    ConfigError,
    IntegrationsError,
    RequestRejectedError,
    WebhookRejected,
)
from integrations_pipeline.engine.spec import ConnectorSpec
from integrations_pipeline.engine.webhooks import MAX_BODY_BYTES, receive
from integrations_pipeline.warehouse.inbox import InboxWarehouse

API_KEY_ENV = "INTEGRATIONS_PIPELINE_API_KEY"
SECRET_KEY_ENV = "INTEGRATIONS_PIPELINE_SECRET_KEY"


@dataclass(frozen=True)
class ServiceSettings:
    """What the service needs beyond the specs: its own API key, the token vault's keys, webhook secrets."""

    api_key: SecretStr | None
    secret_key: SecretStr | None
    webhook_secrets: Mapping[str, SecretStr] = field(default_factory=dict)  # connector → its verify secret

    @classmethod
    def from_environ(cls, connectors: Mapping[str, ConnectorSpec], environ: Mapping[str, str]) -> ServiceSettings:
        def secret(name: str) -> SecretStr | None:
            value = environ.get(name, "")
            return SecretStr(value) if value else None

        hooks = {
            name: s
            for name, spec in connectors.items()
            if spec.webhooks is not None and (s := secret(spec.webhooks.verify.secret.env)) is not None
        }
        return cls(api_key=secret(API_KEY_ENV), secret_key=secret(SECRET_KEY_ENV), webhook_secrets=hooks)

    def __repr__(self) -> str:
        return f"ServiceSettings(webhooks={sorted(self.webhook_secrets)})"


def create_app(
    settings: ServiceSettings,
    connectors: Mapping[str, ConnectorSpec],
    open_warehouse: Callable[[], InboxWarehouse],
    client_for: Callable[[ConnectorSpec], VendorClient],
    *,
    log: Callable[[str], None] | None = None,
) -> Starlette:
    """The app. ``open_warehouse`` opens the warehouse for one request (closed after it: an embedded DuckDB file
    is then free for runs between requests); ``client_for`` builds a connector's client (``ClientFactory``)."""
    say = log or (lambda message: None)

    def refuse(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def authorised(request: Request) -> JSONResponse | None:
        if settings.api_key is None:
            return refuse(503, f"{API_KEY_ENV} is not set: the link endpoints are closed")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        expected = settings.api_key.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            return refuse(401, "missing or wrong bearer token")
        return None

    def linkable(request: Request) -> ConnectorSpec | JSONResponse:
        """The connector a link route names, once the caller is authorised; else the refusal to answer."""
        denied = authorised(request)
        if denied is not None:
            return denied
        name = request.path_params["connector"]
        spec = connectors.get(name)
        if spec is None or spec.connections is None or spec.connections.link is None:
            return refuse(404, f"no connector '{name}' with a link flow")
        return spec

    async def link_token(request: Request) -> JSONResponse:
        spec = linkable(request)
        if isinstance(spec, JSONResponse):
            return spec

        def call() -> str:
            with client_for(spec) as client:
                return LinkFlow(client).link_token()

        try:
            return JSONResponse({"linkToken": await run_in_threadpool(call)})
        except IntegrationsError as exc:
            return _vendor_failure(spec.name, exc, say)

    async def store_token(request: Request) -> JSONResponse:
        spec = linkable(request)
        if isinstance(spec, JSONResponse):
            return spec
        if settings.secret_key is None:
            return refuse(503, f"{SECRET_KEY_ENV} is not set: connection tokens are stored encrypted and need it")
        try:
            body = await request.json()
        except ValueError:
            return refuse(400, "the body is not JSON")
        code = body.get("auth_code") if isinstance(body, dict) else None
        customer = body.get("customer_id") if isinstance(body, dict) else None
        if not isinstance(code, str) or not code:
            return refuse(400, "auth_code is required")
        if customer is not None and not isinstance(customer, str):
            return refuse(400, "customer_id must be a string")
        vault = TokenVault.from_setting(settings.secret_key, source=SECRET_KEY_ENV)

        def exchange_and_store() -> dict[str, Any]:
            with client_for(spec) as client:
                linked = LinkFlow(client).exchange(code, customer)
            assert linked.token is not None  # exchange() raises when the answer has none
            warehouse = open_warehouse()
            try:
                warehouse.store_connection(spec.name, linked, vault.seal(linked.token), now=datetime.now(UTC))
            finally:
                warehouse.close()
            say(f"{spec.name}: connection {linked.connection_id} ({linked.integration_name}) stored")
            return {"connection_id": linked.connection_id, "integration_name": linked.integration_name}

        try:
            return JSONResponse(await run_in_threadpool(exchange_and_store))
        except ConfigError as exc:
            return refuse(503, str(exc))
        except IntegrationsError as exc:
            return _vendor_failure(spec.name, exc, say)

    async def webhook(request: Request) -> JSONResponse:
        name = request.path_params["connector"]
        spec = connectors.get(name)
        if spec is None or spec.webhooks is None:
            return refuse(404, f"no connector '{name}' taking webhooks")
        token = request.path_params.get("token")
        if (spec.webhooks.verify.type == "path_token") != (token is not None):
            return refuse(
                404, f"{name} webhooks are posted to /webhooks/{name}" + ("/<token>" if token is None else "")
            )
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return refuse(413, f"webhook body over {MAX_BODY_BYTES} bytes")
        body = await request.body()
        secret = settings.webhook_secrets.get(name)
        try:
            event = receive(
                spec,
                secret.get_secret_value() if secret else "",
                body,
                dict(request.headers),
                path_token=token,
            )
        except WebhookRejected as exc:
            say(str(exc))
            return refuse(exc.status, str(exc))

        if spec.webhooks.secret_fields():
            # A connection.created event carries the customer's access token: sealed before it is written, like
            # the link flow's, or dropped when there is no key (the connection is then stored without a token).
            try:
                vault = (
                    TokenVault.from_setting(settings.secret_key, source=SECRET_KEY_ENV) if settings.secret_key else None
                )
            except ConfigError as exc:
                return refuse(503, str(exc))
            event = replace(event, payload=seal_event_secrets(spec, event.payload, vault))

        def store() -> bool:
            warehouse = open_warehouse()
            try:
                return warehouse.store_event(event, received_at=datetime.now(UTC))
            finally:
                warehouse.close()

        try:
            fresh = await run_in_threadpool(store)
        except Exception as exc:  # a full disk, a locked file: no 2xx, so the vendor delivers it again
            say(f"{name}: webhook {event.event_id} not stored ({type(exc).__name__}); answered 503 for a retry")
            return refuse(503, "the event could not be stored; deliver it again")
        return JSONResponse({"stored": fresh, "event_id": event.event_id}, status_code=200)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/webhooks/{connector}", webhook, methods=["POST"]),
            Route("/webhooks/{connector}/{token}", webhook, methods=["POST"]),
            Route("/{connector}/link-token", link_token, methods=["POST"]),
            Route("/{connector}/store-token", store_token, methods=["POST"]),
        ]
    )


def _vendor_failure(connector: str, exc: IntegrationsError, say: Callable[[str], None]) -> JSONResponse:
    """What the vendor said, as a status our caller can act on; the client already masked any secret in it."""
    say(f"{connector}: {exc}")
    if isinstance(exc, RequestRejectedError):
        return JSONResponse({"error": f"{connector} refused: {exc}"}, status_code=422)
    if isinstance(exc, AuthError):
        return JSONResponse({"error": f"{connector} refused our credentials: {exc}"}, status_code=502)
    return JSONResponse({"error": f"{connector} failed: {exc}"}, status_code=502)
