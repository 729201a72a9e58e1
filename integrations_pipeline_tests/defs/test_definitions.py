"""The code location loads with no credentials and shows every stream as a well-described asset."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import dagster as dg
import pytest

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.definitions import build_definitions, defs
from integrations_pipeline.syncs import load_syncs

SPECS = load_connectors()
STREAM_ASSETS = {f"{c.name}/{s}" for c in SPECS.values() for s in c.streams}
SYNC_ASSETS = {f"{s.target_connector}/{s.name}" for s in load_syncs(SPECS).values()}
# Vendors with a link flow have a connection registry asset besides their streams.
REGISTRY_ASSETS = {f"{c.name}/connections" for c in SPECS.values() if c.connections and c.connections.link}
# Vendors that send webhooks have an events asset (stored events merged into their streams).
EVENTS_ASSETS = {f"{c.name}/webhook_events" for c in SPECS.values() if c.webhooks and c.streams}
EXPECTED = STREAM_ASSETS | SYNC_ASSETS | REGISTRY_ASSETS | EVENTS_ASSETS


def _assets(d: dg.Definitions) -> dict[str, dg.AssetSpec]:
    graph = d.get_repository_def().asset_graph
    return {k.to_user_string(): graph.get(k) for k in graph.get_all_asset_keys() if graph.get(k).is_materializable}


def test_module_definitions_load():
    assert set(_assets(defs)) == EXPECTED


def test_load_with_empty_environment_and_assets_are_described():
    nodes = _assets(build_definitions(environ={}))
    assert set(nodes) == EXPECTED
    for key, node in nodes.items():
        if key in SYNC_ASSETS or key in REGISTRY_ASSETS or key in EVENTS_ASSETS:
            continue
        vendor, stream = key.split("/")
        spec = SPECS[vendor]
        assert node.group_name == vendor
        assert node.code_version == spec.fingerprint()
        assert spec.streams[stream].description in (node.description or "")
        assert {spec.protocol, "duckdb"} <= set(node.kinds)
        assert node.metadata["dagster/table_name"] == f"{vendor}.{stream}"
        assert isinstance(node.metadata["dagster/column_schema"], dg.TableSchema)
        if spec.connections is not None:
            # Per customer: connection × day, or connection alone for a full-refresh stream.
            pdef = node.partitions_def
            if spec.streams[stream].incremental:
                assert isinstance(pdef, dg.MultiPartitionsDefinition)
                dims = {d.name: d.partitions_def for d in pdef.partitions_defs}
                assert isinstance(dims["connection"], dg.DynamicPartitionsDefinition)
                assert dims["connection"].name == f"{vendor}_connections"
                assert dims["day"].start.strftime("%Y-%m-%d") == spec.streams[stream].incremental.start_date
            else:
                assert isinstance(pdef, dg.DynamicPartitionsDefinition)
        elif spec.streams[stream].incremental:
            assert isinstance(node.partitions_def, dg.DailyPartitionsDefinition)
            assert node.partitions_def.start.strftime("%Y-%m-%d") == spec.streams[stream].incremental.start_date
        else:
            assert node.partitions_def is None


def test_incremental_assets_backfill_in_a_single_run():
    for ad in build_definitions(environ={}).assets:
        if ad.partitions_def is not None:
            assert ad.backfill_policy == dg.BackfillPolicy.single_run()


def test_editing_a_spec_changes_code_version():
    spec = SPECS["trackstar"]
    edited = spec.model_copy(update={"timeout_seconds": spec.timeout_seconds + 1})
    assert edited.fingerprint() != spec.fingerprint()


def test_credentials_resources_show_env_var_names_only():
    d = build_definitions(
        environ={"SALESTREKKER_EMAIL": "x", "SALESTREKKER_PASSWORD": "y", "TRACKSTAR_ACCESS_TOKEN": "conn_a=t"}
    )
    resources = d.resources
    trackstar = resources["trackstar_credentials"]
    assert trackstar.trackstar_api_key == dg.EnvVar("TRACKSTAR_API_KEY")
    assert trackstar.trackstar_access_token == dg.EnvVar("TRACKSTAR_ACCESS_TOKEN")
    # Only the service verifies webhooks: a run never needs the webhook secret.
    assert trackstar.trackstar_webhook_secret is None
    # The access-token variable is a fallback to the connections the link flow stores: unset, it is not required.
    unset = build_definitions(environ={}).resources["trackstar_credentials"]
    assert unset.trackstar_access_token is None and unset.trackstar_api_key == dg.EnvVar("TRACKSTAR_API_KEY")
    st = resources["salestrekker_credentials"]
    # Only the chosen login alternative is required: here email/password, not the API key.
    assert st.salestrekker_email == dg.EnvVar("SALESTREKKER_EMAIL")
    assert st.salestrekker_api_key is None


def test_stream_columns_carry_the_vendors_field_descriptions():
    """Trackstar's columns are described as openapi.json describes its fields (the UI's column list shows them)."""
    node = build_definitions(environ={}).resolve_asset_graph().get(dg.AssetKey(["trackstar", "inventory"]))
    columns = {c.name: c for c in node.metadata["dagster/column_schema"].columns}
    assert columns["onhand"].description == "The total amount of inventory in the warehouse."
    assert "connection" in (columns["_connection_id"].description or "")
    # openapi.json describes "name" and "sku" by their names alone and "measurements" not at all.
    assert {n for n, c in columns.items() if not c.description} == {"name", "sku", "measurements"}


def test_schedules_and_jobs_exist_per_connector():
    d = build_definitions(environ={})
    repo = d.get_repository_def()
    names = {s.name for s in repo.schedule_defs}
    assert any(n.startswith("trackstar_incremental_sync") for n in names)
    assert {j.name for j in repo.get_all_jobs()} >= {"trackstar_incremental_sync", "salestrekker_full_refresh"}


def test_the_daily_schedule_of_a_vendor_without_connections_reads_yesterday_with_the_lookback():
    d = build_definitions(environ={})
    schedule = d.resolve_schedule_def("salestrekker_incremental_sync_schedule")
    lookback = SPECS["salestrekker"].lookback_days()
    assert lookback >= 1

    def tick(at: datetime) -> dg.ScheduleExecutionData:
        with dg.build_schedule_context(scheduled_execution_time=at, repository_def=d.get_repository_def()) as context:
            return schedule.evaluate_tick(context)

    (request,) = tick(datetime(2026, 11, 22, 1, 0, tzinfo=UTC)).run_requests or []
    first = (date(2026, 11, 21) - timedelta(days=lookback)).isoformat()
    assert request.tags["dagster/asset_partition_range_start"] == first
    assert request.tags["dagster/asset_partition_range_end"] == "2026-11-21"
    assert request.tags["integrations_pipeline/vendor"] == "salestrekker"  # the run queue's per-vendor limit
    # The first partition's day: no day before it is asked for; before it, nothing runs.
    start = date.fromisoformat(
        min(s.incremental.start_date for s in SPECS["salestrekker"].streams.values() if s.incremental)
    )
    (request,) = tick(datetime.combine(start + timedelta(days=1), time(1), tzinfo=UTC)).run_requests or []
    assert request.tags["dagster/asset_partition_range_start"] == start.isoformat()
    assert tick(datetime.combine(start, time(1), tzinfo=UTC)).skip_message


def test_sync_assets_show_lineage_to_their_source():
    graph = build_definitions(environ={}).resolve_asset_graph()
    node = graph.get(dg.AssetKey(["salesmanago", "trackstar_orders_to_salesmanago_events"]))
    assert node.group_name == "syncs"
    # The stream, and the events asset that merges Trackstar's webhooks into it (a run holding both syncs after).
    assert {k.to_user_string() for k in node.parent_keys} == {"trackstar/orders", "trackstar/webhook_events"}
    lineage = node.metadata["dagster/column_lineage"]
    deps = lineage.deps_by_column["email"]
    assert [(d.asset_key.to_user_string(), d.column_name) for d in deps] == [("trackstar/orders", "ship_to_address")]
    # What the open-source UI shows (it does not draw dagster/column_lineage): a Markdown table of every field.
    table = node.metadata["column_lineage_table"]
    assert isinstance(table, dg.MarkdownMetadataValue)
    assert "| `email` | ← | trackstar/orders.ship_to_address.email_address | copied, then strip, lower |" in table.value


def test_a_sync_with_lookups_depends_on_and_traces_columns_to_every_stream_it_reads():
    graph = build_definitions(environ={}).resolve_asset_graph()
    node = graph.get(dg.AssetKey(["salesmanago", "salestrekker_deals_to_salesmanago_events"]))
    assert {k.to_user_string() for k in node.parent_keys} == {
        "salestrekker/deals",
        "salestrekker/contacts",
        "salestrekker/workflows",
        "salestrekker/webhook_events",
    }
    lineage = node.metadata["dagster/column_lineage"].deps_by_column
    pairs = lambda col: [(d.asset_key.to_user_string(), d.column_name) for d in lineage[col]]  # noqa: E731
    assert pairs("email") == [("salestrekker/contacts", "person")]
    assert pairs("contactEvent.value") == [("salestrekker/deals", "values")]
    assert pairs("contactEvent.detail4") == [("salestrekker/workflows", "stages")]


@pytest.mark.parametrize(
    ("via", "kind"), [("datatalks", "datatalks"), ("direct", "salesmanago"), (None, "salesmanago")]
)
def test_salesmanago_via_routes_contact_and_event_syncs_but_keeps_their_asset_keys(via, kind):
    env = {} if via is None else {"SALESMANAGO_VIA": via}
    graph = build_definitions(environ=env).resolve_asset_graph()
    for name in (
        "salestrekker_deals_to_salesmanago_events",
        "salestrekker_contacts_to_salesmanago_contacts",
        "trackstar_orders_to_salesmanago_events",
    ):
        node = graph.get(dg.AssetKey(["salesmanago", name]))
        assert kind in node.kinds
    # The catalog has no Datatalks route: it stays direct whatever the variable says.
    assert "salesmanago" in graph.get(dg.AssetKey(["salesmanago", "trackstar_products_to_salesmanago_products"])).kinds


def test_the_warehouse_kind_follows_the_resolved_url(monkeypatch):
    # The resource holds EnvVar("WAREHOUSE_URL"), whose text is the variable's name: the kind is the URL's.
    monkeypatch.setenv("WAREHOUSE_URL", "postgresql://someone@127.0.0.1:5432/db")
    nodes = _assets(build_definitions())
    assert all("postgres" in nodes[key].kinds and "duckdb" not in nodes[key].kinds for key in STREAM_ASSETS)


def test_a_child_stream_depends_on_its_parent_and_nothing_else():
    graph = build_definitions(environ={}).get_repository_def().asset_graph
    children = 0
    for spec in SPECS.values():
        for name, stream in spec.streams.items():
            expected = {dg.AssetKey([spec.name, stream.parent.stream])} if stream.parent else set()
            assert graph.get(dg.AssetKey([spec.name, name])).parent_keys == expected, f"{spec.name}/{name}"
            children += stream.parent is not None
    assert children >= 2  # Trackstar's warehouse locations and order packs


def test_every_run_of_one_vendor_carries_its_vendor_tag_for_the_run_queue():
    """The queue's per-vendor limits (deploy/dagster.yaml) count runs by ``integrations_pipeline/vendor``: the
    vendors' jobs carry it, and the run coordinator finds it on the assets of runs that carry no tags (backfills)."""
    from integrations_pipeline.defs.constants import VENDOR_TAG
    from integrations_pipeline.defs.coordinator import vendors_of

    repo = build_definitions(environ={}).get_repository_def()
    vendor_jobs = [j for j in repo.get_all_jobs() if j.name.split("_")[0] in SPECS and not j.name.startswith("__")]
    assert vendor_jobs
    for job in vendor_jobs:
        assert job.tags.get(VENDOR_TAG) == job.name.split("_")[0], job.name
    graph = repo.asset_graph
    for key in EXPECTED:
        assert vendors_of([dg.AssetKey(key.split("/"))], graph) == {key.split("/")[0]}, key
    salesmanago = min(k for k in SYNC_ASSETS if k.startswith("salesmanago/"))
    two = [dg.AssetKey(["trackstar", "orders"]), dg.AssetKey(salesmanago.split("/"))]
    assert vendors_of(two, graph) == {"trackstar", "salesmanago"}  # the coordinator tags none of these
    assert vendors_of([dg.AssetKey(["no", "such"])], graph) == set()
