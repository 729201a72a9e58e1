"""engine.connections and engine.webhooks: the token vault, the link flow against the Trackstar sandbox,
reconciling, which connections a run reads, and how webhook event types map to streams."""

from __future__ import annotations

import httpx
import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.engine.auth import Credentials, secret_env_vars
from integrations_pipeline.engine.client import ClientFactory
from integrations_pipeline.engine.connections import (
    LinkedConnection,
    LinkFlow,
    TokenVault,
    reconcile,
    usable_connections,
)
from integrations_pipeline.engine.errors import (
    ConfigError,
    MissingCredentialError,
    OutcomeUnknownError,
    RequestRejectedError,
)
from integrations_pipeline.sandbox.trackstar import TrackstarSandbox

SPECS = load_connectors()
TRACKSTAR = SPECS["trackstar"]


def flow(box: TrackstarSandbox) -> LinkFlow:
    env = box.environment("http://trackstar.sandbox")
    credentials = Credentials.from_environ("trackstar", secret_env_vars(TRACKSTAR), env)
    clients = ClientFactory(credentials, environ=env, transport=httpx.MockTransport(box.handle))
    return LinkFlow(clients.connector(TRACKSTAR))


def test_the_vault_seals_opens_and_rotates_keys():
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    sealed = TokenVault.from_setting(old, source="KEY").seal(SecretStr("tok-123"))
    assert "tok-123" not in sealed
    rotating = TokenVault.from_setting(f"{new},{old}", source="KEY")
    assert rotating.open(sealed).get_secret_value() == "tok-123"
    resealed = rotating.rotate(sealed)
    assert TokenVault.from_setting(new, source="KEY").open(resealed).get_secret_value() == "tok-123"
    with pytest.raises(ConfigError, match="does not open with KEY") as err:
        TokenVault.from_setting(new, source="KEY").open(sealed)
    assert new not in str(err.value) and old not in str(err.value)
    with pytest.raises(ConfigError, match="KEY is not a Fernet key"):
        TokenVault.from_setting("not-a-key", source="KEY")
    with pytest.raises(ConfigError, match="KEY is not set"):
        TokenVault.from_setting(" , ", source="KEY")
    assert "sealed" not in repr(rotating) and new not in repr(rotating)


def test_link_flow_against_the_sandbox():
    box = TrackstarSandbox(seed=1)
    link = flow(box)
    assert link.link_token().startswith("link-sandbox-")
    linked = link.exchange("code_a", "cust-7")
    assert (linked.connection_id, linked.customer_id) == ("conn_a", "cust-7")
    assert linked.token is not None and linked.token.get_secret_value() == box.tenants["conn_a"].token
    assert box.tenants["conn_a"].token not in repr(linked)
    assert "get_orders" in linked.available_actions
    listed = link.listed()
    assert [c.connection_id for c in listed] == ["conn_a", "conn_b"] and all(c.token is None for c in listed)
    assert "get_returns" not in {a for c in listed if c.connection_id == "conn_b" for a in c.available_actions}
    with pytest.raises(RequestRejectedError, match="Invalid auth_code"):
        link.exchange("code_nobody", None)


def test_an_exchange_that_may_have_spent_the_code_is_not_retried():
    box = TrackstarSandbox(seed=1)
    box.faults.inject("500", path_prefix="/link/exchange")
    with pytest.raises(OutcomeUnknownError):
        flow(box).exchange("code_a", None)
    assert box.counts["requests"] == 1


def test_reconcile_adds_deactivates_and_refreshes():
    listed = [LinkedConnection("c1", "shipbob", ("get_orders",)), LinkedConnection("c3", "extensiv", ())]
    plan = reconcile({"c1": "active", "c2": "active", "c4": "deleted"}, listed)
    assert [c.connection_id for c in plan.added] == ["c3"]
    assert plan.deactivated == ("c2",)
    assert [c.connection_id for c in plan.refreshed] == ["c1"]


def test_a_run_reads_stored_connections_then_the_fallback_variable():
    vault = TokenVault.from_setting(Fernet.generate_key().decode(), source="KEY")
    stored = [
        ("conn_a", "active", vault.seal(SecretStr("tok-a"))),
        ("conn_b", "deleted", vault.seal(SecretStr("tok-b"))),
        ("conn_c", "active", None),  # listed by the vendor, never linked here: no token to read with
    ]
    credentials = Credentials("trackstar", {"TRACKSTAR_ACCESS_TOKEN": "conn_a=stale,conn_b=tok-b,conn_d=tok-d"})
    got = usable_connections(TRACKSTAR, credentials, stored, vault)
    assert [(c.id, c.token.get_secret_value() if c.token else None) for c in got] == [
        ("conn_a", "tok-a"),
        ("conn_d", "tok-d"),
    ]
    with pytest.raises(ConfigError, match="conn_a.*INTEGRATIONS_PIPELINE_SECRET_KEY"):
        usable_connections(TRACKSTAR, credentials, stored, None)
    with pytest.raises(MissingCredentialError, match="TRACKSTAR_ACCESS_TOKEN"):
        usable_connections(TRACKSTAR, Credentials("trackstar", {}), [], vault)


def test_stored_connections_carry_their_actions_and_unknown_stays_unknown():
    vault = TokenVault.from_setting(Fernet.generate_key().decode(), source="KEY")
    stored = [
        ("conn_a", "active", vault.seal(SecretStr("tok-a")), ("get_orders", "get_inventory")),
        ("conn_b", "active", vault.seal(SecretStr("tok-b")), ()),  # stored without actions: unknown, not "none"
        ("conn_c", "active", vault.seal(SecretStr("tok-c"))),  # a row in the old three-field form
    ]
    credentials = Credentials("trackstar", {"TRACKSTAR_ACCESS_TOKEN": "conn_d=tok-d"})
    got = {c.id: c for c in usable_connections(TRACKSTAR, credentials, stored, vault)}
    assert got["conn_a"].available_actions == frozenset({"get_orders", "get_inventory"})
    assert got["conn_b"].available_actions is None and got["conn_c"].available_actions is None
    assert got["conn_d"].available_actions is None  # the fallback variable says nothing of actions
    assert got["conn_a"].lacks("get_bills") and not got["conn_a"].lacks("get_orders")
    assert not got["conn_a"].lacks(None) and not got["conn_b"].lacks("get_bills")
    assert LinkedConnection("c1", "shipbob", ("get_orders",)).as_connection().available_actions == {"get_orders"}
    assert LinkedConnection("c1", "shipbob", ()).as_connection().available_actions is None


@pytest.mark.parametrize(
    ("connector", "event_type", "stream"),
    [
        ("trackstar", "order.updated", "orders"),
        ("trackstar", "order.shipment.created", None),  # a shipment, not the order object
        ("trackstar", "inventory.created", "inventory"),
        ("trackstar", "inventory_ledger.created", "inventory_ledger"),  # not the inventory stream
        ("trackstar", "warehouse-location.updated", "warehouse_locations"),  # not the warehouses stream
        ("trackstar", "bill.created", "bills"),
        ("trackstar", "inbound-shipment.updated", "inbound_shipments"),
        ("trackstar", "inbound_shipment.updated", "inbound_shipments"),
        ("trackstar", "connection.deleted", None),
        ("salestrekker", "DealChangesStage", "deals"),
        ("salestrekker", "ContactCreated", None),
    ],
)
def test_event_types_map_to_streams(connector, event_type, stream):
    hooks = SPECS[connector].webhooks
    assert hooks is not None and hooks.stream_for(event_type) == stream


def _event(event_type: str, data, connection="conn_a", **extra):
    from integrations_pipeline.engine.webhooks import ReceivedEvent

    hooks = TRACKSTAR.webhooks
    assert hooks is not None
    payload = {"event_type": event_type, "connection_id": connection, "data": data, **extra}
    object_id = data.get("id") if isinstance(data, dict) else None
    return ReceivedEvent(
        "trackstar",
        f"m-{event_type}-{object_id}",
        event_type,
        connection,
        hooks.stream_for(event_type),
        object_id,
        payload,
    )


def test_plan_events_sorts_what_to_merge_what_waits_and_what_is_settled():
    from integrations_pipeline.engine.read.events import plan_events

    good = {"id": "o1", "updated_date": "2026-11-25T09:00:00Z", "status": "open"}
    events = [
        _event("order.updated", good),
        _event("order.updated", {"id": "o2", "updated_date": "2026-11-25T09:00:00Z"}, connection="conn_zz"),
        _event("order.updated", {"id": "o3"}, data_truncated=True),
        _event("order.updated", {"status": "x"}),  # no id, no cursor
        _event("connection.deleted", {"connection_id": "conn_a"}),
        _event("product.created", {"id": "p1", "updated_date": "2026-11-25T09:00:00Z"}, connection=None),
    ]
    plan = plan_events(TRACKSTAR, events, {"conn_a"})
    assert plan.records == {"orders": [{**good, "_connection_id": "conn_a"}]}
    assert plan.applies == {"orders": ["m-order.updated-o1"]}
    assert plan.waiting == {
        "m-order.updated-o2": "unknown connection 'conn_zz'",
        "m-order.updated-o3": "needs a read of orders 'o3' by id",
    }
    assert plan.settled == {
        "m-order.updated-None": "rejected: the object has no id, updated_date",
        "m-connection.deleted-None": "kept: event type 'connection.deleted' changes no stream",
        "m-product.created-p1": "rejected: the event names no connection",
    }
