"""The cross-system sync sensor: run a sync when a stream it reads has been materialized since its last run.

One sensor, ``syncs_on_source_update``, watches every stream the sync assets read (sources and
lookups). Its cursor keeps, per stream, the storage id of the newest materialization already acted
on; a tick requests one run of exactly the syncs that read a stream with a newer one, newer also than the
sync's own last materialization (a run that already held the sync after the stream, like the events
sensor's, needs no second one). A sync reads
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


def build_sync_sensor(
    sync_assets: Sequence[dg.AssetsDefinition], ignore: Sequence[dg.AssetKey] = ()
) -> dg.SensorDefinition:
    """``ignore``: deps that are not streams (the webhook events assets: the streams they change report their own
    materializations, which is what counts)."""
    reads: dict[dg.AssetKey, set[dg.AssetKey]] = {}
    for asset in sync_assets:
        for key, deps in asset.asset_deps.items():
            reads[key] = set(deps) - set(ignore)
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
        # One query for every watched stream and every sync; the storage id orders materializations.
        for record in context.instance.get_asset_records([*watched, *reads]):
            storage_id = record.asset_entry.last_materialization_storage_id
            if storage_id is not None:
                latest[record.asset_entry.asset_key.to_user_string()] = storage_id
        streams = {k.to_user_string() for k in watched}
        updated = {k for k, storage_id in latest.items() if k in streams and seen.get(k) != storage_id}

        def due(sync: dg.AssetKey) -> bool:
            # A stream materialized before the sync's own last run is in it already: the events sensor's run merges
            # webhooks and runs the syncs after, and must not bring a second run here.
            ran = latest.get(sync.to_user_string(), -1)
            return any((name := d.to_user_string()) in updated and latest[name] > ran for d in reads[sync])

        selected = sorted((sync for sync in reads if due(sync)), key=lambda k: k.to_user_string())
        cursor = json.dumps({**seen, **{k: v for k, v in latest.items() if k in streams}}, sort_keys=True)
        if not selected:
            return dg.SensorResult(
                skip_reason=f"no stream read by a sync was materialized since the sync last ran ({len(streams)} "
                "watched)",
                cursor=cursor,
            )
        # The run key names the materializations acted on: a retried tick does not launch a second run.
        run_key = hashlib.sha256(cursor.encode()).hexdigest()[:16]
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=run_key,
                    asset_selection=selected,
                    tags={"integrations_pipeline/trigger": ",".join(sorted(updated))[:200]},
                )
            ],
            cursor=cursor,
        )

    return _sensor
