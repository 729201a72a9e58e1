"""The run queue of a deployment: Dagster's ``QueuedRunCoordinator``, with every run tagged by the vendor it calls.

``deploy/dagster.yaml`` limits how many runs of one vendor run at once with the queue's tag concurrency limits on
``integrations_pipeline/vendor``. Runs that sensors and schedules request carry that tag, and so do runs of the
jobs (their job tags). Runs that Dagster builds itself do not: an asset backfill launched from the UI or by the
backfill daemon holds only the backfill's own tags (``dagster._core.execution.asset_backfill`` passes
``run_request.tags`` plus the backfill id), and such runs would slip past the vendor's limit. So, before a run
is queued, this coordinator reads the ``integrations_pipeline/vendor`` tag of the assets the run materializes
(the translator puts it on every stream, registry and sync asset) and, when they name one vendor, adds it to the
run. A run over several vendors (the main job) keeps no vendor tag and counts only against
``max_concurrent_runs``; the shared rate budgets (``RATE_LIMIT_URL``) still keep each vendor's quota.

A slot is freed when the run ends. A run whose worker was killed (kill -9, an OOM kill) is marked failed by the
code server that launched it (its cleanup thread sees the dead process), and ``run_monitoring`` in
``deploy/dagster.yaml`` catches the rest: runs stuck starting or cancelling, runs past their maximum runtime, and
op concurrency slots held by runs that have ended.
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from . import constants as c


def vendors_of(keys: Iterable[dg.AssetKey], asset_graph: object) -> set[str]:
    """The vendor tags of the assets ``keys`` in ``asset_graph`` (a Dagster asset graph); unknown keys: none."""
    vendors = set()
    for key in keys:
        if asset_graph.has(key):  # type: ignore[attr-defined]
            vendor = asset_graph.get(key).tags.get(c.VENDOR_TAG)  # type: ignore[attr-defined]
            if vendor:
                vendors.add(vendor)
    return vendors


class VendorRunCoordinator(dg.QueuedRunCoordinator):
    """``QueuedRunCoordinator`` that tags each single-vendor run with ``integrations_pipeline/vendor`` before it is
    queued, so the queue's per-vendor limits hold for every run, however it was launched. Configured exactly as
    ``QueuedRunCoordinator`` (``run_coordinator: {module: integrations_pipeline.defs.coordinator, class:
    VendorRunCoordinator, config: {...}}``)."""

    def submit_run(self, context: dg.SubmitRunContext) -> dg.DagsterRun:
        run = context.dagster_run
        if c.VENDOR_TAG not in run.tags and run.asset_selection:
            vendors = vendors_of(run.asset_selection, context.workspace.asset_graph)
            if len(vendors) == 1:
                # Before the enqueue event: the dequeuer reads tags from storage when it applies the limits.
                self._instance.add_run_tags(run.run_id, {c.VENDOR_TAG: vendors.pop()})
                tagged = self._instance.get_run_by_id(run.run_id)
                context = dg.SubmitRunContext(tagged or run, context.workspace)
        return super().submit_run(context)
