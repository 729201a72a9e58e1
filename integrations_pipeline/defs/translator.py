"""Spec → Dagster ``AssetSpec``, one stream at a time (the dagster-dlt / dagster-sling translator pattern).

Each method takes one ``StreamProps`` so new inputs never break a subclass's signature. Subclass
``ConnectorTranslator`` and pass it to ``build_connector_assets`` to change keys, groups or metadata.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cached_property

import dagster as dg

from integrations_pipeline.engine.spec import ConnectorSpec, StreamSpec
from integrations_pipeline.engine.write.mapping import SyncSpec
from integrations_pipeline.warehouse.tables import TableSpec, table_spec_for

from . import constants

# The stream assets' IO manager (io_managers.py): reads their tables for downstream assets.
WAREHOUSE_IO_MANAGER = "warehouse_io_manager"


@dataclass(frozen=True)
class StreamProps:
    """Everything the translator may look at for one stream."""

    connector: ConnectorSpec
    stream_name: str
    warehouse_kind: str = "duckdb"

    @property
    def stream(self) -> StreamSpec:
        return self.connector.streams[self.stream_name]

    @cached_property
    def table(self) -> TableSpec:
        return table_spec_for(self.connector, self.stream_name)


_PARTITIONS: dict[str, dg.DailyPartitionsDefinition] = {}

#: The dimensions of a per-connection incremental stream's partitions: ``<connection>|<YYYY-MM-DD>``
#: (Dagster orders a multi-partition key's parts by dimension name).
CONNECTION_DIMENSION = "connection"
DAY_DIMENSION = "day"


def daily_partitions(start_date: str) -> dg.DailyPartitionsDefinition:
    """One shared definition per start date, so streams that agree can share a multi-asset."""
    if start_date not in _PARTITIONS:
        _PARTITIONS[start_date] = dg.DailyPartitionsDefinition(start_date=start_date, timezone="UTC")
    return _PARTITIONS[start_date]


def connection_partitions(connector: str) -> dg.DynamicPartitionsDefinition:
    """The connections of ``connector`` as Dagster dynamic partitions (named ``<connector>_connections``): the
    connections sensor and the ``<connector>/connections`` asset add one per connection the registry or the
    fallback variable knows."""
    return dg.DynamicPartitionsDefinition(name=f"{connector}_connections")


def per_connection_partitions(connector: str, start_date: str) -> dg.MultiPartitionsDefinition:
    """Connection × day, so each customer's days succeed or fail on their own in the UI."""
    return dg.MultiPartitionsDefinition(
        {CONNECTION_DIMENSION: connection_partitions(connector), DAY_DIMENSION: daily_partitions(start_date)}
    )


def partition_key(connection: str, day: str | None) -> str:
    """The partition key of one connection's day (``day=None``: of a per-connection full-refresh stream)."""
    if day is None:
        return connection
    return dg.MultiPartitionKey({CONNECTION_DIMENSION: connection, DAY_DIMENSION: day})


#: Dagster's run tags for a partition range read in one run (``BackfillPolicy.single_run``).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def scheduled_range_tags(spec: ConnectorSpec, day: date, connection: str | None = None) -> dict[str, str] | None:
    """Run tags of the scheduled read of ``day`` (one connection's, for a vendor with connections): the
    partitions ``[day - lookback, day]``, where lookback is the largest ``lookback_days`` of ``spec``'s
    incremental streams, so a record stamped late on an earlier day (Trackstar syncs each WMS hourly or
    less) is read by the next day's run and the partition it belongs to is materialized again with it.
    Never before the first partition; None when ``day`` comes before it."""
    starts = [s.incremental.start_date for s in spec.streams.values() if s.incremental]
    if not starts or day.isoformat() < max(starts):
        return None
    first = max(day - timedelta(days=spec.lookback_days()), date.fromisoformat(max(starts)))

    def key(d: date) -> str:
        return str(partition_key(connection, d.isoformat())) if connection is not None else d.isoformat()

    return {RANGE_START_TAG: key(first), RANGE_END_TAG: key(day)}


def has_days(partitions_def: dg.PartitionsDefinition) -> bool:
    """Whether ``partitions_def`` has a daily dimension (the run then has a time window)."""
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        return any(
            isinstance(d.partitions_def, dg.TimeWindowPartitionsDefinition) for d in partitions_def.partitions_defs
        )
    return isinstance(partitions_def, dg.TimeWindowPartitionsDefinition)


def split_partition_key(key: str, partitions_def: dg.PartitionsDefinition) -> tuple[str | None, str | None]:
    """``(connection, day)`` of a partition key of ``partitions_def`` (None for a dimension it does not have)."""
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        parts = partitions_def.get_partition_key_from_str(key).keys_by_dimension
        return parts[CONNECTION_DIMENSION], parts[DAY_DIMENSION]
    if isinstance(partitions_def, dg.DynamicPartitionsDefinition):
        return key, None
    return None, key


class ConnectorTranslator:
    def get_connector_asset_key(self, connector: ConnectorSpec, name: str) -> dg.AssetKey:
        """The key of asset ``name`` of ``connector``: a stream, or the ``connections`` registry. Override this to
        rename every asset of a connector (a prefix), ``get_asset_key`` to rename streams only."""
        return dg.AssetKey([connector.name, name])

    def get_asset_key(self, props: StreamProps) -> dg.AssetKey:
        return self.get_connector_asset_key(props.connector, props.stream_name)

    def get_connections_asset_key(self, connector: ConnectorSpec) -> dg.AssetKey:
        """The key of the connector's connection registry asset (``trackstar/connections``)."""
        return self.get_connector_asset_key(connector, "connections")

    def get_events_asset_key(self, connector: ConnectorSpec) -> dg.AssetKey:
        """The key of the connector's webhook events asset (``trackstar/webhook_events``): stored events merged
        into their streams' tables."""
        return self.get_connector_asset_key(connector, "webhook_events")

    def get_group_name(self, props: StreamProps) -> str:
        return props.connector.name

    def get_description(self, props: StreamProps) -> str:
        s = props.stream
        how = f"GraphQL query on {props.connector.graphql_path}" if s.query else f"`{s.method} {s.path}`"
        mode = (
            f"incremental on `{s.incremental.cursor_field}`, daily partitions from {s.incremental.start_date}"
            if s.incremental
            else "full refresh"
        )
        return f"{s.description}\n\n{props.connector.title}: {how}; {mode}. Table `{props.table.schema}.{props.table.name}`."

    def get_kinds(self, props: StreamProps) -> set[str]:
        return {props.connector.protocol, props.warehouse_kind}

    def get_partitions_def(self, props: StreamProps) -> dg.PartitionsDefinition | None:
        """Daily on the cursor for an incremental stream; for a vendor with per-customer connections, by
        connection too (connection × day, or connection alone for a full-refresh stream)."""
        inc = props.stream.incremental
        if props.connector.connections is not None:
            name = props.connector.name
            return per_connection_partitions(name, inc.start_date) if inc else connection_partitions(name)
        return daily_partitions(inc.start_date) if inc else None

    def get_metadata(self, props: StreamProps) -> dict[str, object]:
        s, t = props.stream, props.table
        return {
            constants.TABLE_NAME: f"{t.schema}.{t.name}",
            constants.COLUMN_SCHEMA: column_schema(t),
            constants.PRIMARY_KEY: ", ".join(t.primary_key),
            constants.CURSOR_FIELD: s.incremental.cursor_field if s.incremental else "(full refresh)",
            constants.ENDPOINT: s.path or props.connector.graphql_path,
            constants.CONNECTOR: props.connector.name,
            constants.STREAM: props.stream_name,
        }

    def get_tags(self, props: StreamProps) -> dict[str, str]:
        return {constants.VENDOR_TAG: props.connector.name}

    def get_connections_asset_spec(self, connector: ConnectorSpec) -> dg.AssetSpec:
        """The connection registry asset (``connections.link`` vendors): reconciled with the vendor's list."""
        link = connector.connections.link if connector.connections else None
        listed = f"`GET {link.list_path}`" if link else "the vendor's list"
        return dg.AssetSpec(
            key=self.get_connections_asset_key(connector),
            group_name=connector.name,
            description=(
                f"{connector.title} connections: the registry (`_integrations.connections`) reconciled with "
                f"{listed}: new ones added, gone ones marked deleted, available actions refreshed; one partition "
                "per connection for the streams."
            ),
            kinds={connector.protocol},
            tags={constants.VENDOR_TAG: connector.name},
        )

    def get_deps(self, props: StreamProps) -> list[dg.AssetKey]:
        """Lineage: a child stream (``parent:``) depends on its parent's asset, whose records it is read per.
        Lineage only: the child lists its parents through the API itself, so it never waits for the parent."""
        parent = props.stream.parent
        return [] if parent is None else [self.get_asset_key(StreamProps(props.connector, parent.stream))]

    def get_asset_spec(self, props: StreamProps) -> dg.AssetSpec:
        return dg.AssetSpec(
            key=self.get_asset_key(props),
            group_name=self.get_group_name(props),
            description=self.get_description(props),
            kinds=self.get_kinds(props),
            code_version=props.connector.fingerprint(),
            metadata=self.get_metadata(props),
            tags=self.get_tags(props),
            partitions_def=self.get_partitions_def(props),
            deps=self.get_deps(props),
            skippable=True,
        ).with_io_manager_key(WAREHOUSE_IO_MANAGER)


def column_schema(table: TableSpec) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                c.name,
                c.type,
                description=c.description or None,
                constraints=dg.TableColumnConstraints(nullable=c.name not in table.primary_key),
            )
            for c in table.columns
        ]
    )


class SyncTranslator:
    """A reverse-ETL sync → its asset's key, group, kinds and the keys of the streams it reads.

    Stream keys come from the ``ConnectorTranslator`` given, so a translator that prefixes stream keys
    (``acme/trackstar/orders``) makes the syncs depend on, and trace columns to, the prefixed keys.
    """

    def __init__(self, connectors: ConnectorTranslator | None = None):
        self.connectors = connectors or ConnectorTranslator()

    def get_asset_key(self, sync: SyncSpec) -> dg.AssetKey:
        return dg.AssetKey(sync.asset_ref.split("/"))

    def get_stream_key(self, specs: Mapping[str, ConnectorSpec], stream_ref: str) -> dg.AssetKey:
        """The key of a stream a sync reads (``trackstar/orders``), by the connector translator."""
        connector, stream = stream_ref.split("/", 1)
        return self.connectors.get_asset_key(StreamProps(specs[connector], stream))

    def get_deps(self, specs: Mapping[str, ConnectorSpec], sync: SyncSpec) -> list[dg.AssetKey]:
        """What a sync reads: its source and lookup streams, and the webhook events asset of each vendor whose
        webhooks change one of them. That asset merges events into the streams' tables, so in a run that holds
        both (the events sensor's) the sync reads after the merge: event → target in one run."""
        refs = list(dict.fromkeys([sync.source, *(lk.stream for lk in sync.lookups.values())]))
        events = []
        for ref in refs:
            connector = specs[ref.split("/", 1)[0]]
            hooks = connector.webhooks
            if hooks is not None and ref.split("/", 1)[1] in set(hooks.streams.values()):
                events.append(self.connectors.get_events_asset_key(connector))
        return list(dict.fromkeys([*(self.get_stream_key(specs, r) for r in refs), *events]))

    def get_group_name(self, sync: SyncSpec) -> str:
        return "syncs"

    def get_kinds(self, sync: SyncSpec) -> set[str]:
        # The systems a sync joins, as the UI labels assets by technology: YAML syncs are not "python".
        return {sync.source_connector, sync.target_connector}

    def get_tags(self, sync: SyncSpec) -> dict[str, str]:
        # The vendor the sync calls (routed syncs: the proxy), whose run-queue limit its runs count against.
        return {constants.VENDOR_TAG: sync.target_connector}
