"""The documented backfill commands: the connection registry, then one run that fetches exactly its window.

``dagster asset materialize -m integrations_pipeline.definitions --select trackstar/connections`` gives each
connection its partition; ``... --select trackstar/inventory --partition-range
"conn_a|2026-11-01...conn_b|2026-11-07"`` must then issue requests bounded by
``[2026-11-01T00:00:00Z, 2026-11-08T00:00:00Z)`` for both connections and load exactly the sandbox records in
that window.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.warehouse import connect_warehouse, table_spec_for

DAGSTER = str(Path(sys.executable).parent / "dagster")


def test_partition_range_is_one_run_with_the_exact_window(sandboxes, sandbox_env, tmp_path):
    servers, boxes = sandboxes
    trackstar = boxes["trackstar"]
    seen: list[tuple[str, dict[str, str]]] = []
    original = trackstar.handle

    def recording(request):
        seen.append((request.url.path, dict(request.url.params)))
        return original(request)

    trackstar.handle = recording  # the loopback server calls sandbox.handle per request
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    db = tmp_path / "w.duckdb"
    env = {**os.environ, **sandbox_env, "DAGSTER_HOME": str(home), "WAREHOUSE_URL": f"duckdb:///{db}"}

    def materialize(*args: str) -> None:
        proc = subprocess.run(
            [DAGSTER, "asset", "materialize", "-m", "integrations_pipeline.definitions", *args],
            # A guard against a hang, not a measured duration: generous enough for a machine at load 10.
            env=env,
            capture_output=True,
            text=True,
            timeout=3600,
            cwd=Path(__file__).parents[2],
        )
        assert proc.returncode == 0, proc.stderr[-3000:]

    materialize("--select", "trackstar/connections")
    materialize("--select", "trackstar/inventory", "--partition-range", "conn_a|2026-11-01...conn_b|2026-11-07")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_dynamic_partitions("trackstar_connections") == ["conn_a", "conn_b"]
        runs = [r for r in instance.get_runs() if "dagster/asset_partition_range_start" in r.tags]
    assert len(runs) == 1  # the whole range of both connections in one run, not one run per partition
    assert runs[0].tags["dagster/asset_partition_range_start"] == "conn_a|2026-11-01"
    assert runs[0].tags["dagster/asset_partition_range_end"] == "conn_b|2026-11-07"

    inventory_calls = [p for path, p in seen if path == "/wms/inventory"]
    assert inventory_calls, "no inventory request reached the sandbox"
    for params in inventory_calls:
        assert params["updated_date[gte]"] == "2026-11-01T00:00:00Z"
        assert params["updated_date[lt]"] == "2026-11-08T00:00:00Z"

    spec = load_connectors()["trackstar"]
    wh = connect_warehouse(f"duckdb:///{db}")
    try:
        got = wh.read_records(table_spec_for(spec, "inventory"))
    finally:
        wh.close()
    want = [
        {**r, "_connection_id": conn}
        for conn in trackstar.connections
        for r in trackstar.truth("inventory", conn)
        if "2026-11-01T00:00:00Z" <= r["updated_date"] < "2026-11-08T00:00:00Z"
    ]
    key = lambda r: (r["_connection_id"], r["id"])  # noqa: E731
    assert want and sorted(got, key=key) == sorted(want, key=key)
