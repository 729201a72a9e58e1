"""Webhook events into data: the sandboxes send webhooks as the vendors do, the service stores them, the
``webhook_events`` sensor asks for one run of the events assets and the syncs reading the changed streams, and
the events assets leave the stream tables equal to the vendor's truth with no API call; run alone (the
``apply_webhook_events`` job), the sync sensor then sees the streams materialized. On DuckDB and PostgreSQL, over loopback.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

import dagster as dg
from starlette.testclient import TestClient

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.dagster import build_definitions
from integrations_pipeline.defs import constants as c
from integrations_pipeline.defs.events import JOB_NAME, SENSOR_NAME
from integrations_pipeline.defs.resources import WarehouseResource
from integrations_pipeline.defs.sensors import SENSOR_NAME as SYNC_SENSOR
from integrations_pipeline.engine.auth import Credentials, secret_env_vars
from integrations_pipeline.engine.client import ClientFactory
from integrations_pipeline.service.app import ServiceSettings, create_app
from integrations_pipeline.warehouse import table_spec_for
from integrations_pipeline.warehouse.inbox import open_inbox
from integrations_pipeline_tests.partitions import connected_instance, trackstar_days

SPECS = load_connectors()
ORDERS = dg.AssetKey(["trackstar", "orders"])
DEALS = dg.AssetKey(["salestrekker", "deals"])
TRACKSTAR_EVENTS = dg.AssetKey(["trackstar", "webhook_events"])
# After every generated record (the sandbox data ends 2026-11-21): a real change only moves a cursor forward.
AT = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
RANGE = trackstar_days("2026-10-01", "2026-11-21")


def _service(env: dict[str, str], url: str) -> TestClient:
    def client_for(spec):
        return ClientFactory(Credentials.from_environ(spec.name, secret_env_vars(spec), env), environ=env).connector(
            spec
        )

    return TestClient(create_app(ServiceSettings.from_environ(SPECS, env), SPECS, lambda: open_inbox(url), client_for))


def _orders(url: str) -> dict[tuple[str, str], dict]:
    with open_inbox(url) as wh:
        rows = wh.read_records(table_spec_for(SPECS["trackstar"], "orders"))
    return {(r["_connection_id"], r["id"]): r for r in rows}


def _truth(box) -> dict[tuple[str, str], dict]:
    return {(cid, r["id"]): r for cid in box.connections for r in box.truth("orders", cid)}


def _same(stored: dict, truth: dict) -> bool:
    # The fields a sync reads from an order, compared as the warehouse gives them back.
    fields = ("id", "status", "updated_date", "total_price")
    return all(str(stored.get(f)) == str(truth.get(f)) for f in fields)


def test_webhooks_reach_the_stream_tables_with_no_api_call(sandboxes, sandbox_env, warehouse_url):
    _, boxes = sandboxes
    trackstar, salestrekker = boxes["trackstar"], boxes["salestrekker"]
    defs = build_definitions(warehouse_url=warehouse_url)
    instance = connected_instance()
    first = dg.materialize(
        list(defs.assets), selection=[ORDERS], resources=defs.resources, tags=RANGE, instance=instance
    )
    assert first.success

    http = _service(sandbox_env, warehouse_url)
    trackstar.webhooks.subscribe("http://testserver/webhooks/trackstar")
    salestrekker.webhooks.subscribe(f"http://testserver/webhooks/salestrekker/{salestrekker.webhook_token}")
    try:
        # Two rounds of changes to the same orders: events arrive shuffled, so older objects come after newer.
        trackstar.touch("orders", 80, AT, "conn_a")
        trackstar.touch("orders", 80, AT.replace(minute=45), "conn_a")
        trackstar.touch("orders", 40, AT, "conn_b")
        salestrekker.touch("deals", 3, AT)
        shuffled = lambda batch: random.Random(11).sample(batch, len(batch))  # noqa: E731
        assert trackstar.webhooks.deliver(http, order=shuffled) == 200
        assert salestrekker.webhooks.deliver(http) == 3
    finally:
        trackstar.webhooks.url = salestrekker.webhooks.url = None

    sensor = next(s for s in defs.sensors if s.name == SENSOR_NAME)
    context = dg.build_sensor_context(
        instance=instance, resources={c.WAREHOUSE_RESOURCE: WarehouseResource(url=warehouse_url)}
    )
    tick = sensor(context)
    (request,) = tick.run_requests
    assert tick.cursor
    # One run: both vendors' events assets, then exactly the syncs that read orders or deals (not products).
    assert {k.to_user_string() for k in request.asset_selection} == {
        "trackstar/webhook_events",
        "salestrekker/webhook_events",
        "salesmanago/trackstar_orders_to_salesmanago_events",
        "salesmanago/salestrekker_deals_to_salesmanago_events",
        "salesmanago/salestrekker_contacts_to_salesmanago_contacts",  # reads deals as a lookup
    }
    again = sensor(
        dg.build_sensor_context(
            instance=instance,
            cursor=tick.cursor,
            resources={c.WAREHOUSE_RESOURCE: WarehouseResource(url=warehouse_url)},
        )
    )
    assert isinstance(again, dg.SkipReason)

    # Here the events assets alone (apply_webhook_events, the manual catch-up); the sensor's whole run, syncs
    # included, is test_salestrekker_events.py's last test.
    calls_before = trackstar.counts["requests"]
    job = defs.resolve_job_def(JOB_NAME)
    result = job.execute_in_process(instance=instance)
    assert result.success
    assert trackstar.counts["requests"] == calls_before  # zero Trackstar calls: its events carry the objects

    stored, truth = _orders(warehouse_url), _truth(trackstar)
    assert stored.keys() == truth.keys()
    bad = [
        (k, {f: (stored[k].get(f), truth[k].get(f)) for f in ("status", "updated_date", "total_price")})
        for k in truth
        if not _same(stored[k], truth[k])
    ]
    assert bad == [], (len(bad), bad[:3])

    with open_inbox(warehouse_url) as wh:
        events = wh.read_events("trackstar")
        deals = wh.read_events("salestrekker")
    assert len(events) == 200 and {e.outcome for e in events} == {"applied"}
    assert all(e.applied_at for e in events)
    # Salestrekker sends ids only: each deal was read by id (test_salestrekker_events.py has the details).
    assert len(deals) == 3 and {e.outcome for e in deals} == {"applied: read by id"}

    # The streams are reported materialized for the day the changes carry, so the sync sensor acts on them.
    mats = [
        e.event_specific_data.materialization
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    ]
    assert {(m.asset_key, m.partition) for m in mats} == {
        (ORDERS, "conn_a|2026-11-25"),
        (ORDERS, "conn_b|2026-11-25"),
        (DEALS, "2026-11-25"),
        (TRACKSTAR_EVENTS, None),
        (dg.AssetKey(["salestrekker", "webhook_events"]), None),
    }
    # Each stream materialization carries the table's row count after the merge (the UI's overview shows it).
    assert {m.metadata[c.ROW_COUNT].value for m in mats if m.asset_key == ORDERS} == {len(stored)}
    (own,) = [m for m in mats if m.asset_key == TRACKSTAR_EVENTS]
    assert own.metadata["applied_events"].value == 200 and own.metadata[c.API_CALLS].value == 0
    sync_sensor = next(s for s in defs.sensors if s.name == SYNC_SENSOR)
    due = sync_sensor(dg.build_sensor_context(instance=instance, cursor=None))
    selected = {k.to_user_string() for r in due.run_requests for k in r.asset_selection}
    assert "salesmanago/trackstar_orders_to_salesmanago_events" in selected

    # Replays change nothing: stored once, applied once.
    rerun = job.execute_in_process(instance=instance)
    rematerialized = {e.asset_key for e in rerun.all_events if e.event_type_value == "ASSET_MATERIALIZATION"}
    assert rerun.success and not rematerialized - {TRACKSTAR_EVENTS, dg.AssetKey(["salestrekker", "webhook_events"])}
    assert _orders(warehouse_url) == stored


def test_an_event_for_an_unknown_connection_waits_and_is_reported(sandboxes, sandbox_env, warehouse_url):
    _, boxes = sandboxes
    trackstar = boxes["trackstar"]
    defs = build_definitions(warehouse_url=warehouse_url)
    http = _service(sandbox_env, warehouse_url)
    trackstar.webhooks.subscribe("http://testserver/webhooks/trackstar")
    try:
        trackstar.touch("orders", 2, AT, "conn_a")
        # An event naming a connection nobody linked or configured (signed like the others).
        trackstar.announce_connection(
            "order.updated", "conn_zz", {"id": "ord-x", "updated_date": "2026-11-25T09:00:00Z"}
        )
        assert trackstar.webhooks.deliver(http) == 3
    finally:
        trackstar.webhooks.url = None
    result = defs.resolve_job_def(JOB_NAME).execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert result.success
    with open_inbox(warehouse_url) as wh:
        events = {e.connection_id: e for e in wh.read_events("trackstar")}
    assert events["conn_zz"].applied_at is None and events["conn_zz"].outcome == "unknown connection 'conn_zz'"
    assert events["conn_a"].outcome == "applied"
    assert ("conn_zz", "ord-x") not in _orders(warehouse_url)
