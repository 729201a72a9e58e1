"""Per-customer connections in Dagster: one partition per connection, the registry asset, the sensor that
onboards new connections and the daily schedule that runs each connection on its own.

A vendor with ``connections:`` (Trackstar) partitions its streams by connection (``translator.py``:
``connection × day`` for incremental streams). The partitions are Dagster dynamic partitions named
``<vendor>_connections``; what exists is decided here, from the registry (``_integrations.connections``,
filled by the link flow, ``connection.*`` webhooks and the registry asset) and the fallback variable:

- ``<vendor>/connections`` (an asset, when the vendor has a link flow): reconciles the registry with the
  vendor's list (new ones added without a token, gone ones marked ``deleted``, actions refreshed) and adds
  the partitions;
- ``<vendor>_connections`` (a sensor): adds the partitions of connections that appeared, requests one run
  of each new usable connection's whole history, one run of a stream's history when the vendor says its
  historical sync of that resource completed (``connection.historical-sync-completed``), and cancels the
  queued or running runs of a connection that was deleted or revoked;
- ``<vendor>_incremental_sync`` (a schedule): at 01:00 UTC one run per usable connection for yesterday and the
  spec's lookback days before it (``translator.scheduled_range_tags``), so one customer's failure is that
  customer's partitions only and a record stamped late is read by the next day's run.

Runs it requests carry the tag ``integrations_pipeline/connection`` (the UI filters runs by it).
"""

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from integrations_pipeline.engine.auth import Credentials
from integrations_pipeline.engine.client import parse_connections
from integrations_pipeline.engine.connections import LinkFlow, connection_change, reconcile
from integrations_pipeline.engine.spec import ConnectorSpec
from integrations_pipeline.warehouse import Warehouse
from integrations_pipeline.warehouse.inbox import InboxWarehouse, StoredConnection

from . import constants as c
from .resources import ConnectorCredentials, WarehouseResource
from .translator import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    ConnectorTranslator,
    StreamProps,
    connection_partitions,
    partition_key,
    scheduled_range_tags,
)

CONNECTION_TAG = "integrations_pipeline/connection"
# Runs of a connection that was deleted or revoked are cancelled while in one of these.
_CANCELLABLE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


@dataclass(frozen=True)
class ConnectionStates:
    """What the registry and the fallback variable say about each connection of a vendor."""

    status: Mapping[str, str]  # id → active | deleted | revoked | no token (active, but no token to read with)
    stored: Mapping[str, StoredConnection]
    fallback: str = "the fallback variable"  # its name, for messages

    @property
    def known(self) -> list[str]:
        """Every connection that has (or had) data: each gets a partition, deleted ones keep theirs."""
        return sorted(self.status)

    @property
    def usable(self) -> list[str]:
        """Connections a run can read now."""
        return sorted(k for k, s in self.status.items() if s == "active")

    def why_not(self, connection_id: str) -> str:
        """Why a run cannot read ``connection_id``, for its failure message."""
        status = self.status.get(connection_id)
        link = "link it through the service (`integrations-pipeline serve`, /trackstar/store-token)"
        if status is None:
            return f"unknown: neither the registry nor {self.fallback} has it; {link}, or set {self.fallback}"
        if status == "no token":
            return f"no token stored: {link}, or set {self.fallback}"
        if status == "revoked":
            return "revoked: the vendor refused its token (401); link it again through the service"
        return f"{status}: the vendor no longer lists it"


def connection_states(spec: ConnectorSpec, warehouse: Warehouse, credentials: Credentials) -> ConnectionStates:
    """The registry's connections of ``spec`` and the fallback variable's (those the registry does not know)."""
    stored = (
        {s.connection_id: s for s in warehouse.read_connections(spec.name)}
        if isinstance(warehouse, InboxWarehouse)
        else {}
    )
    status = {k: ("no token" if s.status == "active" and not s.token_sealed else s.status) for k, s in stored.items()}
    assert spec.connections is not None
    if credentials.has(spec.connections.token.env):
        for conn in parse_connections(spec, credentials):
            # As usable_connections: the variable's token serves a connection stored active with none.
            if status.get(conn.id, "no token") == "no token":
                status[conn.id] = "active"
    return ConnectionStates(status=status, stored=stored, fallback=spec.connections.token.env)


def missing_partitions(instance: dg.DagsterInstance, spec: ConnectorSpec, known: list[str]) -> list[str]:
    name = connection_partitions(spec.name).name
    assert name is not None
    existing = set(instance.get_dynamic_partitions(name))
    return [k for k in known if k not in existing]


def add_partitions(instance: dg.DagsterInstance, spec: ConnectorSpec, known: list[str]) -> list[str]:
    """Add the partitions of ``known`` connections that have none; the ones added."""
    missing = missing_partitions(instance, spec, known)
    if missing:
        name = connection_partitions(spec.name).name
        assert name is not None
        instance.add_dynamic_partitions(name, missing)
    return missing


def _stream_keys(spec: ConnectorSpec, translator: ConnectorTranslator) -> tuple[list[dg.AssetKey], list[dg.AssetKey]]:
    """(incremental, full-refresh) stream keys of ``spec``."""
    inc: list[dg.AssetKey] = []
    full: list[dg.AssetKey] = []
    for name, stream in spec.streams.items():
        (inc if stream.incremental else full).append(translator.get_asset_key(StreamProps(spec, name)))
    return inc, full


def _last_day(spec: ConnectorSpec) -> str | None:
    """The last complete day of the incremental streams' partitions (yesterday, UTC), None before the first."""
    starts = [s.incremental.start_date for s in spec.streams.values() if s.incremental]
    if not starts:
        return None
    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    return yesterday if yesterday >= min(starts) else None


def history_requests(
    spec: ConnectorSpec,
    translator: ConnectorTranslator,
    connection_id: str,
    *,
    run_key: str,
    streams: list[str] | None = None,
    first: str | None = None,
    last: str | None = None,
) -> list[dg.RunRequest]:
    """One run over a connection's days ``[first, last]`` (default: the whole history) of ``streams`` (default:
    every incremental stream), plus, for the whole history, one run of its full-refresh streams."""
    inc, full = _stream_keys(spec, translator)
    if streams is not None:
        inc = [translator.get_asset_key(StreamProps(spec, s)) for s in streams]
        full = []
    start = min((s.incremental.start_date for s in spec.streams.values() if s.incremental), default=None)
    end = _last_day(spec)
    requests = []
    first = max(first or start or "", start or "")
    last = min(last or end or "", end or "")
    tags = {CONNECTION_TAG: connection_id, c.VENDOR_TAG: spec.name}
    if inc and start and end and first <= last:
        requests.append(
            dg.RunRequest(
                run_key=f"{run_key}:days",
                asset_selection=inc,
                tags={
                    **tags,
                    RANGE_START_TAG: str(partition_key(connection_id, first)),
                    RANGE_END_TAG: str(partition_key(connection_id, last)),
                },
            )
        )
    if full:
        requests.append(
            dg.RunRequest(run_key=f"{run_key}:full", asset_selection=full, partition_key=connection_id, tags=tags)
        )
    return requests


def build_connections_sensor(spec: ConnectorSpec, translator: ConnectorTranslator) -> dg.SensorDefinition:
    inc, full = _stream_keys(spec, translator)
    creds_key = c.credentials_resource_key(spec.name)
    ce = spec.webhooks.connection_events if spec.webhooks else None
    history_type = ce.history_completed if ce else None

    @dg.sensor(
        name=f"{spec.name}_connections",
        asset_selection=dg.AssetSelection.assets(*inc, *full),
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.STOPPED,
        required_resource_keys={creds_key, c.WAREHOUSE_RESOURCE},
        description=(
            f"{spec.title}: a partition per connection; reads each new connection's history once, a stream's "
            "history again when the vendor completes its historical sync, and cancels the runs of a deleted or "
            "revoked connection."
        ),
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        cursor = json.loads(context.cursor) if context.cursor else {}
        started: list[str] = list(cursor.get("history", []))
        events_after: str | None = cursor.get("events_after")
        creds: ConnectorCredentials = getattr(context.resources, creds_key)
        warehouse = getattr(context.resources, c.WAREHOUSE_RESOURCE).open()
        try:
            states = connection_states(spec, warehouse, creds.credentials())
            events = (
                warehouse.read_events(spec.name, event_types=[history_type], received_after=events_after)
                if history_type and isinstance(warehouse, InboxWarehouse)
                else []
            )
        finally:
            warehouse.close()
        requests: list[dg.RunRequest] = []
        for conn in states.usable:
            if conn not in started:
                requests += history_requests(spec, translator, conn, run_key=f"history:{conn}")
                started.append(conn)
        for event in events:
            change = connection_change(spec, event)
            events_after = event.received_at
            if change is None or change.stream is None or change.connection_id not in states.usable:
                continue  # a connection not usable yet gets its whole history when it becomes usable
            requests += history_requests(
                spec,
                translator,
                change.connection_id,
                run_key=f"history:{change.connection_id}:{event.event_id}",
                streams=[change.stream],
                first=change.oldest,
                last=change.newest,
            )
        cancelled = _cancel_runs(context.instance, spec, [k for k, s in states.status.items() if s != "active"])
        for run_id, conn in cancelled:
            context.log.info(f"{spec.name}: cancelled run {run_id} of connection {conn} ({states.status[conn]})")
        added = missing_partitions(context.instance, spec, states.known)
        name = connection_partitions(spec.name).name
        assert name is not None
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[dg.AddDynamicPartitionsRequest(name, added)] if added else [],
            cursor=json.dumps({"history": sorted(started), "events_after": events_after}),
        )

    return _sensor


def _cancel_runs(instance: dg.DagsterInstance, spec: ConnectorSpec, connections: list[str]) -> list[tuple[str, str]]:
    """Cancel the queued or running runs of ``connections`` (deleted or revoked): (run id, connection) each."""
    done = []
    for conn in connections:
        runs = instance.get_runs(
            filters=dg.RunsFilter(statuses=_CANCELLABLE, tags={CONNECTION_TAG: conn, c.VENDOR_TAG: spec.name})
        )
        for run in runs:
            try:
                stopped = (
                    instance.run_launcher.terminate(run.run_id)
                    if run.status == dg.DagsterRunStatus.STARTED
                    else instance.run_coordinator.cancel_run(run.run_id)
                )
            except Exception:  # noqa: BLE001 - a launcher without termination raises; the fallback below decides
                stopped = False
            if not stopped and run.status in (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED):
                # A coordinator without a queue cannot cancel a run it never launched: it never will now.
                instance.report_run_canceled(run, message=f"connection {conn} was deleted or revoked")
                stopped = True
            if stopped:
                done.append((run.run_id, conn))
            # A started run this launcher cannot stop ends on its own: its reads of the connection fail alone.
    return done


def build_connection_schedules(
    spec: ConnectorSpec, translator: ConnectorTranslator
) -> tuple[list["dg.UnresolvedAssetJobDefinition"], list[dg.ScheduleDefinition]]:
    """Per-connection jobs and schedules: incremental streams at 01:00 UTC for yesterday, full-refresh streams
    at 01:30, one run per usable connection."""
    inc, full = _stream_keys(spec, translator)
    creds_key = c.credentials_resource_key(spec.name)
    jobs, schedules = [], []
    for keys, suffix, cron, what in (
        (inc, "incremental_sync", "0 1 * * *", "incremental streams, one connection's day per run"),
        (full, "full_refresh", "30 1 * * *", "full-refresh streams, one connection per run"),
    ):
        if not keys:
            continue
        job = dg.define_asset_job(
            f"{spec.name}_{suffix}",
            selection=dg.AssetSelection.assets(*keys),
            description=f"{spec.title}: {what}.",
            tags={c.VENDOR_TAG: spec.name},  # the run queue's per-vendor limit (deploy/dagster.yaml)
        )
        jobs.append(job)
        schedules.append(_connection_schedule(spec, job, cron, daily=keys is inc, creds_key=creds_key))
    return jobs, schedules


def _connection_schedule(
    spec: ConnectorSpec, job: "dg.UnresolvedAssetJobDefinition", cron: str, *, daily: bool, creds_key: str
) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=f"{job.name}_schedule",
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        required_resource_keys={creds_key, c.WAREHOUSE_RESOURCE},
        description=f"One run per usable {spec.title} connection (the registry and the fallback variable).",
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> Iterator[dg.RunRequest | dg.SkipReason]:
        creds: ConnectorCredentials = getattr(context.resources, creds_key)
        warehouse_resource: WarehouseResource = getattr(context.resources, c.WAREHOUSE_RESOURCE)
        warehouse = warehouse_resource.open()
        try:
            states = connection_states(spec, warehouse, creds.credentials())
        finally:
            warehouse.close()
        name = connection_partitions(spec.name).name
        assert name is not None
        existing = set(context.instance.get_dynamic_partitions(name))
        when = context.scheduled_execution_time
        day: date = when.astimezone(UTC).date() - timedelta(days=1)
        ready = [k for k in states.usable if k in existing]
        if daily and scheduled_range_tags(spec, day) is None:
            yield dg.SkipReason(f"{day} comes before the first {spec.name} partition")
            return
        if not ready:
            yield dg.SkipReason(
                f"no usable {spec.name} connection has a partition yet (turn on the {spec.name}_connections sensor "
                f"or materialize {spec.name}/connections)"
            )
            return
        for conn in ready:
            key = str(partition_key(conn, day.isoformat() if daily else None))
            tags = {CONNECTION_TAG: conn, c.VENDOR_TAG: spec.name}
            if daily:
                # Yesterday and the lookback days before it, in one run: late-stamped records are read.
                yield dg.RunRequest(
                    run_key=f"{key}@{when.isoformat()}", tags={**tags, **(scheduled_range_tags(spec, day, conn) or {})}
                )
            else:
                yield dg.RunRequest(run_key=f"{key}@{when.isoformat()}", partition_key=key, tags=tags)

    return _schedule


def build_connections_asset(spec: ConnectorSpec, translator: ConnectorTranslator) -> dg.AssetsDefinition:
    """``<vendor>/connections``: the registry reconciled with the vendor's list of connections."""
    creds_key = c.credentials_resource_key(spec.name)

    @dg.multi_asset(
        name=f"{spec.name}_connections_registry",
        specs=[translator.get_connections_asset_spec(spec)],
        required_resource_keys={creds_key, c.WAREHOUSE_RESOURCE},
        op_tags={c.VENDOR_TAG: spec.name},
    )
    def _registry(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        creds: ConnectorCredentials = getattr(context.resources, creds_key)
        warehouse_resource: WarehouseResource = getattr(context.resources, c.WAREHOUSE_RESOURCE)
        with creds.clients(log=context.log.warning).connector(spec) as client:
            listed = LinkFlow(client).listed()  # the organisation's key only: no connection token is sent
        warehouse = warehouse_resource.open()
        try:
            if not isinstance(warehouse, InboxWarehouse):
                raise dg.Failure(f"the {warehouse.backend} warehouse keeps no connection registry")
            now = datetime.now(UTC)
            stored = {s.connection_id: s.status for s in warehouse.read_connections(spec.name)}
            plan = reconcile(stored, listed)
            for linked in plan.added:
                warehouse.store_connection(spec.name, linked, None, now=now)
            # Only active ones are refreshed: storing sets a connection active, and a revoked one stays revoked
            # until the customer links again.
            for linked in plan.refreshed:
                if stored[linked.connection_id] == "active":
                    warehouse.store_connection(spec.name, linked, None, now=now)
            warehouse.set_connection_status(spec.name, plan.deactivated, "deleted", now=now)
            states = connection_states(spec, warehouse, creds.credentials())
        finally:
            warehouse.close()
        added_partitions = add_partitions(context.instance, spec, states.known)
        for linked in plan.added:
            context.log.warning(
                f"{spec.name}: connection {linked.connection_id} ({linked.integration_name}) is listed by the vendor "
                "and was never linked here: stored without a token until it is linked through the service"
            )
        rows = [
            f"| `{k}` | {getattr(states.stored.get(k), 'integration_name', None) or ''} | {states.status[k]} | "
            f"{len(getattr(states.stored.get(k), 'available_actions', ()) or ())} |"
            for k in states.known
        ]
        table = "| connection | integration | status | actions |\n|---|---|---|---|\n" + "\n".join(rows)
        return dg.MaterializeResult(
            metadata={
                "listed": dg.MetadataValue.int(len(listed)),
                "added": dg.MetadataValue.int(len(plan.added)),
                "deactivated": dg.MetadataValue.text(", ".join(plan.deactivated) or "none"),
                "usable": dg.MetadataValue.int(len(states.usable)),
                "partitions_added": dg.MetadataValue.text(", ".join(added_partitions) or "none"),
                "connections": dg.MetadataValue.md(table),
                c.ROW_COUNT: dg.MetadataValue.int(len(states.known)),
            }
        )

    return _registry
