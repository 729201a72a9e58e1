"""The asset factory: one Dagster asset per stream, materialized by the engine into the warehouse.

Streams of one connector that share a partitions definition become one ``multi_asset`` with
``can_subset=True`` (the dagster-dlt pattern): selecting one stream runs only that stream, and
selecting several runs them in one process with one ``VendorClient``, so the vendor's rate limit
(Trackstar: per access token) is shared instead of multiplied by parallel steps.

Partitioned streams use ``BackfillPolicy.single_run()``: a backfill of a partition range is one run
whose window is the whole range, ``[first day 00:00Z, day after the last 00:00Z)``.

A vendor with per-customer connections partitions by connection too (``connections.py``). A run reads the
connections of its partitions one by one: one whose token was revoked (401), or whose reads keep failing,
fails alone. The others' partitions are reported materialized one by one, then the step fails naming the
failed connections, so the UI marks exactly their partitions failed; a revoked or deleted connection is
marked so in the registry and is not scheduled again until it is linked again.
"""

import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from integrations_pipeline.engine.client import Connection, VendorClient, parse_connections
from integrations_pipeline.engine.connections import LinkFlow, usable_connections
from integrations_pipeline.engine.errors import AuthError, SyncError
from integrations_pipeline.engine.read.events import CONNECTION_COLUMN
from integrations_pipeline.engine.read.extract import Window
from integrations_pipeline.engine.read.load import StreamLoadResult, load_stream
from integrations_pipeline.engine.spec import ConnectorSpec
from integrations_pipeline.warehouse import Warehouse
from integrations_pipeline.warehouse.inbox import InboxWarehouse
from integrations_pipeline.warehouse.tables import TableSpec

from . import constants as c
from .connections import connection_states
from .lifecycle import exit_with_parent
from .partition_metadata import add_partition_metadata
from .resources import ConnectionVaultResource, ConnectorCredentials, WarehouseResource
from .translator import ConnectorTranslator, StreamProps, column_schema, has_days, split_partition_key


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
    def _streams(context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult | dg.AssetMaterialization]:
        exit_with_parent()  # a step whose run worker was killed must not sync on as an orphan
        creds_resource: ConnectorCredentials = getattr(context.resources, creds_key)
        warehouse_resource: WarehouseResource = getattr(context.resources, c.WAREHOUSE_RESOURCE)
        credentials = creds_resource.credentials()
        window = None
        wanted: dict[str, list[str]] | None = None  # connection → its partition keys in this run
        if pdef is not None:
            if has_days(pdef):
                tw = context.partition_time_window
                window = Window(tw.start, tw.end)
                context.log.info(f"{spec.name}: window {window}")
            if spec.connections is not None:
                wanted = {}
                for key in context.partition_keys:
                    conn, _ = split_partition_key(key, pdef)
                    wanted.setdefault(conn or "", []).append(key)
        selected = [k for k in by_key if k in context.selected_asset_keys]
        warehouse = warehouse_resource.open()
        try:
            factory = creds_resource.clients(log=context.log.warning)
            connections, failed = _connections(context, spec, credentials, warehouse, wanted)
            done: dict[dg.AssetKey, dict[str, Loaded]] = {}
            rows: dict[dg.AssetKey, int] = {}
            per_partition: dict[dg.AssetKey, dict[str, dict[str, Any]]] = {}
            for key in selected:
                props = by_key[key]
                done[key] = _sync_one(
                    context, lambda: factory.connector(spec), warehouse, props, connections, window, failed
                )
                rows[key] = warehouse.row_count(props.table)
                if window is not None and pdef is not None:
                    per_partition[key] = _partition_figures(warehouse, props, window, pdef, context.partition_keys)
                connections = [x for x in connections if x.id not in failed]
        finally:
            warehouse.close()
        ranged = pdef is not None and len(context.partition_keys) > 1
        if not failed:
            for key, results in done.items():
                totals = _metadata(by_key[key], results, window, rows[key])
                if not ranged:  # one partition, or none: the run's figures are the partition's
                    yield dg.MaterializeResult(asset_key=key, metadata=totals)
                    continue
                # A range: each partition gets its own records and cursor window; the run's totals are reported once,
                # as an observation, instead of copied onto every partition.
                add_partition_metadata(context, key, per_partition[key])
                context.log_event(dg.AssetObservation(asset_key=key, metadata=_run_totals(totals, context)))
                yield dg.MaterializeResult(asset_key=key, metadata=_table_level(totals))
            return
        # Some connections failed: the others' partitions are reported materialized one by one, then the step
        # fails, so the UI marks exactly the failed connections' partitions failed.
        for key, results in done.items():
            for conn, result in results.items():
                for partition in (wanted or {}).get(conn, []):
                    own = per_partition.get(key, {}).get(partition, {})
                    yield dg.AssetMaterialization(
                        asset_key=key,
                        partition=partition,
                        metadata={**_metadata(by_key[key], {conn: result}, window, rows[key]), **own},
                    )
        reasons = "; ".join(f"{k}: {v}" for k, v in sorted(failed.items()))
        raise dg.Failure(
            description=f"{spec.name}: {len(failed)} of {len(wanted or failed)} connections failed ({reasons}); "
            "the others were loaded and their partitions reported",
            metadata={"failed_connections": dg.MetadataValue.text(reasons)},
        )

    return _streams


@dataclass(frozen=True)
class Loaded:
    """One connection's load of one stream, and the client calls it took."""

    result: StreamLoadResult
    stats: dict[str, float]


def _connections(
    context, spec: ConnectorSpec, credentials, warehouse: Warehouse, wanted: Mapping[str, list[str]] | None
) -> tuple[list[Connection], dict[str, str]]:
    """The connections this run reads, and those it was asked for and cannot read (id → why).

    Without connection partitions: every usable connection (the stored ones, then the fallback variable's; see
    ``usable_connections``). With them: the usable ones among the run's partitions."""
    if spec.connections is None:
        return parse_connections(spec, credentials), {}
    vault_resource: ConnectionVaultResource = getattr(context.resources, c.VAULT_RESOURCE)
    # One read of the registry serves both the tokens to open and each connection's state.
    states = connection_states(spec, warehouse, credentials)
    stored = [(s.connection_id, s.status, s.token_sealed, s.available_actions) for s in states.stored.values()]
    failed: dict[str, str] = {}
    if wanted is None:
        connections = usable_connections(spec, credentials, stored, vault_resource.vault())
    else:
        usable = set(states.usable) & set(wanted)
        connections = (
            [x for x in usable_connections(spec, credentials, stored, vault_resource.vault()) if x.id in usable]
            if usable
            else []
        )
        failed = {k: states.why_not(k) for k in wanted if k not in usable}
    context.log.info(f"{spec.name}: {len(connections)} connections ({', '.join(x.id for x in connections)})")
    return connections, failed


#: A range run longer than this (a year's backfill) is read and committed a day at a time: a failure on
#: day 300 keeps days 1-299, and the retry of the run starts at day 300 (``load_stream(slice_by=)``).
#: Shorter ranges (the main job's two months of history, a week's catch-up) stay one window: a day
#: costs at least one request even when nothing happened that day.
SLICE_RANGES_LONGER_THAN = timedelta(days=92)
RANGE_SLICE = timedelta(days=1)


def range_slice(window: Window | None) -> timedelta | None:
    """The slice a window is committed by (``RANGE_SLICE`` for a long range), or None: one commit."""
    if window is None or window.end - window.start <= SLICE_RANGES_LONGER_THAN:
        return None
    return RANGE_SLICE


#: Connections of one stream read at once within a step: each has its own token and rate budget, so N
#: connections use N quotas instead of one after another. Bounded: each holds pages and a staged load.
CONNECTION_CONCURRENCY = 4


def _sync_one(
    context,
    new_client: Callable[[], VendorClient],
    warehouse: Warehouse,
    props: StreamProps,
    connections: list[Connection],
    window: Window | None,
    failed: dict[str, str],
) -> dict[str, Loaded]:
    """Load one stream, its connections side by side (``CONNECTION_CONCURRENCY``, a client each): a vendor
    error of one connection (its revoked token, an endpoint that keeps failing) fails that connection
    only, named in ``failed``; the others load."""
    table = props.table
    warehouse.ensure_table(table)
    pages_logged = [0]
    lock = threading.Lock()

    def progress(message: str) -> None:
        # Every 10th page at INFO keeps long backfills readable; skips are always shown.
        with lock:
            pages_logged[0] += 1
            shown = "skipped" in message or pages_logged[0] % 10 == 1
        if shown:
            context.log.info(message)

    name = f"{props.connector.name}/{props.stream_name}"

    def one(connection: Connection) -> tuple[str, Loaded | None, str | None]:
        with new_client() as client:
            try:
                result = load_stream(
                    client,
                    props.stream_name,
                    WarehouseDestination(warehouse, table),
                    [connection],
                    window=window,
                    progress=progress,
                    slice_by=range_slice(window),
                )
            except AuthError as exc:
                return connection.id, None, _refused(context, client, warehouse, props.connector, connection, exc)
            except SyncError as exc:
                if props.connector.connections is None:
                    raise
                why = f"{type(exc).__name__}: {exc}"
                context.log.error(f"{name} [{connection.id}] failed: {why}")
                return connection.id, None, why
            stats = client.stats.as_dict()
        for outcome in result.skipped:
            context.log.warning(f"{name}: connection {outcome.connection_id} skipped: {outcome.skipped_reason}")
        resumed = [o.resumed_after for o in result.outcomes if o.resumed_after]
        context.log.info(
            f"{name} [{connection.id}]: {result.records} records in {result.pages} pages, "
            f"{int(stats['calls'])} calls, {int(stats['retries'])} retries, {result.seconds:.2f}s"
            + (f"; resumed the range after {resumed[0]}, where an earlier run stopped" if resumed else "")
        )
        return connection.id, Loaded(result, stats), None

    results: dict[str, Loaded] = {}
    if not connections:
        return results
    # A session keeps an embedded warehouse open between commits (DuckDB: ~20 ms to open the file, once
    # per committed day of a backfill range); it lets go whenever another process waits for the file.
    with (
        warehouse.session(),
        ThreadPoolExecutor(
            max_workers=min(CONNECTION_CONCURRENCY, len(connections)), thread_name_prefix=f"read-{props.stream_name}"
        ) as pool,
    ):
        # In the connections' order; an error that is no connection's own (a broken spec) fails the step.
        for connection_id, loaded, why in pool.map(one, connections):
            if loaded is not None:
                results[connection_id] = loaded
            elif why is not None:
                failed[connection_id] = why
    return results


def _refused(context, client: VendorClient, warehouse: Warehouse, spec: ConnectorSpec, connection, exc) -> str:
    """A 401 while reading one connection: its token was revoked, the connection deleted, or our organisation
    key is wrong. The vendor's list (organisation key only) tells which; a wrong key fails the whole run."""
    if spec.connections is None or spec.connections.link is None:
        raise exc
    try:
        listed = {x.connection_id for x in LinkFlow(client).listed()}
    except AuthError:
        raise exc from None  # the organisation key itself is refused: no connection is to blame
    status = "revoked" if connection.id in listed else "deleted"
    marked = isinstance(warehouse, InboxWarehouse) and warehouse.set_connection_status(
        spec.name, [connection.id], status, now=datetime.now(UTC)
    )
    if marked:
        reason = f"{status} (marked so in the registry; link it again): {exc}"
    else:  # the fallback variable's: what to fix is the variable, which a mark in the registry would override
        reason = f"{status} (its token comes from {spec.connections.token.env}: update it): {exc}"
    context.log.error(f"{spec.name}: connection {connection.id} {reason}")
    return reason


#: The metadata that describes the table, the same whichever partition reports it.
_TABLE_LEVEL = (c.ROW_COUNT, c.COLUMN_SCHEMA)
PARTITION_RECORDS = "partition_records"
PARTITION_WINDOW = "partition_window"


def _table_level(totals: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in totals.items() if k in _TABLE_LEVEL}


def _run_totals(totals: Mapping[str, Any], context) -> dict[str, Any]:
    keys = context.partition_keys
    return {
        **{k: v for k, v in totals.items() if k not in _TABLE_LEVEL},
        "partitions": dg.MetadataValue.text(f"{keys[0]} … {keys[-1]} ({len(keys)})"),
        "run_id": dg.MetadataValue.text(context.run.run_id),
    }


def _partition_figures(
    warehouse: Warehouse, props: StreamProps, window: Window, pdef: dg.PartitionsDefinition, keys: list[str]
) -> dict[str, dict[str, Any]]:
    """Partition key → its own figures, from the table after the load: the rows whose cursor falls on its day (and
    belong to its connection) and their first and last cursor values. A day with no record says so."""
    by = CONNECTION_COLUMN if props.connector.connections is not None else None
    stats = {(s.group, s.day): s for s in warehouse.partition_stats(props.table, window.start, window.end, by=by)}
    out: dict[str, dict[str, Any]] = {}
    for key in keys:
        conn, day = split_partition_key(key, pdef)
        found = stats.get((conn if by else None, day or ""))
        out[key] = {
            PARTITION_RECORDS: dg.MetadataValue.int(found.rows if found else 0),
            PARTITION_WINDOW: dg.MetadataValue.text(f"{found.first} … {found.last}" if found else "no records"),
        }
    return out


def _metadata(
    props: StreamProps, results: Mapping[str, Loaded], window: Window | None, row_count: int
) -> dict[str, Any]:
    """A materialization's metadata: the run's figures summed over ``results`` (one per connection)."""
    values = [x.result for x in results.values()]
    stats = {k: sum(int(x.stats.get(k, 0)) for x in results.values()) for k in ("calls", "retries", "rate_limited")}
    skipped = [o for r in values for o in r.skipped]
    metadata: dict[str, Any] = {
        c.ROW_COUNT: dg.MetadataValue.int(row_count),
        c.RECORDS_FETCHED: dg.MetadataValue.int(sum(r.records for r in values)),
        c.PAGES: dg.MetadataValue.int(sum(r.pages for r in values)),
        c.API_CALLS: dg.MetadataValue.int(stats["calls"]),
        c.RETRIES: dg.MetadataValue.int(stats["retries"]),
        c.RATE_LIMITED: dg.MetadataValue.int(stats["rate_limited"]),
        c.SECONDS: dg.MetadataValue.float(round(sum(r.seconds for r in values), 3)),
        c.INSERTED: dg.MetadataValue.int(sum(o.inserted for r in values for o in r.outcomes)),
        c.UPDATED: dg.MetadataValue.int(sum(o.updated for r in values for o in r.outcomes)),
        c.CONNECTIONS: dg.MetadataValue.int(sum(len(r.outcomes) for r in values)),
        c.SKIPPED: dg.MetadataValue.text(
            "; ".join(f"{o.connection_id}: {o.skipped_reason}" for o in skipped) or "none"
        ),
        c.COLUMN_SCHEMA: dg.MetadataValue.table_schema(column_schema(props.table)),
    }
    if window is not None:
        metadata[c.WINDOW] = dg.MetadataValue.text(str(window))
    return metadata
