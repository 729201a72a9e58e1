"""The service against the sandboxes: the link flow, and webhooks verified, stored once, never lost.

The app runs in-process (Starlette's TestClient); Trackstar is the sandbox behind an in-process transport; the
warehouse is DuckDB and PostgreSQL. The sandboxes sign and send webhooks as the vendors do (Trackstar through the
svix library, Salestrekker unsigned to a secret URL), so a receiver that agreed only with itself would fail here.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from starlette.testclient import TestClient
from svix.webhooks import Webhook

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.engine.auth import Credentials, secret_env_vars
from integrations_pipeline.engine.client import ClientFactory
from integrations_pipeline.engine.connections import TokenVault
from integrations_pipeline.sandbox.salestrekker import SalestrekkerSandbox
from integrations_pipeline.sandbox.trackstar import TrackstarSandbox
from integrations_pipeline.service.app import ServiceSettings, create_app
from integrations_pipeline.warehouse.inbox import open_inbox

CONNECTORS = load_connectors()
API_KEY = "svc-api-key-0123456789"
SECRET_KEY = Fernet.generate_key().decode()
ST_TOKEN = "st-path-token-abcdef"
AT = datetime(2026, 11, 20, 12, tzinfo=UTC)


class Rig:
    def __init__(self, warehouse_url: str, *, secret_key: str | None = SECRET_KEY, broken_store: bool = False):
        self.trackstar = TrackstarSandbox(seed=3, sizes={"orders": 300, "products": 50, "inventory": 50})
        self.salestrekker = SalestrekkerSandbox(seed=3, sizes={"deals": 50, "contacts": 20})
        self.env = {
            **self.trackstar.environment("http://trackstar.sandbox"),
            "SALESTREKKER_WEBHOOK_TOKEN": ST_TOKEN,
            "INTEGRATIONS_PIPELINE_API_KEY": API_KEY,
            **({"INTEGRATIONS_PIPELINE_SECRET_KEY": secret_key} if secret_key else {}),
        }
        self.url = warehouse_url
        self.logs: list[str] = []
        self.broken_store = broken_store
        settings = ServiceSettings.from_environ(CONNECTORS, self.env)
        self.app = create_app(settings, CONNECTORS, self.open_warehouse, self.client_for, log=self.logs.append)
        self.http = TestClient(self.app)
        self.trackstar.webhooks.subscribe("http://testserver/webhooks/trackstar")
        self.salestrekker.webhooks.subscribe(f"http://testserver/webhooks/salestrekker/{ST_TOKEN}")

    def open_warehouse(self):
        if self.broken_store:
            raise OSError(28, "No space left on device")
        return open_inbox(self.url)

    def client_for(self, spec):
        credentials = Credentials.from_environ(spec.name, secret_env_vars(spec), self.env)
        transport = httpx.MockTransport(self.trackstar.handle)
        return ClientFactory(credentials, environ=self.env, transport=transport, log=self.logs.append).connector(spec)

    def auth(self, key: str = API_KEY) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"}

    def stored(self, connector: str):
        with open_inbox(self.url) as wh:
            return wh.read_events(connector)

    def connections(self):
        with open_inbox(self.url) as wh:
            return wh.read_connections("trackstar")


@pytest.fixture
def rig(warehouse_url):
    return Rig(warehouse_url)


def svix_headers(secret: str, msg_id: str, body: bytes, at: datetime | None = None) -> dict[str, str]:
    at = at or datetime.now(UTC)
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(int(at.timestamp())),
        "svix-signature": Webhook(secret).sign(msg_id, at, body.decode()),
        "content-type": "application/json",
    }


def order_event(rig: Rig, n: int = 0) -> bytes:
    record = rig.trackstar.truth("orders", "conn_a")[n]
    return json.dumps(
        {
            "connection_id": "conn_a",
            "integration_name": "x",
            "integration_type": "wms",
            "event_type": "order.updated",
            "data": record,
        }
    ).encode()


# -- link flow -----------------------------------------------------------------------------------


def test_link_flow_stores_the_connection_sealed_and_never_shows_the_token(rig, warehouse_url):
    answer = rig.http.post("/trackstar/link-token", headers=rig.auth())
    assert answer.status_code == 200 and answer.json()["linkToken"].startswith("link-sandbox-")

    stored = rig.http.post(
        "/trackstar/store-token", headers=rig.auth(), json={"auth_code": "code_b", "customer_id": "cust-42"}
    )
    assert stored.status_code == 200, stored.text
    assert stored.json() == {"connection_id": "conn_b", "integration_name": rig.trackstar.tenants["conn_b"].integration}
    token = rig.trackstar.tenants["conn_b"].token
    assert token not in stored.text and token not in "\n".join(rig.logs)

    (row,) = rig.connections()
    assert (row.connection_id, row.customer_id, row.status) == ("conn_b", "cust-42", "active")
    assert "get_orders" in row.available_actions
    assert row.token_sealed and token not in row.token_sealed
    assert TokenVault.from_setting(SECRET_KEY, source="key").open(row.token_sealed).get_secret_value() == token
    if warehouse_url.startswith("duckdb"):
        path = Path("/" + warehouse_url.removeprefix("duckdb:").lstrip("/"))
        files = [p for p in path.parent.iterdir() if p.name.startswith(path.name)]  # the file and any WAL
        assert files and all(token.encode() not in p.read_bytes() for p in files)

    # Linking again (a customer reconnecting) refreshes the row: still one connection.
    assert rig.http.post("/trackstar/store-token", headers=rig.auth(), json={"auth_code": "code_b"}).status_code == 200
    (again,) = rig.connections()
    assert again.customer_id == "cust-42" and again.created_at == row.created_at


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {API_KEY}"}])
def test_link_endpoints_need_the_bearer_key(rig, headers):
    for path in ("/trackstar/link-token", "/trackstar/store-token"):
        answer = rig.http.post(path, headers=headers, json={"auth_code": "code_a"})
        assert answer.status_code == 401 and "bearer" in answer.json()["error"]
    assert rig.trackstar.counts["requests"] == 0 and rig.connections() == []


def test_a_refused_auth_code_is_a_422_naming_the_vendor_and_nothing_is_stored(rig):
    answer = rig.http.post("/trackstar/store-token", headers=rig.auth(), json={"auth_code": "code_nobody"})
    assert answer.status_code == 422 and "trackstar refused" in answer.json()["error"]
    assert rig.connections() == []


def test_without_a_secret_key_no_token_is_stored_in_clear(warehouse_url):
    rig = Rig(warehouse_url, secret_key=None)
    answer = rig.http.post("/trackstar/store-token", headers=rig.auth(), json={"auth_code": "code_a"})
    assert answer.status_code == 503 and "INTEGRATIONS_PIPELINE_SECRET_KEY" in answer.json()["error"]
    assert rig.trackstar.counts["requests"] == 0  # the code is not spent either


# -- webhooks ------------------------------------------------------------------------------------


def test_trackstar_webhooks_from_the_sandbox_are_stored_once_whatever_the_order_and_replays(rig):
    rig.trackstar.touch("orders", 120, AT, "conn_a")
    rig.trackstar.add("products", 40, AT, "conn_b")
    rig.trackstar.touch("inventory", 40, AT, "conn_a")
    assert rig.trackstar.webhooks.pending() == 200
    shuffled = lambda batch: random.Random(7).sample(batch, len(batch))  # noqa: E731
    assert rig.trackstar.webhooks.deliver(rig.http, order=shuffled) == 200
    events = rig.stored("trackstar")
    sent = {m.msg_id: json.loads(m.body) for m in rig.trackstar.webhooks.delivered}
    assert {e.event_id: e.payload for e in events} == sent
    by_type = {(e.event_type, e.stream) for e in events}
    assert by_type == {("order.updated", "orders"), ("product.created", "products"), ("inventory.updated", "inventory")}
    assert all(e.object_id == e.payload["data"]["id"] and e.applied_at is None for e in events)

    # Svix re-delivers (our 2xx got lost): the same svix-ids are answered 2xx and stored once.
    rig.trackstar.webhooks.queue.extend(rig.trackstar.webhooks.delivered[:50])
    assert rig.trackstar.webhooks.deliver(rig.http) == 50
    assert len(rig.stored("trackstar")) == 200


def test_forged_and_stale_webhooks_are_refused_and_nothing_is_stored(rig):
    body = order_event(rig)
    secret = rig.trackstar.webhook_secret
    forged = svix_headers("whsec_" + "Zm9yZ2VkLXNlY3JldC1mb3JnZWQtc2VjcmV0", "msg_1", body)
    stale = svix_headers(secret, "msg_2", body, at=datetime.now(UTC) - timedelta(minutes=10))
    tampered = svix_headers(secret, "msg_3", body)
    for headers, content in ((forged, body), (stale, body), (tampered, body.replace(b"conn_a", b"conn_b")), ({}, body)):
        answer = rig.http.post("/webhooks/trackstar", content=content, headers=headers)
        assert answer.status_code == 401, answer.text
    assert rig.stored("trackstar") == []
    assert secret not in "\n".join(rig.logs)


def test_a_valid_webhook_is_stored_and_a_replayed_svix_id_is_answered_2xx_once_stored(rig):
    body = order_event(rig)
    headers = svix_headers(rig.trackstar.webhook_secret, "msg_abc", body)
    first = rig.http.post("/webhooks/trackstar", content=body, headers=headers)
    second = rig.http.post("/webhooks/trackstar", content=body, headers=headers)
    assert (first.status_code, first.json()["stored"]) == (200, True)
    assert (second.status_code, second.json()["stored"]) == (200, False)
    (event,) = rig.stored("trackstar")
    assert (event.event_id, event.connection_id, event.stream) == ("msg_abc", "conn_a", "orders")


def test_an_event_for_an_unknown_connection_or_type_is_kept(rig):
    payload = {"connection_id": "conn_zz", "event_type": "cart-order.created", "data": {"id": "x1"}}
    body = json.dumps(payload).encode()
    answer = rig.http.post(
        "/webhooks/trackstar", content=body, headers=svix_headers(rig.trackstar.webhook_secret, "m9", body)
    )
    assert answer.status_code == 200
    (event,) = rig.stored("trackstar")
    assert (event.connection_id, event.stream, event.payload) == ("conn_zz", None, payload)


def test_salestrekker_webhooks_need_the_secret_path_token(rig):
    rig.salestrekker.touch("deals", 5, AT)
    rig.salestrekker.add("deals", 2, AT)
    assert rig.salestrekker.webhooks.deliver(rig.http) == 7
    events = rig.stored("salestrekker")
    # A touched deal moves a stage (DealChangesStage) or, when it cannot, changes value ([unconfirmed] DealUpdated).
    kinds = sorted(e.event_type for e in events)
    assert kinds.count("DealCreated") == 2 and set(kinds) - {"DealCreated"} <= {"DealChangesStage", "DealUpdated"}
    assert {e.stream for e in events} == {"deals"}
    truth_ids = {d["id"] for d in rig.salestrekker.truth("deals")}
    assert {e.object_id for e in events} <= truth_ids

    body = json.dumps({"id": "t1", "event": "DealCreated"}).encode()
    for path in ("/webhooks/salestrekker/wrong-token", "/webhooks/salestrekker"):
        answer = rig.http.post(path, content=body)
        assert answer.status_code in (401, 404)
    assert len(rig.stored("salestrekker")) == 7


def test_webhooks_are_refused_when_the_receiver_has_no_secret(warehouse_url):
    rig = Rig(warehouse_url)
    rig.app = create_app(ServiceSettings(SecretStr(API_KEY), None, {}), CONNECTORS, rig.open_warehouse, rig.client_for)
    http = TestClient(rig.app)
    body = order_event(rig)
    answer = http.post(
        "/webhooks/trackstar", content=body, headers=svix_headers(rig.trackstar.webhook_secret, "m1", body)
    )
    assert answer.status_code == 503 and "TRACKSTAR_WEBHOOK_SECRET" in answer.json()["error"]


def test_a_webhook_that_cannot_be_stored_is_not_acknowledged_and_arrives_on_redelivery(warehouse_url):
    rig = Rig(warehouse_url, broken_store=True)
    rig.trackstar.touch("orders", 3, AT, "conn_a")
    assert rig.trackstar.webhooks.deliver(rig.http) == 0  # 503: Svix keeps them
    assert rig.trackstar.webhooks.pending() == 3 and any("answered 503" in line for line in rig.logs)
    rig.broken_store = False  # the disk has room again
    assert rig.trackstar.webhooks.deliver(rig.http) == 3
    assert len(rig.stored("trackstar")) == 3


def test_bad_bodies_are_refused_with_a_reason(rig):
    secret = rig.trackstar.webhook_secret
    for body, status in ((b"not json", 400), (b"[1, 2]", 400), (b'{"data": {}}', 400), (b"x" * 1_000_001, 413)):
        answer = rig.http.post("/webhooks/trackstar", content=body, headers=svix_headers(secret, "mb", body))
        assert answer.status_code == status, (body[:20], answer.text)
    assert rig.stored("trackstar") == []
    assert rig.http.get("/healthz").json() == {"ok": True}


# -- the real process ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_killed_right_after_answering_2xx_has_lost_nothing(warehouse_url, tmp_path):
    """``integrations-pipeline serve`` in its own process: each 2xx comes after the event is committed, so a
    kill -9 straight after the answers loses none of them."""
    trackstar = TrackstarSandbox(seed=5, sizes={"orders": 40})
    port = _free_port()
    env = {
        **os.environ,
        "WAREHOUSE_URL": warehouse_url,
        "TRACKSTAR_WEBHOOK_SECRET": trackstar.webhook_secret,
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "integrations_pipeline.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as http:
            for _ in range(600):
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            else:
                pytest.fail("serve did not start")
            trackstar.webhooks.subscribe(f"{base}/webhooks/trackstar")
            trackstar.touch("orders", 25, AT, "conn_a")
            assert trackstar.webhooks.deliver(http) == 25
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with open_inbox(warehouse_url) as wh:
        stored = {e.event_id: e.payload for e in wh.read_events("trackstar")}
    assert stored == {m.msg_id: json.loads(m.body) for m in trackstar.webhooks.delivered}
    output = proc.stdout.read().decode() if proc.stdout else ""
    assert trackstar.webhook_secret not in output
