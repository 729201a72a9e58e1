"""Reverse ETL in Dagster: one asset per sync spec, stored by its target vendor's sink IO manager.

A sync asset reads its source stream's table from the warehouse, maps every record with the sync's
YAML mapping and returns a DataFrame of target records (columns = the target's dotted field paths).
The target connector's ``SinkIOManager`` stores it by pushing it: it diffs the records against what
it delivered before (a hash per key in the warehouse), sends only new or changed ones in the fewest
calls, records each delivery and each rejected record with its reason, and reports the counts as
metadata. A re-run with nothing changed makes no write call.

Column lineage (``dagster/column_lineage``) on each sync asset shows which source column feeds which
target field.
"""


import hashlib
import json
import time
from typing import Any

import dagster as dg
import pandas as pd

from integrations_pipeline.engine.client import VendorClient
from integrations_pipeline.engine.diff import diff, key_text, outcome_rows
from integrations_pipeline.engine.mapping import SyncSpec, column_lineage, map_record, put_path
from integrations_pipeline.engine.sinks import SinkWriter, WriteReport
from integrations_pipeline.engine.spec import ConnectorSpec
from integrations_pipeline.warehouse import Warehouse, table_spec_for

from . import constants as c
from .resources import ConnectorCredentials, WarehouseResource

SINK_METADATA = "integrations_pipeline/sink"


def io_manager_key(connector: str) -> str:
    return f"{connector}_sink"


def _unflatten(row: dict[str, Any]) -> dict[str, Any]:
    """``{"contactEvent.value": 1}`` → ``{"contactEvent": {"value": 1}}``; missing values are left out."""
    out: dict[str, Any] = {}
    for path, value in row.items():
        if value is None or (isinstance(value, float) and value != value):  # None or NaN: not filled
            continue
        put_path(out, path, value)
    return out


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, path + "."))
        else:
            out[path] = value
    return out


class SinkIOManager(dg.ConfigurableIOManager):
    """Stores a DataFrame of target records by pushing the changed ones to a connector's sink."""

    connector: str
    credentials: ConnectorCredentials
    warehouse: WarehouseResource

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        from integrations_pipeline.connectors import load_connectors

        spec = load_connectors()[self.connector]
        sink_name = str(context.definition_metadata[SINK_METADATA])
        sink = spec.sinks[sink_name]
        sink_id = f"{self.connector}.{sink_name}"
        started = time.perf_counter()
        records = [_unflatten(row) for row in obj.to_dict("records")]
        warehouse = self.warehouse.open()
        try:
            delivered = warehouse.read_delivered(sink_id)
            plan = diff(sink, records, delivered)
            context.log.info(f"{sink_id}: {len(records)} records, to send {len(plan.to_send)} ({plan.counts()})")
            report = WriteReport(sink_id, [], 0, 0, 0)  # nothing to send: no client, no call
            if plan.to_send:
                with VendorClient(spec, self.credentials.credentials(), log=context.log.warning) as client:
                    try:
                        report = SinkWriter(client, spec, sink_name).write(plan.to_send)
                    except Exception as exc:
                        # Keep what did arrive before the failure, so a re-run does not send it again.
                        partial = getattr(exc, "partial_report", None)
                        if partial is not None:
                            _record(warehouse, sink_id, plan, partial)
                        raise
            _record(warehouse, sink_id, plan, report)
        finally:
            warehouse.close()
        counts = plan.counts()
        context.add_output_metadata(
            {
                "records_considered": dg.MetadataValue.int(len(records)),
                "unchanged": dg.MetadataValue.int(counts["unchanged"]),
                "created": dg.MetadataValue.int(sum(1 for o in report.sent if key_text(o.key) not in delivered)),
                "updated": dg.MetadataValue.int(sum(1 for o in report.sent if key_text(o.key) in delivered)),
                "rejected": dg.MetadataValue.int(len(report.rejected)),
                "write_calls": dg.MetadataValue.int(report.calls),
                c.RETRIES: dg.MetadataValue.int(report.retries),
                c.SECONDS: dg.MetadataValue.float(round(time.perf_counter() - started, 3)),
            }
        )
        for outcome in report.rejected[:20]:
            context.log.warning(f"{sink_id}: rejected {outcome.key!r}: {outcome.reason}")

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        """What this sink was sent, as (key, hash) rows: the target has no general read API."""
        sink_id = f"{self.connector}.{context.upstream_output.definition_metadata[SINK_METADATA]}"
        warehouse = self.warehouse.open()
        try:
            delivered = warehouse.read_delivered(sink_id)
        finally:
            warehouse.close()
        return pd.DataFrame({"key": list(delivered), "hash": list(delivered.values())})


def _record(warehouse: Warehouse, sink_id: str, plan, report: WriteReport) -> None:
    sent, rejected = outcome_rows(plan, report)
    if sent:
        warehouse.record_delivery(sink_id, sent)
    if rejected:
        warehouse.record_rejects(sink_id, rejected)


def build_sync_asset(sync: SyncSpec, connectors: dict[str, ConnectorSpec]) -> dg.AssetsDefinition:
    source_spec = connectors[sync.source_connector]
    source_key = dg.AssetKey([sync.source_connector, sync.source_stream])
    lineage = dg.TableColumnLineage(
        deps_by_column={
            target: [dg.TableColumnDep(asset_key=source_key, column_name=col) for col in cols]
            for target, cols in column_lineage(sync).items()
        }
    )
    fingerprint = hashlib.sha256(json.dumps(sync.model_dump(mode="json", by_alias=True), sort_keys=True).encode()).hexdigest()[:16]

    @dg.asset(
        key=[sync.target_connector, sync.name],
        deps=[source_key],
        group_name="syncs",
        description=f"{sync.description}\n\n`{sync.source}` → sink `{sync.target}`.",
        kinds={"python", sync.target_connector},
        code_version=fingerprint,
        io_manager_key=io_manager_key(sync.target_connector),
        metadata={SINK_METADATA: sync.target_sink, "dagster/column_lineage": lineage},
        required_resource_keys={c.WAREHOUSE_RESOURCE},
        pool=f"{sync.target_connector}_api",
    )
    def _sync(context: dg.AssetExecutionContext) -> pd.DataFrame:
        resource: WarehouseResource = getattr(context.resources, c.WAREHOUSE_RESOURCE)
        warehouse = resource.open()
        try:
            records = warehouse.read_records(table_spec_for(source_spec, sync.source_stream))
        finally:
            warehouse.close()
        rows = [_flatten(m) for m in (map_record(sync, r) for r in records) if m is not None]
        context.log.info(f"{sync.name}: {len(records)} source records → {len(rows)} target records")
        # object dtype: keep Python ints/strings as they are (no float coercion of sparse columns).
        return pd.DataFrame(rows, columns=list(sync.fields), dtype=object)

    return _sync
