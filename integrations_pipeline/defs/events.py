"""Webhook events → stream tables → syncs, in Dagster: the ``<vendor>/webhook_events`` assets and the sensor.

The service stores verified webhooks (``_integrations.webhook_events``); each vendor's events asset turns the
pending ones into changes of their streams' tables (``engine.read.events``): an event that carries its object
(Trackstar) is merged with no API call; one that names its object by id only (Salestrekker) is applied by
reading the object with the stream's ``webhooks.fetch`` query, once per distinct id, through the connector's
client from its credentials resource, as the stream assets make it. Both merge by the newest-by-cursor rule.
The asset then reports a materialization of each changed stream asset, partitioned by the day of the changed
records' cursor (and its connection).

The ``webhook_events`` sensor asks, for new events, for **one run**: the events assets of their vendors and
exactly the syncs that read the streams those events change. Every sync that reads a webhook-fed stream depends
on that vendor's events asset (``SyncTranslator.get_deps``), so the run merges first and syncs after: an event
reaches the target within the sensor's interval plus one run. ``syncs_on_source_update`` sees that the syncs ran
after the streams' materializations and asks for nothing more. ``apply_webhook_events`` (the events assets alone)
is the manual catch-up; after it, ``syncs_on_source_update`` runs the syncs.

Crash-safe by order: the merge commits first, the events are marked after. A run killed between the two applies
the same events again next time, and merging a record already merged changes nothing (newest by cursor). A
read that fails leaves its events pending with the reason: ``retry: ...`` for a transient failure, which the
sensor retries within ``RETRY_SECONDS`` even if no new event arrives; anything else fails the run (after the
rest is applied), so a person sees it.
"""

import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime

import dagster as dg

from integrations_pipeline.engine.connections import (
    ConnectionChange,
    LinkedConnection,
    connection_change,
    known_connection_ids,
)
from integrations_pipeline.engine.read.events import (
    APPLIED_BY_READ,
    CONNECTION_COLUMN,
    RETRY,
    ReadSummary,
    plan_events,
    read_by_id,
)
from integrations_pipeline.engine.spec import ConnectorSpec
from integrations_pipeline.warehouse import table_spec_for
from integrations_pipeline.warehouse.inbox import InboxWarehouse

from . import constants as c
from .resources import ConnectorCredentials, WarehouseResource
from .translator import (
    DAY_DIMENSION,
    ConnectorTranslator,
    StreamProps,
    connection_partitions,
    has_days,
    partition_key,
)

JOB_NAME = "apply_webhook_events"
SENSOR_NAME = "webhook_events"
#: How often events waiting on a transient read failure are tried again when nothing new arrives.
RETRY_SECONDS = 300


def hooked_connectors(specs: Mapping[str, ConnectorSpec]) -> dict[str, ConnectorSpec]:
    """The vendors that send webhooks into streams: each gets an events asset."""
    return {name: spec for name, spec in specs.items() if spec.webhooks is not None and spec.streams}


def build_events_assets(
    specs: Mapping[str, ConnectorSpec], translator: ConnectorTranslator
) -> list[dg.AssetsDefinition]:
    """One ``<vendor>/webhook_events`` asset per vendor that sends webhooks (``hooked_connectors``)."""
    return [_events_asset(spec, translator) for spec in hooked_connectors(specs).values()]


def _events_asset(spec: ConnectorSpec, translator: ConnectorTranslator) -> dg.AssetsDefinition:
    creds_key = c.credentials_resource_key(spec.name)
    hooks = spec.webhooks
    assert hooks is not None
    fed = sorted(set(hooks.streams.values()))

    @dg.asset(
        key=translator.get_events_asset_key(spec),
        group_name=spec.name,
        kinds={spec.protocol, "webhooks"},
        tags={c.VENDOR_TAG: spec.name, c.EVENTS_TAG: "true"},
        required_resource_keys={c.WAREHOUSE_RESOURCE, creds_key},
        description=f"{spec.title} webhooks stored by the service (`_integrations.webhook_events`), merged into "
        f"the tables of {', '.join(f'`{s}`' for s in fed) or 'no stream'} (each changed stream is reported "
        "materialized); the syncs that read those streams run after it in the same run.",
    )
    def _apply(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        warehouse_resource: WarehouseResource = getattr(context.resources, c.WAREHOUSE_RESOURCE)
        creds: ConnectorCredentials = getattr(context.resources, creds_key)
        warehouse = warehouse_resource.open()
        failures: list[str] = []
        counts: dict[str, int] = {}
        try:
            if not isinstance(warehouse, InboxWarehouse):
                raise dg.Failure(f"the {warehouse.backend} warehouse keeps no webhook events")
            for materialization in _apply_connector(context, warehouse, spec, creds, translator, failures, counts):
                context.log_event(materialization)
        finally:
            warehouse.close()
        if failures:
            # After the events were applied and marked: what could be applied is in, the rest waits.
            raise dg.Failure("; ".join(failures))
        return dg.MaterializeResult(metadata={k: dg.MetadataValue.int(v) for k, v in counts.items()})

    return _apply


def build_events_job(
    events_assets: list[dg.AssetsDefinition],
) -> "dg.UnresolvedAssetJobDefinition":  # a lazy name of dagster's: quoted
    """``apply_webhook_events``: every vendor's events asset, without the syncs (a manual catch-up)."""
    return dg.define_asset_job(
        JOB_NAME,
        selection=dg.AssetSelection.assets(*(a.key for a in events_assets)),
        description="Apply stored webhook events to the stream tables, then report them.",
    )


def _apply_connector(
    context: dg.AssetExecutionContext,
    warehouse: InboxWarehouse,
    spec: ConnectorSpec,
    creds: ConnectorCredentials,
    translator: ConnectorTranslator,
    failures: list[str],
    counts: dict[str, int],
) -> Iterator[dg.AssetMaterialization]:
    pending = warehouse.read_events(spec.name, pending_only=True)
    counts["pending_events"] = len(pending)
    if not pending:
        return
    now = datetime.now(UTC)
    changes = {e.event_id: ch for e in pending if (ch := connection_change(spec, e)) is not None}
    settled = _apply_connection_changes(context, warehouse, spec, list(changes.values()), now)
    pending = [e for e in pending if e.event_id not in changes]
    known: set[str] | None = None
    if spec.connections is not None:
        stored = [(s.connection_id, s.status, s.token_sealed) for s in warehouse.read_connections(spec.name)]
        known = known_connection_ids(spec, creds.credentials(), stored)
    plan = plan_events(spec, pending, known)
    by_read = {event_id for ids in plan.reads.values() for events in ids.values() for event_id in events}
    summary = ReadSummary()
    if plan.reads:
        with creds.clients(log=context.log.warning).connector(spec) as client:
            summary = read_by_id(client, plan)
        context.log.info(
            f"{spec.name}: {summary.calls} reads by id for {len(by_read)} events ({summary.gone} objects gone)"
        )
    settled.update(plan.settled)
    for stream, records in plan.records.items():
        table = table_spec_for(spec, stream)
        warehouse.ensure_table(table)
        with warehouse.open_load(table, f"webhooks/{spec.name}/{stream}") as load:
            load.write_batch(records)
            result = load.commit({"events": len(plan.applies[stream])})
        settled.update({e: APPLIED_BY_READ if e in by_read else "applied" for e in plan.applies[stream]})
        props = StreamProps(spec, stream)
        key = translator.get_asset_key(props)
        reads = summary.reads.get(stream, 0)
        metadata = {
            "webhook_events": dg.MetadataValue.int(len(plan.applies[stream])),
            c.RECORDS_FETCHED: dg.MetadataValue.int(len(records)),
            c.API_CALLS: dg.MetadataValue.int(reads),
            c.INSERTED: dg.MetadataValue.int(result.inserted),
            c.UPDATED: dg.MetadataValue.int(result.updated),
            "source": dg.MetadataValue.text("webhooks"),
            # The table's size after the merge, as a scheduled load reports it: the UI's overview shows the row
            # count of the latest materialization, which a webhook run often is.
            c.ROW_COUNT: dg.MetadataValue.int(warehouse.row_count(table)),
        }
        partitions: list[str | None] = [*_partitions(context.instance, translator, props, records)] or [None]
        for partition in partitions:
            yield dg.AssetMaterialization(asset_key=key, partition=partition, metadata=metadata)
        context.log.info(
            f"{spec.name}/{stream}: {len(plan.applies[stream])} webhook events merged as {len(records)} records "
            f"({result.inserted} new, {result.updated} updated, {result.unchanged} unchanged or older), "
            f"{reads} API calls"
        )
    warehouse.mark_events(spec.name, settled, plan.waiting, now=now)
    counts.update(
        {
            "applied_events": sum(1 for o in settled.values() if o.startswith("applied")),
            "settled_events": len(settled),
            "waiting_events": len(plan.waiting),
            c.API_CALLS: summary.calls,
            "streams_changed": len(plan.records),
        }
    )
    for event_id, reason in sorted(plan.waiting.items())[:20]:
        context.log.warning(f"{spec.name}: event {event_id} not applied yet: {reason}")
    if plan.waiting:
        context.log.warning(f"{spec.name}: {len(plan.waiting)} events wait (kept in _integrations.webhook_events)")
    if summary.failure:
        failures.append(f"{spec.name}: {summary.failure} (its events wait in _integrations.webhook_events)")


def _partitions(
    instance: dg.DagsterInstance, translator: ConnectorTranslator, props: StreamProps, records: list[dict]
) -> list[str]:
    """The partitions the records fall in, by their cursor's day (and their connection, when the stream is
    partitioned by connection); only keys the asset has."""
    pdef = translator.get_partitions_def(props)
    incremental = props.stream.incremental
    if pdef is None or incremental is None or not has_days(pdef):
        return []
    daily = pdef
    if isinstance(pdef, dg.MultiPartitionsDefinition):
        daily = next(d.partitions_def for d in pdef.partitions_defs if d.name == DAY_DIMENSION)
    days = set(daily.get_partition_keys())
    if daily is pdef:
        return sorted({d for r in records if (d := str(r.get(incremental.cursor_field) or "")[:10]) in days})
    name = connection_partitions(props.connector.name).name
    assert name is not None
    conns = set(instance.get_dynamic_partitions(name))
    pairs = {(str(r.get(CONNECTION_COLUMN)), str(r.get(incremental.cursor_field) or "")[:10]) for r in records}
    return sorted(str(partition_key(conn, day)) for conn, day in pairs if conn in conns and day in days)


def _apply_connection_changes(
    context: dg.AssetExecutionContext,
    warehouse: InboxWarehouse,
    spec: ConnectorSpec,
    changes: list[ConnectionChange],
    now: datetime,
) -> dict[str, str]:
    """Connection events into the registry: created → stored active (with the token the receiver sealed, when
    it kept one), deleted → marked deleted; a history completion changes no row (the connections sensor reads
    it and runs the stream's history again). Returns event id → outcome."""
    outcomes: dict[str, str] = {}
    for change in changes:
        if change.problem:
            outcomes[change.event_id] = f"rejected: {change.problem}"
        elif change.kind == "created":
            linked = LinkedConnection(change.connection_id, change.integration_name, available_actions=())
            warehouse.store_connection(spec.name, linked, change.token_sealed, now=now)
            token = "with its token (sealed)" if change.token_sealed else "without a token (none kept)"
            outcomes[change.event_id] = f"connection stored {token}"
        elif change.kind == "deleted":
            n = warehouse.set_connection_status(spec.name, [change.connection_id], "deleted", now=now)
            outcomes[change.event_id] = "connection marked deleted" if n else "connection was not active here"
        else:
            days = f"{change.oldest or '?'} … {change.newest or '?'}"
            outcomes[change.event_id] = f"history of {change.stream} complete ({days}): read again by the sensor"
        context.log.info(f"{spec.name}: {change.kind} {change.connection_id}: {outcomes[change.event_id]}")
    return outcomes


def build_events_sensor(
    specs: Mapping[str, ConnectorSpec],
    translator: ConnectorTranslator,
    sync_assets: Sequence[dg.AssetsDefinition],
) -> dg.SensorDefinition:
    """``webhook_events``: new stored events → one run of their vendors' events assets and exactly the syncs that
    read the streams those events change, which the run orders after the merge (``SyncTranslator.get_deps``)."""
    hooked = hooked_connectors(specs)
    events_keys = {name: translator.get_events_asset_key(spec) for name, spec in hooked.items()}
    stream_keys = {
        (name, stream): translator.get_asset_key(StreamProps(spec, stream))
        for name, spec in hooked.items()
        for stream in spec.streams
    }
    reads = {key: set(deps) for a in sync_assets for key, deps in a.asset_deps.items()}
    targets = [*events_keys.values(), *(k for k, deps in reads.items() if deps & set(events_keys.values()))]

    def selection(pending: set[tuple[str, str | None]]) -> list[dg.AssetKey]:
        changed = {stream_keys[(n, s)] for n, s in pending if s is not None and (n, s) in stream_keys}
        syncs = sorted((k for k, deps in reads.items() if deps & changed), key=lambda k: k.to_user_string())
        return [*(events_keys[n] for n in sorted({n for n, _ in pending} & set(events_keys))), *syncs]

    @dg.sensor(
        name=SENSOR_NAME,
        asset_selection=dg.AssetSelection.assets(*targets),
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="When the service stored new webhook events: one run of their vendors' webhook_events assets "
        "and the syncs reading the streams they change; every "
        f"{RETRY_SECONDS} s while events wait on a vendor's transient failure.",
    )
    def _sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource) -> dg.SensorResult | dg.SkipReason:  # noqa: E501
        opened = warehouse.open()
        try:
            if not isinstance(opened, InboxWarehouse):
                return dg.SkipReason(f"the {opened.backend} warehouse keeps no webhook events")
            count, latest = opened.events_since(context.cursor or None)
            if count and latest is not None:
                fresh = opened.pending_streams(received_after=context.cursor or None)
                if not fresh:  # another run applied them already (a manual apply_webhook_events)
                    return dg.SensorResult(skip_reason=f"{count} new events, all applied already", cursor=latest)
                # The run key names the newest event acted on: a retried tick launches no second run.
                request = dg.RunRequest(run_key=f"events-through-{latest}", asset_selection=selection(fresh))
                return dg.SensorResult(run_requests=[request], cursor=latest)
            retry = opened.pending_streams(outcome_prefix=RETRY)
        finally:
            opened.close()
        if retry:
            # Events that wait on a transient failure (the vendor was down): tried again every RETRY_SECONDS even
            # if nothing new arrives; the run key names the period, so the ticks within it launch one run.
            period = int(time.time() // RETRY_SECONDS)
            return dg.SensorResult(
                run_requests=[dg.RunRequest(run_key=f"events-retry-{period}", asset_selection=selection(retry))]
            )
        return dg.SkipReason("no webhook event arrived since the last tick, and none waits to be retried")

    return _sensor
