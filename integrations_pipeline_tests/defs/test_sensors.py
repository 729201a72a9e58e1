"""The cross-system sync sensor, ticked with ``build_sensor_context``: which syncs a tick requests
after which streams were materialized, and that its cursor stops it requesting them again."""

from __future__ import annotations

import dagster as dg

from integrations_pipeline.definitions import build_definitions
from integrations_pipeline.defs.sensors import SENSOR_NAME

DEFS = build_definitions(environ={})
SENSOR = next(s for s in DEFS.sensors if s.name == SENSOR_NAME)


def _materialized(instance, *keys):
    for key in keys:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=dg.AssetKey(key.split("/"))))


def _tick(instance, cursor=None):
    result = SENSOR.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor, definitions=DEFS))
    keys = [sorted(k.to_user_string() for k in r.asset_selection) for r in result.run_requests or []]
    return keys, result.cursor, result


def test_a_tick_requests_exactly_the_syncs_reading_an_updated_stream():
    instance = dg.DagsterInstance.ephemeral()
    keys, cursor, result = _tick(instance)
    assert keys == [] and result.skip_message.startswith("no stream read by a sync")

    _materialized(instance, "trackstar/products")
    keys, cursor, _ = _tick(instance, cursor)
    assert keys == [
        ["salesmanago/trackstar_products_to_salesmanago_products", "trakor/trackstar_products_to_trakor_products"]
    ]
    keys, cursor, _ = _tick(instance, cursor)
    assert keys == []  # acted on already

    # A lookup stream counts too: workflows feed only the deal events.
    _materialized(instance, "salestrekker/workflows")
    keys, cursor, _ = _tick(instance, cursor)
    assert keys == [["salesmanago/salestrekker_deals_to_salesmanago_events"]]

    _materialized(instance, "salestrekker/contacts", "trackstar/orders")
    keys, cursor, _ = _tick(instance, cursor)
    assert keys == [
        [
            "datatalks/salestrekker_contacts_to_datatalks_contacts",
            "salesmanago/salestrekker_contacts_to_salesmanago_contacts",
            "salesmanago/salestrekker_deals_to_salesmanago_events",
            "salesmanago/trackstar_orders_to_salesmanago_events",
            "trakor/salestrekker_contacts_to_trakor_parties",
        ]
    ]


def test_the_same_materializations_give_the_same_run_key_and_the_sensor_starts_stopped():
    instance = dg.DagsterInstance.ephemeral()
    _materialized(instance, "trackstar/orders")
    _, _, first = _tick(instance)
    _, _, again = _tick(instance)  # a retried tick from the same cursor
    assert first.run_requests[0].run_key == again.run_requests[0].run_key
    assert SENSOR.default_status == dg.DefaultSensorStatus.STOPPED
