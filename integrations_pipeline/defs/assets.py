"""The asset factory: one Dagster asset per stream, materialized by the engine into the warehouse.

Streams of one connector that share a partitions definition become one ``multi_asset`` with
``can_subset=True`` (the dagster-dlt pattern): selecting one stream runs only that stream, and
selecting several runs them in one process with one ``VendorClient``, so the vendor's rate limit
(Trackstar: per access token) is shared instead of multiplied by parallel steps.

Partitioned streams use ``BackfillPolicy.single_run()``: a backfill of a partition range is one run
whose window is the whole range, ``[first day 00:00Z, day after the last 00:00Z)``.
"""

from collections.abc import Iterator

import dagster as dg

from integrations_pipeline.engine.client import Connection, VendorClient, parse_connections
from integrations_pipeline.engine.connections import usable_connections
from integrations_pipeline.engine.read.extract import Window
from integrations_pipeline.engine.read.load import StreamLoadResult, load_stream
from integrations_pipeline.engine.spec import ConnectorSpec
from integrations_pipeline.warehouse import Warehouse
from integrations_pipeline.warehouse.inbox import InboxWarehouse
from integrations_pipeline.warehouse.tables import TableSpec

from . import constants as c
from .lifecycle import exit_with_parent
from .resources import ConnectionVaultResource, ConnectorCredentials, WarehouseResource
from .translator import ConnectorTranslator, StreamProps, column_schema


class WarehouseDestination:
    """Adapts one warehouse table to the engine's ``Destination`` protocol."""

    def __init__(self, warehouse: Warehouse, table: TableSpec):
        self.warehouse, self.table = warehouse, table

    def open_load(self, state_key: str):
        return self.warehouse.open_load(self.table, state_key)

    def read_state(self, state_key: str) -> dict | None:
        return self.warehouse.read_state(state_key)


def build_connector_assets(
    spec: ConnectorSpec,
    translator: ConnectorTranslator | None = None,
    warehouse_kind: str = "duckdb",
) -> list[dg.AssetsDefinition]:
    translator = translator or ConnectorTranslator()
    groups: dict[str, list[StreamProps]] = {}
    for name in spec.streams:
        props = StreamProps(spec, name, warehouse_kind)
        pdef = translator.get_partitions_def(props)
        groups.setdefault("daily" if pdef is not None else "full", []).append(props)
    return [_multi_asset(spec, translator, kind, members) for kind, members in groups.items()]


def _multi_asset(
    spec: ConnectorSpec, translator: ConnectorTranslator, kind: str, members: list[StreamProps]
) -> dg.AssetsDefinition:
    specs = [translator.get_asset_spec(p) for p in members]
    by_key = {s.key: p for s, p in zip(specs, members, strict=True)}
    pdef = specs[0].partitions_def
    creds_key = c.credentials_resource_key(spec.name)

    @dg.multi_asset(
        name=f"{spec.name}_{kind}_streams",
        specs=specs,
        can_subset=True,
        backfill_policy=dg.BackfillPolicy.single_run() if pdef is not None else None,
        required_resource_keys={creds_key, c.WAREHOUSE_RESOURCE, *([c.VAULT_RESOURCE] if spec.connections else [])},
        pool=f"{spec.name}_api",
        op_tags={c.VENDOR_TAG: spec.name},
    )
    def _streams(context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult]:
        exit_with_parent()  # a step whose run worker was killed must not sync on as an orphan
        creds_resource: ConnectorCredentials = getattr(context.resources, creds_key)
        warehouse_resource: WarehouseResource = getattr(context.resources, c.WAREHOUSE_RESOURCE)
        credentials = creds_resource.credentials()
        window = None
        if pdef is not None:
            tw = context.partition_time_window
            window = Window(tw.start, tw.end)
            context.log.info(f"{spec.name}: window {window}")
        selected = [k for k in by_key if k in context.selected_asset_keys]
        warehouse = warehouse_resource.open()
        try:
            with creds_resource.clients(log=context.log.warning).connector(spec) as client:
                connections = _connections(context, spec, credentials, warehouse)
                for key in selected:
                    props = by_key[key]
                    yield _sync_one(context, client, warehouse, key, props, connections, window)
        finally:
            warehouse.close()

    return _streams


def _connections(context, spec: ConnectorSpec, credentials, warehouse: Warehouse) -> list[Connection]:
    """The stored connections (the link flow's), then the fallback variable's; see ``usable_connections``."""
    if spec.connections is None:
        return parse_connections(spec, credentials)
    vault_resource: ConnectionVaultResource = getattr(context.resources, c.VAULT_RESOURCE)
    stored = (
        [
            (s.connection_id, s.status, s.token_sealed, s.available_actions)
            for s in warehouse.read_connections(spec.name)
        ]
        if isinstance(warehouse, InboxWarehouse)
        else []
    )
    connections = usable_connections(spec, credentials, stored, vault_resource.vault())
    context.log.info(f"{spec.name}: {len(connections)} connections ({', '.join(x.id for x in connections)})")
    return connections


def _sync_one(
    context, client: VendorClient, warehouse: Warehouse, key: dg.AssetKey, props: StreamProps, connections, window
):
    table = props.table
    warehouse.ensure_table(table)
    before = client.stats.as_dict()
    pages_logged = [0]

    def progress(message: str) -> None:
        # Every 10th page at INFO keeps long backfills readable; skips are always shown.
        pages_logged[0] += 1
        if "skipped" in message or pages_logged[0] % 10 == 1:
            context.log.info(message)

    result: StreamLoadResult = load_stream(
        client, props.stream_name, WarehouseDestination(warehouse, table), connections, window=window, progress=progress
    )
    after = client.stats.as_dict()
    delta = {k: after[k] - before[k] for k in after}
    for outcome in result.skipped:
        context.log.warning(
            f"{props.connector.name}/{props.stream_name}: connection {outcome.connection_id} skipped: {outcome.skipped_reason}"
        )
    context.log.info(
        f"{props.connector.name}/{props.stream_name}: {result.records} records in {result.pages} pages, "
        f"{int(delta['calls'])} calls, {int(delta['retries'])} retries, {result.seconds:.2f}s"
    )
    metadata = {
        c.ROW_COUNT: dg.MetadataValue.int(warehouse.row_count(table)),
        c.RECORDS_FETCHED: dg.MetadataValue.int(result.records),
        c.PAGES: dg.MetadataValue.int(result.pages),
        c.API_CALLS: dg.MetadataValue.int(int(delta["calls"])),
        c.RETRIES: dg.MetadataValue.int(int(delta["retries"])),
        c.RATE_LIMITED: dg.MetadataValue.int(int(delta["rate_limited"])),
        c.SECONDS: dg.MetadataValue.float(round(result.seconds, 3)),
        c.INSERTED: dg.MetadataValue.int(sum(o.inserted for o in result.outcomes)),
        c.UPDATED: dg.MetadataValue.int(sum(o.updated for o in result.outcomes)),
        c.CONNECTIONS: dg.MetadataValue.int(len(result.outcomes)),
        c.SKIPPED: dg.MetadataValue.text(
            "; ".join(f"{o.connection_id}: {o.skipped_reason}" for o in result.skipped) or "none"
        ),
        c.COLUMN_SCHEMA: dg.MetadataValue.table_schema(column_schema(props.table)),
    }
    if window is not None:
        metadata[c.WINDOW] = dg.MetadataValue.text(str(window))
    return dg.MaterializeResult(asset_key=key, metadata=metadata)  # the translator's key, never rebuilt here
