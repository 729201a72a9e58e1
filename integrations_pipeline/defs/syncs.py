"""Reverse ETL in Dagster: one asset per sync spec, stored by its target vendor's sink IO manager.

A sync asset reads its source stream's table from the warehouse, maps every record with the sync's
YAML mapping and returns a DataFrame of target records (columns = the target's dotted field paths).
The target connector's ``SinkIOManager`` stores it by pushing it: it diffs the records against what
it delivered before (a hash per key in the warehouse), sends only new or changed ones in the fewest
calls, records each delivery and each rejected record with its reason, and reports the counts as
metadata. A re-run with nothing changed makes no write call.

Column lineage (``dagster/column_lineage``) on each sync asset shows which source column feeds which
target field; since the open-source UI does not draw it, ``column_lineage_table`` shows every target field
with its full source path and how it is computed, as a Markdown table (``integrations-pipeline lineage``
prints the same). A sync may be routed through a proxy (``engine.write.mapping.route``: SALESmanago via
Datatalks); it keeps its asset key and delivered state either way. A downstream asset that takes a
sync asset as input gets the target's current records back (``SinkIOManager.load_input``).
"""

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal

import dagster as dg
import pandas as pd

from integrations_pipeline.connectors import load_connectors, spec_paths
from integrations_pipeline.engine.client import ClientFactory
from integrations_pipeline.engine.spec import ConnectorSpec
from integrations_pipeline.engine.write.keys import put_path
from integrations_pipeline.engine.write.mapping import (
    SyncSpec,
    build_lookups,
    column_lineage,
    forwards,
    lineage_markdown,
    map_records,
    route,
)
from integrations_pipeline.engine.write.push import PushReport, push, resend_in_doubt
from integrations_pipeline.engine.write.reads import SinkReader
from integrations_pipeline.syncs import load_syncs
from integrations_pipeline.warehouse import table_spec_for

from . import constants as c
from .checks import build_in_doubt_check
from .lifecycle import exit_with_parent
from .resources import ConnectorCredentials, WarehouseResource
from .translator import SyncTranslator

SINK_METADATA = "integrations_pipeline/sink"
STATE_METADATA = "integrations_pipeline/delivery_state"  # the key of this sync's delivered state
LINEAGE_METADATA = "column_lineage_table"
DRY_RUN_TAG = "integrations_pipeline/dry_run"


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


def _frame_schema(frame: pd.DataFrame) -> dg.TableSchema:
    """The columns a sync sends (its target's dotted field paths), typed by the values they hold."""

    def kind(column: str) -> str:
        values = [v for v in frame[column] if v is not None and not (isinstance(v, float) and v != v)]
        kinds = {
            "boolean" if isinstance(v, bool) else "integer" if isinstance(v, int) else "number"
            if isinstance(v, float) else "string" if isinstance(v, str) else "json"
            for v in values
        }  # fmt: skip
        return kinds.pop() if len(kinds) == 1 else ("number" if kinds == {"integer", "number"} else "mixed")

    return dg.TableSchema(columns=[dg.TableColumn(str(col), kind(str(col))) for col in frame.columns])


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, path + "."))
        else:
            out[path] = value
    return out


class SyncRunConfig(dg.Config):
    """Run config of a sync asset (the launchpad shows it).

    ``dry_run`` plans without calling the vendor. ``in_doubt`` settles records an earlier call left in
    doubt (see ``integrations-pipeline in-doubt``) before the push: ``resend`` sends them again (after a
    person checked the target lacks them), ``mark_delivered`` records them as delivered (the target has
    them); ``in_doubt_keys`` limits it to those keys (empty: all of this sync's).
    """

    dry_run: bool = False
    in_doubt: Literal["keep", "resend", "mark_delivered"] = "keep"
    in_doubt_keys: list[str] = []


def settle_in_doubt(
    action: str,
    keys: list[str] | None,
    *,
    spec: ConnectorSpec,
    sink_name: str,
    warehouse: Any,
    state_key: str,
    clients: ClientFactory,
    run_id: str,
    log: Callable[[str], None],
) -> PushReport | int:
    """``resend`` the records in doubt of ``state_key`` (``keys``, None: all) or ``mark_delivered`` them;
    shared by the sync asset's run config and ``integrations-pipeline in-doubt``."""
    if action == "mark_delivered":
        rows = warehouse.resolve_in_doubt(state_key, keys, mark_delivered=True)
        log(f"{state_key}: {len(rows)} records in doubt marked delivered")
        return len(rows)
    if action != "resend":
        raise ValueError(f"in_doubt: got {action!r}, expected one of ['keep', 'resend', 'mark_delivered']")
    report = resend_in_doubt(
        keys,
        spec=spec,
        sink_name=sink_name,
        ledger=warehouse,
        state_key=state_key,
        clients=clients,
        run_id=run_id,
        log=log,
    )
    log(
        f"{state_key}: resent {report.considered} records in doubt in {report.write_calls} calls: "
        f"{report.created} delivered, {report.rejected} rejected, {report.in_doubt} in doubt again"
    )
    if report.stopped:
        raise dg.Failure(description=f"{state_key}: resending the records in doubt stopped: {report.stopped}")
    return report


class SinkIOManager(dg.ConfigurableIOManager):
    """Stores a DataFrame of target records by pushing the changed ones to a connector's sink.

    A dry run, asked for in the sync asset's run config (``ops: {<asset op>: {config: {dry_run: true}}}``)
    or for every run with ``dry_run=True`` here, writes what would be created, updated, deleted or
    rejected to ``_integrations.sync_plans`` and calls nothing.
    """

    connector: str
    credentials: ConnectorCredentials
    warehouse: WarehouseResource
    dry_run: bool = False
    read_limit: int = 1000
    # The folder the connector's spec came from (None: the built-in and entry-point specs): a run reads
    # the spec again in its own process, and must read the one the definitions were built from.
    connectors_dir: str | None = None

    def _spec(self) -> ConnectorSpec:
        return load_connectors(spec_paths(self.connectors_dir))[self.connector]

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        op_config = context.step_context.op_config or {}
        metadata = self.deliver(
            obj,
            sink_name=str(context.definition_metadata[SINK_METADATA]),
            state_key=str(context.definition_metadata[STATE_METADATA]),
            dry_run=self.dry_run or bool(op_config.get("dry_run")),
            settle=op_config.get("in_doubt", "keep"),
            settle_keys=list(op_config.get("in_doubt_keys") or []) or None,
            run_id=context.run_id,
            log=context.log,
        )
        context.add_output_metadata(metadata)

    def deliver(
        self,
        obj: pd.DataFrame,
        *,
        sink_name: str,
        state_key: str,
        dry_run: bool,
        settle: str,
        settle_keys: list[str] | None,
        run_id: str,
        log: Any,
    ) -> dict[str, Any]:
        """Push the sync's target records (``engine.write.push``), or only plan them (``dry_run``); the figures as
        metadata. The IO manager's store, and the sync asset's own call for a dry run (reported as an observation,
        so a plan never shows as a materialization)."""
        spec = self._spec()
        records = [_unflatten(row) for row in obj.to_dict("records")]
        warehouse = self.warehouse.open()
        clients = self.credentials.clients(log=log.warning)
        try:
            if settle != "keep" and not dry_run:
                settle_in_doubt(
                    settle,
                    settle_keys,
                    spec=spec,
                    sink_name=sink_name,
                    warehouse=warehouse,
                    state_key=state_key,
                    clients=clients,
                    run_id=run_id,
                    log=log.info,
                )
            report = push(
                records,
                spec=spec,
                sink_name=sink_name,
                ledger=warehouse,
                state_key=state_key,
                clients=clients,
                dry_run=dry_run,
                run_id=run_id,
                log=log.warning,
                on_plan=lambda plan: log.info(
                    f"{state_key} → {spec.name}/{sink_name}: {len(records)} records, "
                    f"to send {len(plan.to_send)} ({plan.counts()})"
                ),
            )
        finally:
            warehouse.close()
        metadata = {
            # What the sync holds: one row per target record it maps, with the columns it sends.
            c.ROW_COUNT: dg.MetadataValue.int(len(obj)),
            c.COLUMN_SCHEMA: dg.MetadataValue.table_schema(_frame_schema(obj)),
            "mode": dg.MetadataValue.text(
                "DRY RUN: planned only, nothing sent (the plan is in _integrations.sync_plans)"
                if report.dry_run
                else "sent"
            ),
            "records_considered": dg.MetadataValue.int(report.considered),
            "unchanged": dg.MetadataValue.int(report.unchanged),
            "created": dg.MetadataValue.int(report.created),
            "updated": dg.MetadataValue.int(report.updated),
            "deleted_at_source": dg.MetadataValue.int(report.deleted),
            "rejected": dg.MetadataValue.int(report.rejected),
            "superseded": dg.MetadataValue.int(report.superseded),
            # insert_once targets (Trakor) keep the first version: changes that cannot be sent.
            "skipped_insert_once": dg.MetadataValue.int(report.skipped_insert_once),
            # Records a call may or may not have applied: never re-sent on their own (see the check).
            "in_doubt": dg.MetadataValue.int(report.in_doubt),
            "held_in_doubt": dg.MetadataValue.int(report.held_in_doubt),
            "recovered_intents": dg.MetadataValue.int(report.recovered_intents),
            "settled_by_read": dg.MetadataValue.int(report.settled_by_read),
            "write_calls": dg.MetadataValue.int(report.write_calls),
            "dry_run": dg.MetadataValue.bool(report.dry_run),
            "target": dg.MetadataValue.text(report.sink),
            c.RETRIES: dg.MetadataValue.int(report.retries),
            c.SECONDS: dg.MetadataValue.float(report.seconds),
        }
        verb = "would reject" if report.dry_run else "rejected"
        for key, reason in report.rejects:
            log.warning(f"{state_key}: {verb} {key!r}: {reason}")
        if report.dry_run:
            log.info(f"{state_key}: dry run, plan in _integrations.sync_plans (run_id {run_id})")
        if report.held_in_doubt:
            log.warning(
                f"{state_key}: {report.held_in_doubt} records are in doubt from an earlier call and were not sent; "
                f"settle them: integrations-pipeline in-doubt list --sync {state_key}"
            )
        if report.stopped:
            # The run fails: what was delivered is recorded, what is left goes with the next run, and
            # records in doubt wait for a person (the asset check no_deliveries_in_doubt fails until then).
            raise dg.Failure(
                description=f"{state_key}: push stopped: {report.stopped}. "
                f"Records in doubt: integrations-pipeline in-doubt list --sync {state_key}",
                metadata=metadata,
            )
        return metadata

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        """The target's side of a sync, for a downstream asset to compare with what was sent.

        One row per key this sync delivered (the first ``read_limit`` by key): ``key``, ``hash`` (of the
        record as sent), and, where the sink declares a ``read`` operation (SALESmanago and Datatalks
        contacts by email), ``in_target`` and the target's current record, flattened to dotted columns
        (the vendor's read shape, e.g. SALESmanago's flat contact). Reading costs vendor calls
        (SALESmanago: one per 50 contacts, from the hourly budget), hence the limit.
        """
        assert context.upstream_output is not None  # an input of a sync asset always has its upstream output
        upstream = context.upstream_output.definition_metadata
        state_key = str(upstream[STATE_METADATA])
        sink_name = str(upstream[SINK_METADATA])
        warehouse = self.warehouse.open()
        try:
            delivered = warehouse.read_delivered(state_key)
        finally:
            warehouse.close()
        keys = sorted(delivered)[: self.read_limit]
        spec = self._spec()
        if spec.sinks[sink_name].read is None or not keys:
            return pd.DataFrame({"key": keys, "hash": [delivered[k] for k in keys]})
        with SinkReader(
            self.credentials.clients(log=context.log.warning).sink(spec, sink_name), spec, sink_name
        ) as reader:
            found = reader.read(keys)
        context.log.info(
            f"{state_key}: read {len(found.found)} of {len(keys)} delivered keys back from "
            f"{spec.name}/{sink_name} in {found.calls} calls; {len(found.not_found)} not in the target"
        )
        rows = [
            {"key": k, "hash": delivered[k], "in_target": k in found.found, **_flatten(found.found.get(k) or {})}
            for k in keys
        ]
        return pd.DataFrame(rows, dtype=object)


def build_sync_asset(
    sync: SyncSpec, connectors: dict[str, ConnectorSpec], translator: SyncTranslator | None = None
) -> dg.AssetsDefinition:
    """The asset of one (possibly routed: see ``engine.write.mapping.route``) sync; keys by ``translator``."""
    translator = translator or SyncTranslator()

    def stream_key(ref: str) -> dg.AssetKey:
        return translator.get_stream_key(connectors, ref)

    lineage = dg.TableColumnLineage(
        deps_by_column={
            target: [dg.TableColumnDep(asset_key=stream_key(stream), column_name=col) for stream, col in deps]
            for target, deps in column_lineage(sync).items()
        }
    )
    fingerprint = hashlib.sha256(
        json.dumps(sync.model_dump(mode="json", by_alias=True), sort_keys=True).encode()
    ).hexdigest()[:16]
    via = f" (routed from `{sync.routed_from}`)" if sync.routed_from else ""
    columns = list(sync.all_fields())

    @dg.asset(
        key=translator.get_asset_key(sync),
        deps=translator.get_deps(connectors, sync),
        group_name=translator.get_group_name(sync),
        # The lineage table in the description too: the UI shows a description at once, a Markdown metadata
        # value only behind "Show Markdown".
        description=f"{sync.description}\n\n`{sync.source}` → sink `{sync.target}`{via}.\n\n"
        f"**Column lineage**\n\n{lineage_markdown(sync)}",
        kinds=translator.get_kinds(sync),
        tags=translator.get_tags(sync),
        code_version=fingerprint,
        io_manager_key=io_manager_key(sync.target_connector),
        metadata={
            SINK_METADATA: sync.target_sink,
            STATE_METADATA: sync.asset_ref,
            "dagster/column_lineage": lineage,
            # The open-source UI does not draw dagster/column_lineage (a Dagster+ feature): the same, as a table.
            LINEAGE_METADATA: dg.MetadataValue.md(lineage_markdown(sync)),
        },
        required_resource_keys={c.WAREHOUSE_RESOURCE, io_manager_key(sync.target_connector)},
        pool=f"{sync.target_connector}_api",
        output_required=False,  # a dry run plans and reports an observation: nothing was materialized
    )
    def _sync(context: dg.AssetExecutionContext, config: SyncRunConfig) -> Iterator[dg.Output[pd.DataFrame]]:
        exit_with_parent()  # a step whose run worker was killed must not push on as an orphan
        resource: WarehouseResource = getattr(context.resources, c.WAREHOUSE_RESOURCE)
        warehouse = resource.open()

        def read(stream: str) -> list[dict[str, Any]]:
            connector, name = stream.split("/")
            return warehouse.read_records(table_spec_for(connectors[connector], name))

        try:
            records = read(sync.source)
            lookups = build_lookups(sync, read)
        finally:
            warehouse.close()
        rows = [_flatten(m) for r in records for m in map_records(sync, r, lookups)]
        context.log.info(f"{sync.name}: {len(records)} source records → {len(rows)} target records")
        # object dtype: keep Python ints/strings as they are (no float coercion of sparse columns).
        frame = pd.DataFrame(rows, dtype=object)
        # Declared fields first, then keys under object fields ('properties.x'), for a stable layout.
        frame = frame.reindex(columns=[*columns, *(k for k in frame.columns if k not in columns)])
        if not config.dry_run:
            yield dg.Output(frame)  # the sink IO manager sends it
            return
        # A dry run is no materialization: the plan is reported as an observation (the UI's asset events show
        # it, the partition and freshness views do not count it) and the run is tagged, so it never reads as sent.
        sink: SinkIOManager = getattr(context.resources, io_manager_key(sync.target_connector))
        context.instance.add_run_tags(context.run.run_id, {DRY_RUN_TAG: "true"})
        metadata = sink.deliver(
            frame,
            sink_name=sync.target_sink,
            state_key=sync.asset_ref,
            dry_run=True,
            settle="keep",
            settle_keys=None,
            run_id=context.run.run_id,
            log=context.log,
        )
        context.log_event(dg.AssetObservation(asset_key=context.asset_key, metadata=metadata))

    return _sync


def build_sync_checks(sync_assets: list[dg.AssetsDefinition]) -> list[dg.AssetChecksDefinition]:
    """``no_deliveries_in_doubt`` on every sync asset (``checks.build_in_doubt_check``)."""
    checks = []
    for asset in sync_assets:
        key = asset.key
        checks.append(build_in_doubt_check(key, str(asset.specs_by_key[key].metadata[STATE_METADATA])))
    return checks


def routed_syncs(
    connectors: dict[str, ConnectorSpec], environ: Mapping[str, str], syncs: Iterable[SyncSpec] | None = None
) -> list[SyncSpec]:
    """Every sync spec (``syncs``, default the built-in ones), routed as configured: the spec's ``via``,
    overridden for every sync into a connector by ``<CONNECTOR>_VIA`` (``SALESMANAGO_VIA=datatalks``;
    ``direct`` = no proxy)."""
    routed = []
    for sync in load_syncs(connectors).values() if syncs is None else syncs:
        via = sync.via
        override = environ.get(f"{sync.target_connector.upper()}_VIA")
        # The variable routes every sync the proxy can carry; one it cannot (the v3 catalog: Datatalks
        # products need brand, url, ...) stays direct. A spec's own `via` is checked strictly at load.
        if override == "direct":
            via = None
        elif override and forwards(connectors.get(override), sync.target):
            via = override
        routed.append(route(sync, via, connectors))
    return routed


def build_sync_assets(
    connectors: dict[str, ConnectorSpec],
    environ: Mapping[str, str],
    translator: SyncTranslator | None = None,
    syncs: Iterable[SyncSpec] | None = None,
) -> list[dg.AssetsDefinition]:
    """One asset per sync spec (``syncs``, default the built-in ones), each routed as configured
    (``routed_syncs``), keyed by ``translator``."""
    return [build_sync_asset(sync, connectors, translator) for sync in routed_syncs(connectors, environ, syncs)]
