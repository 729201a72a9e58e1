"""Jobs and schedules: per connector, a daily job over its incremental streams and one for the rest.

The daily schedule materializes yesterday's partition (UTC) an hour after midnight, after Trackstar's
own hourly WMS sync has run, together with the spec's ``lookback_days`` before it (one range run), so a
record stamped late is still read; for a vendor with per-customer connections, one run per connection. Full-refresh streams (Salestrekker workflows) refresh daily too.
"""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

import dagster as dg

from integrations_pipeline.engine.spec import ConnectorSpec

from . import constants as c
from .connections import build_connection_schedules
from .translator import ConnectorTranslator, StreamProps, scheduled_range_tags


def build_connector_jobs_and_schedules(
    spec: ConnectorSpec, translator: ConnectorTranslator | None = None
) -> tuple[list[dg.UnresolvedAssetJobDefinition], list[Any]]:
    translator = translator or ConnectorTranslator()
    if spec.connections is not None:
        # Partitioned by connection: one run per connection (connections.py).
        return build_connection_schedules(spec, translator)
    incremental = [translator.get_asset_key(StreamProps(spec, n)) for n, s in spec.streams.items() if s.incremental]
    full = [translator.get_asset_key(StreamProps(spec, n)) for n, s in spec.streams.items() if not s.incremental]
    jobs: list[dg.UnresolvedAssetJobDefinition] = []
    # Asset jobs are resolved when Definitions load: the partitioned schedule is an unresolved one until then.
    schedules: list[Any] = []
    if incremental:
        job = dg.define_asset_job(
            f"{spec.name}_incremental_sync",
            selection=dg.AssetSelection.assets(*incremental),
            description=f"{spec.title}: incremental streams, one daily partition per run.",
            tags={c.VENDOR_TAG: spec.name},  # the run queue's per-vendor limit (deploy/dagster.yaml)
        )
        jobs.append(job)
        schedules.append(_daily_schedule(spec, job))
    if full:
        job = dg.define_asset_job(
            f"{spec.name}_full_refresh",
            selection=dg.AssetSelection.assets(*full),
            description=f"{spec.title}: full-refresh streams.",
            tags={c.VENDOR_TAG: spec.name},
        )
        jobs.append(job)
        schedules.append(dg.ScheduleDefinition(job=job, cron_schedule="30 1 * * *", execution_timezone="UTC"))
    return jobs, schedules


def _daily_schedule(spec: ConnectorSpec, job: dg.UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    """At 01:00 UTC, one run of yesterday and the lookback days before it (``scheduled_range_tags``)."""

    @dg.schedule(
        name=f"{job.name}_schedule",
        job=job,
        cron_schedule="0 1 * * *",
        execution_timezone="UTC",
        description=f"Yesterday's {spec.title} partition (UTC), with the {spec.lookback_days()} lookback day(s) "
        "before it, so records stamped late are read.",
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        when = context.scheduled_execution_time
        day = when.astimezone(UTC).date() - timedelta(days=1)
        tags = scheduled_range_tags(spec, day)
        if tags is None:
            return dg.SkipReason(f"{day} comes before the first {spec.name} partition")
        return dg.RunRequest(run_key=f"{day}@{when.isoformat()}", tags={**tags, c.VENDOR_TAG: spec.name})

    return _schedule
