"""What the main job shows beyond the syncs, against the sandbox vendors: an integrator's day.

- ``onboard``: each sandbox customer connects its WMS through the service's link flow, as the integrator's
  front end would (``POST /trackstar/link-token``; the customer finishes Trackstar's widget, which hands back an
  auth code; ``POST /trackstar/store-token``). The registry then holds their tokens, sealed, and no token is
  pasted anywhere: the runs read the registry.
- ``follow_one_webhook``: a new order in one customer's WMS → Trackstar's Svix-signed webhook → the service
  verifies and stores it → the ``webhook_events`` sensor asks for one run of ``trackstar/webhook_events`` and the
  syncs that read orders → in that run the order is merged into ``trackstar.orders`` (no API call), then the
  sync sends exactly that order to SALESmanago. Both legs are timed; the sensor's own interval (30 s in a
  deployment) comes on top, and is evaluated at once here.

The service runs on a loopback port in a thread of this process (uvicorn, as ``serve`` runs it); the vendors are
the loopback sandboxes.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg
import httpx
import uvicorn

from integrations_pipeline.defs.events import SENSOR_NAME as EVENTS_SENSOR
from integrations_pipeline.engine.auth import Credentials, secret_env_vars
from integrations_pipeline.engine.client import ClientFactory
from integrations_pipeline.engine.spec import ConnectorSpec
from integrations_pipeline.sandbox.base import VendorSandbox
from integrations_pipeline.service.app import API_KEY_ENV, ServiceSettings, create_app
from integrations_pipeline.warehouse.inbox import open_inbox


@contextmanager
def service_client(
    specs: Mapping[str, ConnectorSpec], env: Mapping[str, str], warehouse_url: str | None
) -> Iterator[httpx.Client]:
    """The service (``integrations-pipeline serve``) on a loopback port, and a client of it."""

    def client_for(spec: ConnectorSpec):
        credentials = Credentials.from_environ(spec.name, secret_env_vars(spec), env)
        return ClientFactory(credentials, environ=env).connector(spec)

    app = create_app(ServiceSettings.from_environ(specs, env), specs, lambda: open_inbox(warehouse_url), client_for)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the service did not start")
            time.sleep(0.01)
        with httpx.Client(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=60) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@dataclass(frozen=True)
class Onboarded:
    connection_id: str
    integration_name: str


def onboard(http: httpx.Client, env: Mapping[str, str], trackstar: VendorSandbox) -> list[Onboarded]:
    """Link every sandbox customer through the service; what the service answered for each."""
    headers = {"authorization": f"Bearer {env[API_KEY_ENV]}"}
    done = []
    for n, connection_id in enumerate(sorted(trackstar.connections), 1):  # type: ignore[attr-defined]
        answer = http.post("/trackstar/link-token", headers=headers)
        answer.raise_for_status()
        # The customer opens Trackstar's link widget with this token and picks their WMS; the widget hands our
        # front end an auth code (the sandbox's codes are ``code_<connection id>``).
        code = f"code_{connection_id}"
        stored = http.post(
            "/trackstar/store-token", headers=headers, json={"auth_code": code, "customer_id": f"cust-{n}"}
        )
        stored.raise_for_status()
        body = stored.json()
        done.append(Onboarded(body["connection_id"], body["integration_name"]))
    return done


@dataclass(frozen=True)
class WebhookTrip:
    """One webhook's way to SALESmanago, leg by leg (seconds)."""

    order_id: str
    connection_id: str
    stored: float  # Trackstar's POST → verified and durably stored
    synced: float  # the events sensor's one run: merged into trackstar.orders, then the syncs reading orders
    syncs: tuple[str, ...]  # the syncs that run held
    events_sent: int  # SALESmanago events the order became (one: nothing sent twice)

    @property
    def total(self) -> float:
        return self.stored + self.synced


def follow_one_webhook(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    http: httpx.Client,
    boxes: Mapping[str, VendorSandbox],
    *,
    connection_id: str = "conn_a",
) -> WebhookTrip:
    """A new order of ``connection_id`` travels to SALESmanago (module docstring)."""
    trackstar, salesmanago = boxes["trackstar"], boxes["salesmanago"]
    sensor = defs.resolve_sensor_def(EVENTS_SENSOR)
    assets = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)]
    # The sensor's cursor as of now: events stored before (none, in the main job) are not news.
    with dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources) as context:
        baseline = sensor(context)
    cursor = baseline.cursor if isinstance(baseline, dg.SensorResult) else None
    trackstar.webhooks.subscribe(f"{str(http.base_url).rstrip('/')}/webhooks/trackstar")  # type: ignore[attr-defined]
    sent_before = len(salesmanago.events)  # type: ignore[attr-defined]
    try:
        (order_id,) = trackstar.add("orders", 1, datetime.now(UTC), connection_id)  # type: ignore[attr-defined]
        began = time.perf_counter()
        delivered = trackstar.webhooks.deliver(http)  # type: ignore[attr-defined]
        stored = time.perf_counter()
    finally:
        trackstar.webhooks.url = None  # type: ignore[attr-defined]
    if delivered != 1:
        raise RuntimeError(f"the service took {delivered} webhooks, expected 1")
    with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=defs.resources) as ctx:
        due = sensor(ctx)
    requests = (due.run_requests if isinstance(due, dg.SensorResult) else None) or []
    if len(requests) != 1:
        raise RuntimeError(f"the {EVENTS_SENSOR} sensor asked for {len(requests)} runs, expected 1")
    (request,) = requests
    selection = list(request.asset_selection or [])
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    result = dg.materialize(
        assets,
        selection=selection,
        instance=instance,
        resources=defs.resources,
        tags=request.tags,
        run_config=quiet,
        raise_on_error=False,
    )
    synced = time.perf_counter()
    syncs = tuple(k.to_user_string() for k in selection if k.path[-1] != "webhook_events")
    if not result.success:
        raise RuntimeError(f"the events run ({', '.join(k.to_user_string() for k in selection)}) failed")
    return WebhookTrip(
        order_id=order_id,
        connection_id=connection_id,
        stored=stored - began,
        synced=synced - stored,
        syncs=syncs,
        events_sent=len(salesmanago.events) - sent_before,  # type: ignore[attr-defined]
    )
