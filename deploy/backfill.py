"""Launch a backfill through the deployment's queue, as the UI's "Materialize → Launch backfill" does.

``python deploy/backfill.py --asset trackstar/orders --from 2026-10-01 --to 2026-10-31 [--connections a,b]``

The backfill is stored in the instance of ``$DAGSTER_HOME`` (``deploy/dagster.yaml``); the daemon's backfill
loop turns it into runs (one run per connection's range of days: the streams' single-run backfill policy), the
run queue starts them within the per-vendor limits, and each run's steps go to the Celery workers. Prints the
backfill's id; the UI shows it under Overview → Backfills. ``--connections`` defaults to every connection the
instance has a partition for (the connections sensor adds them). Daily vendors (no connections): days only.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
from dagster._core.execution.backfill import PartitionBackfill
from dagster._core.utils import make_new_backfill_id
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget

from integrations_pipeline.defs.translator import partition_key

WORKSPACE = Path(__file__).resolve().with_name("workspace.yaml")


def partition_names(first: str, last: str, connections: list[str] | None) -> list[str]:
    """Every ``connection|day`` (or ``day``) of days ``[first, last]``."""
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    days = [(start + timedelta(n)).isoformat() for n in range((end - start).days + 1)]
    if connections is None:
        return days
    return [str(partition_key(conn, day)) for conn in connections for day in days]


def submit(instance: dg.DagsterInstance, assets: list[dg.AssetKey], names: list[str], workspace: Path) -> str:
    """Store an asset backfill of ``names`` of ``assets``; the daemon runs it. Returns its id."""
    with WorkspaceProcessContext(instance, WorkspaceFileTarget([str(workspace)])) as process:
        graph = process.create_request_context().asset_graph
        backfill = PartitionBackfill.from_asset_partitions(
            backfill_id=make_new_backfill_id(),
            asset_graph=graph,
            partition_names=names,
            asset_selection=assets,
            backfill_timestamp=time.time(),
            tags={},
            dynamic_partitions_store=instance,
            all_partitions=False,
            title=None,
            description="deploy/backfill.py",
            run_config=None,
        )
        instance.add_backfill(backfill)
        return backfill.backfill_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--asset", action="append", required=True, help="an asset key, e.g. trackstar/orders")
    parser.add_argument("--from", dest="first", required=True, help="first day, YYYY-MM-DD")
    parser.add_argument("--to", dest="last", required=True, help="last day, YYYY-MM-DD")
    parser.add_argument("--connections", help="comma-separated connection ids (default: every partition's)")
    parser.add_argument("--workspace", type=Path, default=WORKSPACE)
    args = parser.parse_args(argv)
    assets = [dg.AssetKey(a.split("/")) for a in args.asset]
    with dg.DagsterInstance.get() as instance:
        # Dynamic partitions named <vendor>_connections (defs/connections.py); none for a daily-only vendor.
        known = instance.get_dynamic_partitions(f"{assets[0].path[0]}_connections")
        connections = args.connections.split(",") if args.connections else (list(known) or None)
        backfill_id = submit(instance, assets, partition_names(args.first, args.last, connections), args.workspace)
    print(backfill_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
