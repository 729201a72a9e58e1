"""Per-connection runs: each Trackstar customer is a partition dimension of its own, against the loopback sandbox.

- a revoked token fails only that customer's partitions (the UI's partition status says which), the registry
  marks it, and the next schedule tick leaves it out;
- a customer who connects is onboarded by Trackstar's ``connection.created`` webhook alone (its token sealed
  before it is stored), gets its partition and one run of its whole history; a completed historical sync
  reads that resource's history again; ``connection.deleted`` cancels its pending runs;
- the ``trackstar/connections`` asset reconciles the registry with ``GET /connections``;
- the daily schedule reads yesterday with the spec's lookback: a record stamped late on the day before, which
  appeared after that day's run, is read by the next day's run.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.definitions import build_definitions
from integrations_pipeline.defs.connections import CONNECTION_TAG
from integrations_pipeline.defs.events import JOB_NAME
from integrations_pipeline.warehouse.inbox import open_inbox
from integrations_pipeline_tests.linking import link, service
from integrations_pipeline_tests.partitions import (
    RANGE_END,
    RANGE_START,
    connected_instance,
    stored_by_connection,
    trackstar_days,
)

SPECS = load_connectors()
ORDERS = dg.AssetKey(["trackstar", "orders"])
YESTERDAY = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
DAY_BEFORE = (datetime.now(UTC).date() - timedelta(days=2)).isoformat()


def _status(url: str) -> dict[str, str]:
    with open_inbox(url) as wh:
        return {s.connection_id: s.status for s in wh.read_connections("trackstar")}


def _run(defs, instance, tags, keys=(ORDERS,)):
    return dg.materialize(
        list(defs.assets),
        selection=list(keys),
        resources=defs.resources,
        tags=tags,
        instance=instance,
        raise_on_error=False,
    )


def test_a_revoked_token_fails_only_that_customers_partitions(sandboxes, linked_env, warehouse_url):
    _, boxes = sandboxes
    trackstar = boxes["trackstar"]
    http = service(linked_env, warehouse_url)
    link(http, linked_env, "code_a")
    link(http, linked_env, "code_b")
    defs = build_definitions(warehouse_url=warehouse_url)
    with dg.instance_for_test() as instance:  # a schedule's resources need an instance with a ref
        _revoked_token(defs, connected_instance(instance=instance), trackstar, http, linked_env, warehouse_url)


def _revoked_token(defs, instance, trackstar, http, linked_env, warehouse_url) -> None:
    assert _run(defs, instance, trackstar_days("2026-10-01", "2026-11-21")).success

    trackstar.revoke("conn_b")  # the customer revoked access in their WMS; Trackstar still lists the connection
    days = trackstar_days("2026-11-20", "2026-11-21")
    result = _run(defs, instance, days)
    assert not result.success
    reported = {e.partition for e in result.get_asset_materialization_events()}
    assert reported == {"conn_a|2026-11-20", "conn_a|2026-11-21"}
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "conn_b: revoked" in failure.step_failure_data.error.message
    assert _status(warehouse_url) == {"conn_a": "active", "conn_b": "revoked"}

    # What the UI shows per partition: conn_a's days materialized, exactly conn_b's failed.
    pdef = defs.resolve_assets_def(ORDERS).partitions_def
    keys = ["conn_a|2026-11-20", "conn_a|2026-11-21", "conn_b|2026-11-20", "conn_b|2026-11-21"]
    status = instance.get_status_by_partition(ORDERS, keys, pdef)
    assert {k: v.value for k, v in status.items()} == {
        "conn_a|2026-11-20": "MATERIALIZED",
        "conn_a|2026-11-21": "MATERIALIZED",
        "conn_b|2026-11-20": "FAILED",
        "conn_b|2026-11-21": "FAILED",
    }

    # The next daily tick runs the customers that can be read, one run each: conn_b waits for a new link.
    schedule = defs.resolve_schedule_def("trackstar_incremental_sync_schedule")
    now = datetime.now(UTC)
    with dg.build_schedule_context(
        instance=instance,
        resources=defs.resources,
        scheduled_execution_time=now,
        repository_def=defs.get_repository_def(),
    ) as context:
        requests = list(schedule.evaluate_tick(context).run_requests or [])
    assert [r.tags[CONNECTION_TAG] for r in requests] == ["conn_a"]
    # Yesterday (UTC) and the spec's lookback day before it, one run.
    assert (
        requests[0].tags[RANGE_START] == f"conn_a|{DAY_BEFORE}" and requests[0].tags[RANGE_END] == f"conn_a|{YESTERDAY}"
    )

    # Linking again makes it active: the same run succeeds.
    link(http, linked_env, trackstar.relink("conn_b"))
    assert _status(warehouse_url)["conn_b"] == "active"
    assert _run(defs, instance, days).success


def test_a_customer_connecting_is_onboarded_by_webhook_and_read_once_whole(sandboxes, linked_env, warehouse_url):
    _, boxes = sandboxes
    trackstar = boxes["trackstar"]
    http = service(linked_env, warehouse_url)
    trackstar.webhooks.subscribe("http://testserver/webhooks/trackstar")
    defs = build_definitions(warehouse_url=warehouse_url)
    instance = dg.DagsterInstance.ephemeral()
    sensor = defs.resolve_sensor_def("trackstar_connections")
    events_job = defs.resolve_job_def(JOB_NAME)
    try:
        trackstar.connect("conn_c")  # Trackstar posts connection.created, the access token in data
        assert trackstar.webhooks.deliver(http) == 1
        token = trackstar.connections["conn_c"]
        with open_inbox(warehouse_url) as wh:
            (event,) = wh.read_events("trackstar")
        assert token not in str(event.payload) and "sealed" in str(event.payload["data"]["access_token"])
        if warehouse_url.startswith("duckdb:///"):
            assert token.encode() not in Path(warehouse_url.removeprefix("duckdb://")).read_bytes()
        assert events_job.execute_in_process(instance=instance).success
        assert _status(warehouse_url) == {"conn_c": "active"}

        # The sensor gives it a partition and one run of its whole history.
        with dg.build_sensor_context(instance=instance, resources=defs.resources, definitions=defs) as context:
            tick = sensor.evaluate_tick(context)
        (added,) = tick.dynamic_partitions_requests
        assert list(added.partition_keys) == ["conn_c"]
        (history,) = tick.run_requests
        assert history.tags[RANGE_START] == "conn_c|2026-10-01" and history.tags[RANGE_END] == f"conn_c|{YESTERDAY}"
        assert history.tags[CONNECTION_TAG] == "conn_c"
        instance.add_dynamic_partitions("trackstar_connections", ["conn_c"])  # what the daemon does with the tick
        # The request covers every incremental stream; reading the orders alone shows the range reads whole
        # (the other streams' history costs minutes at the sandbox's rate, one packs call per order).
        assert ORDERS in (history.asset_selection or []) and len(history.asset_selection or []) > 1
        assert _run(defs, instance, history.tags).success
        assert stored_by_connection(warehouse_url)["conn_c"] == {r["id"] for r in trackstar.truth("orders", "conn_c")}

        # Once only: the next tick requests nothing.
        with dg.build_sensor_context(
            instance=instance, resources=defs.resources, definitions=defs, cursor=tick.cursor
        ) as context:
            again = sensor.evaluate_tick(context)
        assert not again.run_requests and not again.dynamic_partitions_requests

        # Trackstar finished its historical sync of the orders: that stream's days are read again.
        trackstar.announce_connection(
            "connection.historical-sync-completed",
            "conn_c",
            {
                "oldest_data_date": "2026-11-01T00:00:00Z",
                "newest_data_date": "2026-11-10T08:00:00Z",
                "resource": "orders",
            },
        )
        assert trackstar.webhooks.deliver(http) == 1
        assert events_job.execute_in_process(instance=instance).success
        with dg.build_sensor_context(
            instance=instance, resources=defs.resources, definitions=defs, cursor=again.cursor
        ) as context:
            completed = sensor.evaluate_tick(context)
        (rerun,) = completed.run_requests
        assert rerun.asset_selection == [ORDERS]
        assert (rerun.tags[RANGE_START], rerun.tags[RANGE_END]) == ("conn_c|2026-11-01", "conn_c|2026-11-10")

        # The customer disconnects: a run still waiting for conn_c is cancelled, the registry says deleted.
        job = defs.resolve_job_def("trackstar_incremental_sync")
        pending = instance.create_run_for_job(
            job, tags={CONNECTION_TAG: "conn_c", "integrations_pipeline/vendor": "trackstar"}
        )
        trackstar.delete_connection("conn_c")
        assert trackstar.webhooks.deliver(http) == 1
        assert events_job.execute_in_process(instance=instance).success
        assert _status(warehouse_url) == {"conn_c": "deleted"}
        with dg.build_sensor_context(
            instance=instance, resources=defs.resources, definitions=defs, cursor=completed.cursor
        ) as context:
            after = sensor.evaluate_tick(context)
        assert not after.run_requests
        run = instance.get_run_by_id(pending.run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.CANCELED
    finally:
        trackstar.webhooks.url = None


def test_the_registry_asset_reconciles_with_the_vendors_list(sandboxes, linked_env, warehouse_url):
    _, boxes = sandboxes
    trackstar = boxes["trackstar"]
    http = service(linked_env, warehouse_url)
    link(http, linked_env, "code_a")
    link(http, linked_env, "code_b")
    trackstar.delete_connection("conn_b")
    trackstar.connect("conn_c")  # linked elsewhere: listed by Trackstar, its token never reached us
    defs = build_definitions(warehouse_url=warehouse_url)
    instance = dg.DagsterInstance.ephemeral()
    calls_before = trackstar.counts["requests"]
    result = dg.materialize(
        list(defs.assets),
        selection=[dg.AssetKey(["trackstar", "connections"])],
        resources=defs.resources,
        instance=instance,
    )
    assert result.success
    assert trackstar.counts["requests"] == calls_before + 1  # one list call, no connection token used
    assert _status(warehouse_url) == {"conn_a": "active", "conn_b": "deleted", "conn_c": "active"}
    (mat,) = result.get_asset_materialization_events()
    md = mat.step_materialization_data.materialization.metadata
    assert md["added"].value == 1 and md["deactivated"].value == "conn_b" and md["usable"].value == 1
    table = md["connections"].value
    assert "| `conn_c` |" in table and "no token" in table
    assert trackstar.connections["conn_c"] not in str(md)
    # Every connection keeps a partition (conn_b's history stays visible); only conn_a is read.
    assert instance.get_dynamic_partitions("trackstar_connections") == ["conn_a", "conn_b", "conn_c"]


def test_the_daily_schedule_reads_records_stamped_late_with_its_lookback(sandboxes, linked_env, warehouse_url):
    """Trackstar syncs each WMS hourly or less: an order stamped 23:30 on 2026-11-20 can appear after the 01:00
    run of the 21st that read the 20th. The next tick's run (for the 21st) covers the 20th again."""
    _, boxes = sandboxes
    trackstar = boxes["trackstar"]
    http = service(linked_env, warehouse_url)
    link(http, linked_env, "code_a")
    defs = build_definitions(warehouse_url=warehouse_url)
    assert SPECS["trackstar"].lookback_days() >= 1
    with dg.instance_for_test() as instance:
        connected_instance(["conn_a"], instance=instance)
        assert _run(defs, instance, {"dagster/partition": "conn_a|2026-11-20"}).success
        late = set(trackstar.add("orders", 3, datetime(2026, 11, 20, 23, 30, tzinfo=UTC), "conn_a"))
        assert not late & stored_by_connection(warehouse_url)["conn_a"]

        # Without a lookback the 21st's partition alone never sees them: they are stamped the 20th.
        assert _run(defs, instance, {"dagster/partition": "conn_a|2026-11-21"}).success
        assert not late & stored_by_connection(warehouse_url)["conn_a"]

        schedule = defs.resolve_schedule_def("trackstar_incremental_sync_schedule")
        with dg.build_schedule_context(
            instance=instance,
            resources=defs.resources,
            scheduled_execution_time=datetime(2026, 11, 22, 1, 0, tzinfo=UTC),
            repository_def=defs.get_repository_def(),
        ) as context:
            (request,) = list(schedule.evaluate_tick(context).run_requests or [])
        assert (request.tags[RANGE_START], request.tags[RANGE_END]) == ("conn_a|2026-11-20", "conn_a|2026-11-21")
        result = _run(defs, instance, request.tags)
        assert result.success
        assert late <= stored_by_connection(warehouse_url)["conn_a"]
        # The 20th is materialized again, with the late orders among its records.
        assert {e.partition for e in result.get_asset_materialization_events()} >= {"conn_a|2026-11-20"}
