"""What each partition says about itself: a range run gives every partition its own record count and cursor window
(from the table after the load: the rows whose cursor falls on its day, and its connection's), reports the run's
totals once as an observation instead of copying them onto every partition, and keeps the table's row count and
columns on each. A one-partition run keeps its figures on the materialization. Against the loopback sandboxes, on
DuckDB and PostgreSQL."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import dagster as dg

from integrations_pipeline.definitions import build_definitions
from integrations_pipeline.defs import constants as c
from integrations_pipeline.defs.assets import PARTITION_RECORDS, PARTITION_WINDOW
from integrations_pipeline_tests.partitions import connected_instance, days, trackstar_days

DEALS = dg.AssetKey(["salestrekker", "deals"])
ORDERS = dg.AssetKey(["trackstar", "orders"])


def _iso(value: str) -> str:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC).isoformat().replace("+00:00", "Z")


def _materializations(result, key) -> dict[str, dict]:
    return {
        m.partition: m.metadata
        for e in result.get_asset_materialization_events()
        if (m := e.step_materialization_data.materialization).asset_key == key
    }


def _observations(result, key) -> list[dict]:
    return [
        o.metadata
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
        and (o := e.asset_observation_data.asset_observation).asset_key == key
    ]


def test_each_day_of_a_range_reports_its_own_records_and_window(sandboxes, sandbox_env, warehouse_url):
    _, boxes = sandboxes
    defs = build_definitions(warehouse_url=warehouse_url)
    first, last = "2026-11-10", "2026-11-16"
    result = dg.materialize(
        list(defs.assets), selection=[DEALS], resources=defs.resources, tags=days(first, last), raise_on_error=False
    )
    assert result.success
    truth = [d for d in boxes["salestrekker"].truth("deals") if first <= d["updatedAt"][:10] <= last]
    by_day = Counter(d["updatedAt"][:10] for d in truth)
    assert len(by_day) >= 3  # the range holds several days with deals, so equal figures would be a copy

    mats = _materializations(result, DEALS)
    assert sorted(mats) == [f"2026-11-{d}" for d in range(10, 17)]
    for day, md in mats.items():
        assert md[PARTITION_RECORDS].value == by_day.get(day, 0), day
        stamps = sorted(_iso(d["updatedAt"]) for d in truth if d["updatedAt"][:10] == day)
        assert md[PARTITION_WINDOW].value == (f"{stamps[0]} … {stamps[-1]}" if stamps else "no records")
        assert c.API_CALLS not in md and c.RECORDS_FETCHED not in md  # the run's totals are not copied here
        assert md[c.ROW_COUNT].value == len(truth)  # the table's, the same on each
    (totals,) = _observations(result, DEALS)
    assert totals[c.RECORDS_FETCHED].value == len(truth) and totals[c.API_CALLS].value >= 1
    assert totals["partitions"].value == f"{first} … {last} (7)"


def test_each_connection_day_reports_its_own_and_one_day_keeps_the_runs_figures(sandboxes, sandbox_env, warehouse_url):
    _, boxes = sandboxes
    trackstar = boxes["trackstar"]
    defs = build_definitions(warehouse_url=warehouse_url)
    instance = connected_instance()
    first, last = "2026-11-18", "2026-11-21"
    result = dg.materialize(
        list(defs.assets),
        selection=[ORDERS],
        resources=defs.resources,
        tags=trackstar_days(first, last),
        instance=instance,
    )
    mats = _materializations(result, ORDERS)
    assert len(mats) == 8  # two connections × four days
    for key, md in mats.items():
        conn, day = key.split("|")
        own = [o for o in trackstar.truth("orders", conn) if o["updated_date"][:10] == day]
        assert md[PARTITION_RECORDS].value == len(own), key
    assert len({md[PARTITION_RECORDS].value for md in mats.values()}) > 1
    assert len(_observations(result, ORDERS)) == 1

    one = dg.materialize(
        list(defs.assets),
        selection=[ORDERS],
        resources=defs.resources,
        partition_key=f"conn_a|{last}",
        instance=instance,
    )
    (md,) = _materializations(one, ORDERS).values()
    assert md[c.API_CALLS].value >= 1 and c.RECORDS_FETCHED in md  # one partition: the run is the partition
    assert not _observations(one, ORDERS)


def test_partition_metadata_reaches_dagster_in_one_step_and_refuses_partitions_not_in_the_run():
    """``add_partition_metadata`` hands the step's accumulator every partition's figures at once (Dagster's own
    ``add_asset_metadata`` recomputes the run's range on every call: quadratic over connections × days). This
    fails on a Dagster whose internals changed, so the public fallback is never taken unnoticed."""
    from integrations_pipeline.defs.partition_metadata import add_partition_metadata, fast_path

    daily = dg.DailyPartitionsDefinition(start_date="2026-11-01")
    seen: dict[str, object] = {}

    @dg.asset(partitions_def=daily, backfill_policy=dg.BackfillPolicy.single_run())
    def ranged(context) -> dg.MaterializeResult:
        seen["fast"] = fast_path(context) is not None
        keys = context.partition_keys
        add_partition_metadata(context, context.asset_key, {k: {"day": k} for k in keys})
        add_partition_metadata(context, context.asset_key, {keys[0]: {"first": True}})  # merged, not replaced
        try:
            add_partition_metadata(context, context.asset_key, {"2026-12-31": {"day": "x"}})
        except dg.DagsterInvariantViolationError as exc:
            seen["refused"] = str(exc)
        return dg.MaterializeResult()

    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [ranged],
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": "2026-11-01",
                "dagster/asset_partition_range_end": "2026-11-03",
            },
        )
    assert result.success and seen["fast"] is True
    assert "2026-12-31" in str(seen["refused"])
    got = _materializations(result, dg.AssetKey("ranged"))
    assert {p: dict(m) for p, m in got.items()} == {
        "2026-11-01": {"day": dg.TextMetadataValue("2026-11-01"), "first": dg.BoolMetadataValue(True)},
        "2026-11-02": {"day": dg.TextMetadataValue("2026-11-02")},
        "2026-11-03": {"day": dg.TextMetadataValue("2026-11-03")},
    }
