"""Webhook events → stream tables, in Dagster: the ``apply_webhook_events`` job and the sensor that runs it.

The service stores verified webhooks (``_integrations.webhook_events``); this job turns the pending ones into
changes of their streams' tables (``engine.read.events``): an event that carries its object (Trackstar) is
merged with no API call; one that names its object by id only (Salestrekker) is applied by reading the object
with the stream's ``webhooks.fetch`` query, once per distinct id, through the connector's client from its
credentials resource, as the stream assets make it. Both merge by the newest-by-cursor rule. The job then
reports a materialization of each changed stream asset, partitioned by the day of the changed records' cursor:
the ``syncs_on_source_update`` sensor sees it and runs exactly the syncs that read the stream. Together: an
event reaches the target within the two sensors' intervals plus two runs.

Crash-safe by order: the merge commits first, the events are marked after. A run killed between the two applies
the same events again next time, and merging a record already merged changes nothing (newest by cursor). A
read that fails leaves its events pending with the reason: ``retry: ...`` for a transient failure, which the
sensor retries within ``RETRY_SECONDS`` even if no new event arrives; anything else fails the run (after the
rest is applied), so a person sees it.
"""

import time
from collections.abc import Iterator, Mapping
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


def build_events_job(specs: Mapping[str, ConnectorSpec], translator: ConnectorTranslator) -> dg.JobDefinition | None:
    """The job, or None when no loaded vendor sends webhooks."""
    hooked = {name: spec for name, spec in specs.items() if spec.webhooks is not None and spec.streams}
    if not hooked:
        return None

    @dg.op(
        name="apply_webhook_events_op",
        out={},  # it reports materializations of the stream assets; it passes nothing on
        required_resource_keys={c.WAREHOUSE_RESOURCE, *(c.credentials_resource_key(n) for n in hooked)},
        description="Merge pending webhook events into their streams' tables: the objects they carry, or those "
        "they name, read once per distinct id.",
    )
    def _apply(context: dg.OpExecutionContext) -> Iterator[dg.AssetMaterialization]:
        warehouse_resource: WarehouseResource = getattr(context.resources, c.WAREHOUSE_RESOURCE)
        warehouse = warehouse_resource.open()
        failures: list[str] = []
        try:
            if not isinstance(warehouse, InboxWarehouse):
                raise dg.Failure(f"the {warehouse.backend} warehouse keeps no webhook events")
            for name, spec in hooked.items():
                creds: ConnectorCredentials = getattr(context.resources, c.credentials_resource_key(name))
                yield from _apply_connector(context, warehouse, spec, creds, translator, failures)
        finally:
            warehouse.close()
        if failures:
            # After every vendor's events were applied and marked: one vendor's broken read holds up no other.
            raise dg.Failure("; ".join(failures))

    @dg.job(name=JOB_NAME, description="Apply stored webhook events to the stream tables, then report them.")
    def _job() -> None:
        _apply()

    return _job


def _apply_connector(
    context: dg.OpExecutionContext,
    warehouse: InboxWarehouse,
    spec: ConnectorSpec,
    creds: ConnectorCredentials,
    translator: ConnectorTranslator,
    failures: list[str],
) -> Iterator[dg.AssetMaterialization]:
    pending = warehouse.read_events(spec.name, pending_only=True)
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
    context: dg.OpExecutionContext,
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


def build_events_sensor(job: dg.JobDefinition) -> dg.SensorDefinition:
    @dg.sensor(
        name=SENSOR_NAME,
        job=job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Runs apply_webhook_events when the service stored new webhook events, and every "
        f"{RETRY_SECONDS} s while events wait on a vendor's transient failure.",
    )
    def _sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource) -> dg.SensorResult | dg.SkipReason:  # noqa: E501
        opened = warehouse.open()
        try:
            if not isinstance(opened, InboxWarehouse):
                return dg.SkipReason(f"the {opened.backend} warehouse keeps no webhook events")
            count, latest = opened.events_since(context.cursor or None)
            retry = opened.count_pending(RETRY) if not count else 0
        finally:
            opened.close()
        if count and latest is not None:
            # The run key names the newest event acted on: a retried tick launches no second run.
            return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"events-through-{latest}")], cursor=latest)
        if retry:
            # Events that wait on a transient failure (the vendor was down): tried again every RETRY_SECONDS even
            # if nothing new arrives; the run key names the period, so the ticks within it launch one run.
            period = int(time.time() // RETRY_SECONDS)
            return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"events-retry-{period}")])
        return dg.SkipReason("no webhook event arrived since the last tick, and none waits to be retried")

    return _sensor
