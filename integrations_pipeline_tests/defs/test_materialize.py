"""Materializing the stream assets against the loopback sandbox, into DuckDB and PostgreSQL.

Partitions are materialized as overlapping ranges in a shuffled order, with vendor-side changes in
between; the warehouse must end holding exactly the sandbox's truth, one row per key.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import dagster as dg
import pandas as pd
import pytest

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.definitions import build_definitions
from integrations_pipeline.defs import constants as c
from integrations_pipeline.defs.resources import WarehouseResource
from integrations_pipeline.sandbox import default_sandboxes, sandbox_environment
from integrations_pipeline.sandbox.server import serve
from integrations_pipeline.warehouse import connect_warehouse, table_spec_for
from integrations_pipeline_tests.partitions import connected_instance, days, trackstar_days

SPECS = load_connectors()
# Overlapping ranges, deliberately out of order; together they cover every partition.
RANGES = [
    ("2026-11-07", "2026-11-07"),
    ("2026-10-15", "2026-11-03"),
    ("2026-11-01", "2026-11-10"),
    ("2026-10-01", "2026-10-20"),
    ("2026-11-08", "2026-11-21"),
]
TOUCH_AT = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def _range_tags(first: str, last: str, vendor: str = "trackstar") -> dict[str, str]:
    """Days ``[first, last]``: of both sandbox connections for Trackstar (partitioned by connection × day)."""
    return trackstar_days(first, last) if vendor == "trackstar" else days(first, last)


def _materialize(defs: dg.Definitions, keys, url: str, tags=None, raise_on_error=True):
    return dg.materialize(
        list(defs.assets),
        selection=keys,
        resources={**defs.resources, c.WAREHOUSE_RESOURCE: WarehouseResource(url=url)},
        tags=tags or {},
        instance=connected_instance(),
        raise_on_error=raise_on_error,
    )


def _truth(boxes, vendor: str, stream: str) -> list[dict]:
    spec = SPECS[vendor]
    box = boxes[vendor]
    if spec.connections is None:
        return box.truth(stream)
    out = []
    for conn in box.connections:
        out += [{**r, "_connection_id": conn} for r in box.truth(stream, conn)]
    return out


def _key(pk):
    return lambda r: tuple(str(r.get(k)) for k in pk)


def _plain(spec, stream) -> bool:
    """Not a child stream: those are read once per parent (Trackstar: one packs call per order, 10/s), so they
    are tested on a smaller sandbox (``test_child_streams_carry_their_parent_key``)."""
    return spec.streams[stream].parent is None


def test_shuffled_overlapping_partitions_equal_sandbox_truth(sandboxes, sandbox_env, warehouse_url):
    _, boxes = sandboxes
    defs = build_definitions()
    for n, (first, last) in enumerate(RANGES):
        if n == 2:
            # Vendor-side changes mid-backfill; a later range covers their new cursor date.
            boxes["trackstar"].touch("inventory", 4, TOUCH_AT, "conn_a")
            boxes["trackstar"].add("orders", 3, TOUCH_AT, "conn_b")
            boxes["salestrekker"].touch("deals", 2, TOUCH_AT)
        for vendor, spec in SPECS.items():  # one run per vendor: their partitions differ
            daily = [dg.AssetKey([vendor, s]) for s, st in spec.streams.items() if st.incremental and _plain(spec, s)]
            if daily:
                assert _materialize(defs, daily, warehouse_url, _range_tags(first, last, vendor)).success
    for vendor, spec in SPECS.items():
        full = [dg.AssetKey([vendor, s]) for s, st in spec.streams.items() if not st.incremental and _plain(spec, s)]
        if full and spec.connections is None:
            assert _materialize(defs, full, warehouse_url).success
        elif full:  # partitioned by connection: every connection in one run
            tags = {"dagster/asset_partition_range_start": "conn_a", "dagster/asset_partition_range_end": "conn_b"}
            assert _materialize(defs, full, warehouse_url, tags).success

    wh = connect_warehouse(warehouse_url)
    try:
        for vendor, spec in SPECS.items():
            for stream in filter(lambda s: _plain(spec, s), spec.streams):
                table = table_spec_for(spec, stream)
                got = sorted(wh.read_records(table), key=_key(table.primary_key))
                want = sorted(_truth(boxes, vendor, stream), key=_key(table.primary_key))
                assert len(got) == len(want), f"{vendor}/{stream}"
                assert got == want, f"{vendor}/{stream} differs from the sandbox"
    finally:
        wh.close()


def test_materialization_records_metadata(sandboxes, sandbox_env, tmp_path):
    defs = build_definitions()
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    result = _materialize(
        defs,
        [dg.AssetKey(["trackstar", "inventory"]), dg.AssetKey(["trackstar", "returns"])],
        url,
        _range_tags("2026-11-01", "2026-11-07"),
    )
    # A range run: each partition carries the table's row count and columns (and its own figures:
    # test_partition_metadata.py); the run's totals come once, as an observation of each stream.
    mats = {
        e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    totals = {
        e.asset_key.to_user_string(): e.asset_observation_data.asset_observation.metadata
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    }
    assert c.ROW_COUNT in mats["trackstar/inventory"] and c.COLUMN_SCHEMA in mats["trackstar/inventory"]
    md = {**mats["trackstar/inventory"], **totals["trackstar/inventory"]}
    mats["trackstar/returns"] = {**mats["trackstar/returns"], **totals["trackstar/returns"]}
    for key in (
        c.ROW_COUNT,
        c.RECORDS_FETCHED,
        c.PAGES,
        c.API_CALLS,
        c.RETRIES,
        c.RATE_LIMITED,
        c.SECONDS,
        c.COLUMN_SCHEMA,
    ):
        assert key in md, key
    assert md[c.ROW_COUNT].value == md[c.RECORDS_FETCHED].value > 0
    assert md[c.API_CALLS].value >= md[c.PAGES].value >= 2  # two connections, at least a page each
    assert md[c.WINDOW].value == "[2026-11-01T00:00:00+00:00, 2026-11-08T00:00:00+00:00)"
    assert "conn_b" in mats["trackstar/returns"][c.SKIPPED].value


def test_run_without_credentials_fails_naming_the_variable(sandboxes, sandbox_env, monkeypatch, tmp_path):
    monkeypatch.delenv("TRACKSTAR_API_KEY")
    defs = build_definitions()  # loads fine without it...
    with pytest.raises(dg.DagsterInvalidConfigError, match="TRACKSTAR_API_KEY"):  # ...the run names it
        _materialize(
            defs,
            [dg.AssetKey(["trackstar", "warehouses"])],
            f"duckdb:///{tmp_path / 'w.duckdb'}",
            _range_tags("2026-11-01", "2026-11-01"),
        )


def test_run_without_any_connection_fails_naming_the_variable_and_the_link_flow(
    sandboxes, sandbox_env, monkeypatch, tmp_path
):
    # Connections come from the registry the link flow fills, the variable is the fallback: with neither,
    # the step fails naming both ways.
    monkeypatch.delenv("TRACKSTAR_ACCESS_TOKEN")
    defs = build_definitions()
    result = _materialize(
        defs,
        [dg.AssetKey(["trackstar", "warehouses"])],
        f"duckdb:///{tmp_path / 'w.duckdb'}",
        _range_tags("2026-11-01", "2026-11-01"),
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.to_string()
    assert "conn_a: unknown" in message and "conn_b: unknown" in message
    assert "set TRACKSTAR_ACCESS_TOKEN" in message and "integrations-pipeline serve" in message


def test_secrets_never_reach_logs_metadata_or_errors(sandboxes, sandbox_env, monkeypatch, tmp_path, caplog):
    servers, boxes = sandboxes
    secrets = [
        sandbox_env["TRACKSTAR_API_KEY"],
        "sandbox-token-a",
        "sandbox-token-b",
        sandbox_env["SALESTREKKER_API_KEY"],
    ]
    defs = build_definitions()
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    boxes["trackstar"].faults.inject("503", times=2)
    boxes["trackstar"].faults.inject("429", times=1)
    ok_trackstar = _materialize(
        defs, [dg.AssetKey(["trackstar", "orders"])], url, _range_tags("2026-11-01", "2026-11-03")
    )
    ok_salestrekker = _materialize(
        defs, [dg.AssetKey(["salestrekker", "deals"])], url, _range_tags("2026-11-01", "2026-11-03", "salestrekker")
    )
    # A failing run too: the vendor refuses the key, so the error path is exercised.
    monkeypatch.setenv("TRACKSTAR_API_KEY", sandbox_env["TRACKSTAR_API_KEY"] + "-wrong")
    secrets.append(sandbox_env["TRACKSTAR_API_KEY"] + "-wrong")
    bad = _materialize(
        build_definitions(),
        [dg.AssetKey(["trackstar", "orders"])],
        url,
        _range_tags("2026-11-01", "2026-11-01"),
        raise_on_error=False,
    )
    assert ok_trackstar.success and ok_salestrekker.success and not bad.success
    texts = [caplog.text]
    for result in (ok_trackstar, ok_salestrekker, bad):
        for event in result.all_events:
            texts.append(str(event.message))
            texts.append(repr(event.event_specific_data))
    blob = "\n".join(texts)
    assert "401" in blob  # the failure is explained...
    for secret in secrets:
        assert secret not in blob  # ...without ever showing a credential
    assert json.dumps(sandbox_env).count("sandbox-token-a") == 1  # sanity: the secret is real


def test_a_downstream_asset_takes_a_stream_as_a_dataframe(sandboxes, sandbox_env, warehouse_url):
    """The stream assets' IO manager reads their table: the whole of it, or a daily partition's rows."""
    from integrations_pipeline.defs.io_managers import WAREHOUSE_IO_MANAGER, WarehouseIOManager

    _, boxes = sandboxes
    orders_key = dg.AssetKey(["trackstar", "orders"])
    daily = dg.DailyPartitionsDefinition(start_date="2026-10-01", timezone="UTC")

    @dg.asset(ins={"orders": dg.AssetIn(key=orders_key)})
    def orders_by_connection(orders: pd.DataFrame) -> dict[str, int]:
        return orders.groupby("_connection_id").size().to_dict()

    @dg.asset(ins={"orders": dg.AssetIn(key=orders_key)}, partitions_def=daily)
    def orders_that_day(orders: pd.DataFrame) -> int:
        return len(orders)

    defs = build_definitions()
    resources = {
        **defs.resources,
        c.WAREHOUSE_RESOURCE: WarehouseResource(url=warehouse_url),
        WAREHOUSE_IO_MANAGER: WarehouseIOManager(warehouse=WarehouseResource(url=warehouse_url)),
    }
    everything = [*defs.assets, orders_by_connection, orders_that_day]
    instance = connected_instance()
    dg.materialize(
        everything,
        selection=[orders_key],
        resources=resources,
        instance=instance,
        tags=_range_tags("2026-10-01", "2026-11-21"),
    )
    truth = _truth(boxes, "trackstar", "orders")
    whole = dg.materialize(everything, selection=[orders_by_connection], resources=resources, instance=instance)
    counts = whole.output_for_node("orders_by_connection")
    assert counts == pd.Series([r["_connection_id"] for r in truth]).value_counts().to_dict()
    day = dg.materialize(
        everything, selection=[orders_that_day], resources=resources, instance=instance, partition_key="2026-11-03"
    )
    expected = sum(1 for r in truth if r["updated_date"].startswith("2026-11-03"))
    assert day.output_for_node("orders_that_day") == expected > 0


@pytest.fixture
def small_trackstar(monkeypatch):
    """The sandboxes with 90 Trackstar orders a connection: order packs cost one call per order."""
    boxes = default_sandboxes(seed=3, sizes={"orders": 90})
    with serve(boxes) as servers:
        for name, value in sandbox_environment(servers.base_urls, boxes).items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("WAREHOUSE_URL", raising=False)
        yield boxes


def _child_truth(box, stream: str) -> list[dict]:
    """What a child stream's table must hold: every parent's children, with its key and copied fields."""
    parent = SPECS["trackstar"].streams[stream].parent
    out = []
    for conn in box.connections:
        for p in box.truth(parent.stream, conn):
            copied = {column: p[source] for source, column in parent.fields.items()}
            out += [
                {**child, parent.key_column: p[parent.field], **copied, "_connection_id": conn}
                for child in box.children(stream, p[parent.field], conn)
            ]
    return out


def test_child_streams_carry_their_parent_key(small_trackstar, tmp_path):
    box = small_trackstar["trackstar"]
    defs = build_definitions()
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    children = [dg.AssetKey(["trackstar", "warehouse_locations"]), dg.AssetKey(["trackstar", "order_packs"])]
    assert _materialize(defs, children, url, _range_tags("2026-10-20", "2026-11-21")).success
    # Orders changed, and new ones, after the first load: a later range sees them; an earlier one fills the rest.
    box.touch("orders", 3, TOUCH_AT, "conn_a")
    box.add("orders", 2, TOUCH_AT, "conn_b")
    box.touch("warehouse_locations", 2, TOUCH_AT, "conn_b")
    assert _materialize(defs, children, url, _range_tags("2026-11-20", "2026-11-20")).success
    assert _materialize(defs, children, url, _range_tags("2026-10-01", "2026-10-25")).success

    # The child asset's lineage names its parent's asset.
    graph = defs.get_repository_def().asset_graph
    assert graph.get(children[1]).parent_keys == {dg.AssetKey(["trackstar", "orders"])}
    wh = connect_warehouse(url)
    try:
        for key in children:
            table = table_spec_for(SPECS["trackstar"], key.path[1])
            assert table.primary_key[:2] == (
                "_connection_id",
                SPECS["trackstar"].streams[key.path[1]].parent.key_column,
            )
            got = sorted(wh.read_records(table), key=_key(table.primary_key))
            want = sorted(_child_truth(box, key.path[1]), key=_key(table.primary_key))
            assert len(got) == len(want) > 0, key
            assert got == want, f"{key.to_user_string()} differs from the sandbox"
    finally:
        wh.close()


def test_the_connections_of_a_stream_are_read_side_by_side(sandboxes, sandbox_env, tmp_path):
    """Two connections, two tokens, two quotas: the first request of one connection is held until a
    request of the other arrives. Read one after another, the other would never come while it waits."""
    import threading

    _, boxes = sandboxes
    box = boxes["trackstar"]
    tokens = dict(box.connections)  # connection id -> access token
    arrived = {conn: threading.Event() for conn in tokens}
    met: list[bool] = []
    inner = box.handle

    def vendor(request):
        token = request.headers.get("x-trackstar-access-token")
        conn = next((c for c, t in tokens.items() if t == token), None)
        if conn is not None and request.url.path == "/wms/warehouses":
            arrived[conn].set()
            if not met:
                other = next(c for c in tokens if c != conn)
                met.append(arrived[other].wait(60))  # bounded: a sequential read fails, it does not hang
        return inner(request)

    box.handle = vendor
    defs = build_definitions()
    key = dg.AssetKey(["trackstar", "warehouses"])
    result = _materialize(
        defs, [key], f"duckdb:///{tmp_path / 'w.duckdb'}", tags=_range_tags("2026-11-20", "2026-11-20")
    )
    assert result.success
    assert met and all(met)  # each first request that waited saw the other connection's arrive
