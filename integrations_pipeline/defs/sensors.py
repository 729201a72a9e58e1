"""The cross-system sync sensor: run a sync when a stream it reads has been materialized since its last run.

One sensor, ``syncs_on_source_update``, watches every stream the sync assets read (sources and
lookups). Its cursor keeps, per stream, the storage id of the newest materialization already acted
on; a tick requests one run of exactly the syncs that read a stream with a newer one. A sync reads
whole tables and sends only what changed (``engine.write.push``), so a tick that fires twice, or a first
tick that runs every sync once, sends nothing twice.

Like the schedules, it starts stopped: turn it on in the UI (Automation) once the targets' credentials
are set, so enabling a code location never pushes to a marketing API by surprise.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import dagster as dg

SENSOR_NAME = "syncs_on_source_update"


def build_sync_sensor(sync_assets: Sequence[dg.AssetsDefinition]) -> dg.SensorDefinition:
    reads: dict[dg.AssetKey, set[dg.AssetKey]] = {}
    for asset in sync_assets:
        for key, deps in asset.asset_deps.items():
            reads[key] = set(deps)
    watched = sorted({k for deps in reads.values() for k in deps}, key=lambda k: k.to_user_string())

    @dg.sensor(
        name=SENSOR_NAME,
        description="Runs each cross-system sync after a stream it reads (source or lookup) is materialized.",
        asset_selection=dg.AssetSelection.assets(*reads),
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        seen: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
        latest: dict[str, int] = {}
        # One query for every watched stream; the storage id orders materializations.
        for record in context.instance.get_asset_records(watched):
            storage_id = record.asset_entry.last_materialization_storage_id
            if storage_id is not None:
                latest[record.asset_entry.asset_key.to_user_string()] = storage_id
        updated = {k for k, storage_id in latest.items() if seen.get(k) != storage_id}
        due = sorted(
            (sync for sync, deps in reads.items() if any(d.to_user_string() in updated for d in deps)),
            key=lambda k: k.to_user_string(),
        )
        cursor = json.dumps({**seen, **latest}, sort_keys=True)
        if not due:
            return dg.SkipReason(
                f"no stream read by a sync was materialized since the last tick ({len(latest)} watched)"
            )
        # The run key names the materializations acted on: a retried tick does not launch a second run.
        run_key = hashlib.sha256(cursor.encode()).hexdigest()[:16]
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=run_key,
                    asset_selection=due,
                    tags={"integrations_pipeline/trigger": ",".join(sorted(updated))[:200]},
                )
            ],
            cursor=cursor,
        )

    return _sensor
