"""Scale simulation: many Trackstar connections × 6 streams × daily partitions, through Dagster's run queue.

    .venv/bin/python benchmarks/scale.py --connections 1000 --days 7          # wide: many customers
    .venv/bin/python benchmarks/scale.py --connections 4 --days 365           # long: a year, committed by day

A sandbox Trackstar (this process, on loopback) with one token per connection, each limited to 10 req/s as
Trackstar documents, and small pages so the machine holds it; a Dagster instance of its own (storage in a
scratch PostgreSQL database as a deployment's, or SQLite with ``--dagster-storage sqlite``; the
QueuedRunCoordinator with ``--runs`` at once and the per-vendor tag limit of ``deploy/dagster.yaml``; run
monitoring) and its daemon; the runs are asked for by a sensor of the simulation's code location
(``_scale_defs.py``), one per group of ``--group`` connections over every day, and started by the daemon's
run queue, each in its own process. The warehouse is a fresh PostgreSQL database on 127.0.0.1, as a
deployment's is: run processes write at once.

Reported: wall time (first run started → last run ended) against the quota-bound optimum for this
concurrency (every token at 10 req/s, ``--runs`` runs × the step's connection fan-out reading at once), the
requests the sandbox served, its 429s, the peak memory of the daemon's process tree (run workers included),
and whether the warehouse equals the truth (every stream of every connection: the sandbox's ids in the
window, no more, no fewer). Prints one JSON line last (``run.py`` reads it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
BIN = Path(sys.executable).parent
STREAMS = ("inventory", "products", "orders", "warehouses", "inbound_shipments", "returns")
RATE = 10.0  # Trackstar's GET limit per access token


def _rss_of_tree(pgid: int) -> tuple[float, float]:
    """(total, largest) RSS in MiB of the processes in process group ``pgid`` (the daemon and its children)."""
    total = largest = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) != pgid:  # pgrp is the 5th field of stat, the 3rd after the command
                continue
            rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20  # rss in pages, 24th field
        except (OSError, ValueError, IndexError):
            continue
        total += rss
        largest = max(largest, rss)
    return total, largest


def _fresh_postgres() -> tuple[str, str]:
    import psycopg

    base = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    name = f"ip_scale_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return base.rsplit("/", 1)[0] + f"/{name}", name


def _drop_postgres(name: str) -> None:
    import psycopg

    base = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@dataclass(frozen=True)
class Shape:
    """What one simulation reads and how (``main``'s options)."""

    connections: int
    days: int
    group: int  # connections per run
    runs: int  # runs at once
    records: int  # per stream per connection
    page_size: int
    timeout: float


def simulate(shape: Shape, dagster_storage: str = "postgres") -> dict[str, Any]:
    """One simulation (module docstring); its scratch directory and databases are removed whatever happens."""
    scratch = Path(tempfile.mkdtemp(prefix="ip-scale-"))
    databases: list[str] = []
    try:
        warehouse_url, database = _fresh_postgres()
        databases.append(database)
        storage_url = None
        if dagster_storage == "postgres":
            storage_url, database = _fresh_postgres()
            databases.append(database)
        return _simulate(scratch, warehouse_url, storage_url, shape)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        for database in databases:
            _drop_postgres(database)


def _simulate(scratch: Path, warehouse_url: str, storage_url: str | None, shape: Shape) -> dict[str, Any]:
    connections, days, group, runs = shape.connections, shape.days, shape.group, shape.runs
    records, page_size, timeout = shape.records, shape.page_size, shape.timeout
    import dagster as dg

    from integrations_pipeline.connectors import load_connectors
    from integrations_pipeline.defs.assets import CONNECTION_CONCURRENCY
    from integrations_pipeline.sandbox import data as sandbox_data
    from integrations_pipeline.sandbox.server import serve
    from integrations_pipeline.sandbox.trackstar import DEFAULT_SIZES, TrackstarSandbox
    from integrations_pipeline.warehouse import table_spec_for
    from integrations_pipeline.warehouse.inbox import open_inbox

    last = date(2026, 11, 20)
    first = last - timedelta(days=days - 1)
    start = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
    end = datetime.combine(last + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    ids = [f"conn_{n:04d}" for n in range(connections)]
    sizes = {stream: 0 for stream in DEFAULT_SIZES} | {stream: records for stream in STREAMS}
    sizes["warehouse_customers"] = 1
    sandbox = TrackstarSandbox(
        seed=11,
        sizes=sizes,
        connections={cid: f"scale-token-{cid}" for cid in ids},
        unsupported={},
        rate_limit_per_second=RATE,
    )
    for tenant in sandbox.tenants.values():  # every record stamped inside the simulated days
        for store in tenant.stores.values():
            store.timeline = sandbox_data.Timeline(store.size, store.key, start=start, end=end)

    home = scratch / "dagster_home"
    home.mkdir()
    deploy = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    coordinator = deploy["run_coordinator"]
    coordinator["config"]["max_concurrent_runs"] = runs
    coordinator["config"]["dequeue_interval_seconds"] = 1
    for limit in coordinator["config"]["tag_concurrency_limits"]:
        if limit["value"] == "trackstar":
            limit["limit"] = runs
    instance_config: dict[str, Any] = {
        "run_coordinator": coordinator,
        "run_launcher": deploy["run_launcher"],
        "run_monitoring": deploy["run_monitoring"],
        "sensors": {"use_threads": True},
        "telemetry": {"enabled": False},
    }
    if storage_url is not None:
        # Runs and event logs in PostgreSQL, as deploy/dagster.yaml keeps them (its URL written here: a scratch
        # database on loopback, no password). With SQLite (``--dagster-storage sqlite``) every partition's
        # materialization is a transaction of its own, and run workers writing at once queue on one file lock.
        instance_config["storage"] = {
            "postgres": {"postgres_url": storage_url.replace("postgresql://", "postgresql+psycopg2://", 1)}
        }
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance_config))
    specs = scratch / "connectors"
    specs.mkdir()
    spec = yaml.safe_load((ROOT / "integrations_pipeline" / "connectors" / "trackstar.yaml").read_text())
    spec["stream_defaults"]["incremental"]["start_date"] = first.isoformat()
    spec["stream_defaults"]["pagination"]["page_size"] = page_size
    for stream in spec["streams"].values():
        if isinstance(stream.get("pagination"), dict) and "page_size" in stream["pagination"]:
            stream["pagination"]["page_size"] = page_size
    (specs / "trackstar.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (scratch / "workspace.yaml").write_text(
        yaml.safe_dump(
            {
                "load_from": [
                    {
                        "python_file": {
                            "relative_path": str(BENCH_DIR / "_scale_defs.py"),
                            "working_directory": str(ROOT),
                            "location_name": "scale_simulation",
                        }
                    }
                ]
            }
        )
    )
    sim_id = uuid.uuid4().hex[:8]
    peak = {"total": 0.0, "largest": 0.0}
    with serve({"trackstar": sandbox}) as servers:
        env = {
            **os.environ,
            **sandbox.environment(servers.base_urls["trackstar"]),
            "DAGSTER_HOME": str(home),
            "WAREHOUSE_URL": warehouse_url,
            "RATE_LIMIT_URL": f"sqlite:///{scratch / 'budgets.sqlite'}",
            "SCALE_CONNECTORS_DIR": str(specs),
            "SCALE_CONNECTIONS": ",".join(ids),
            "SCALE_GROUP": str(group),
            "SCALE_FIRST": first.isoformat(),
            "SCALE_LAST": last.isoformat(),
            "SCALE_STREAMS": ",".join(STREAMS),
            "SCALE_ID": sim_id,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        daemon: subprocess.Popen[bytes] | None = None
        log = open(scratch / "daemon.log", "wb")  # noqa: SIM115 (closed below)
        try:
            with dg.DagsterInstance.from_config(str(home)) as instance:
                # What the connections sensor does for a registry of this size: a partition per connection.
                instance.add_dynamic_partitions("trackstar_connections", ids)
                before = dict(sandbox.counts)
                submitted = time.time()
                daemon = subprocess.Popen(
                    [str(BIN / "dagster-daemon"), "run", "-w", str(scratch / "workspace.yaml")],
                    env=env,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                stop = threading.Event()

                def sample() -> None:
                    while not stop.wait(0.5):
                        total, largest = _rss_of_tree(daemon.pid)
                        peak["total"] = max(peak["total"], total)
                        peak["largest"] = max(peak["largest"], largest)

                sampler = threading.Thread(target=sample, name="rss", daemon=True)
                sampler.start()
                expected = -(-connections // group)
                deadline = time.monotonic() + timeout
                while True:
                    found = instance.get_run_records(filters=dg.RunsFilter(tags={"scale/simulation": sim_id}))
                    done = [r for r in found if r.dagster_run.is_finished]
                    if len(found) == expected and len(done) == expected:
                        break
                    if daemon.poll() is not None:
                        raise RuntimeError(f"the daemon exited: {(scratch / 'daemon.log').read_text()[-3000:]}")
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{len(done)} of {expected} runs ended within {timeout:g} s")
                    time.sleep(1)
                stop.set()
                sampler.join()
                failed = [r.dagster_run.run_id for r in found if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS]
                started = min(r.start_time for r in found if r.start_time)
                ended = max(r.end_time for r in found if r.end_time)
        finally:
            if daemon is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(daemon.pid, signal.SIGTERM)
                try:
                    daemon.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(daemon.pid, signal.SIGKILL)
            log.close()
        served = {k: v - before.get(k, 0) for k, v in sandbox.counts.items()}
        # The warehouse against the truth: every stream of every connection holds exactly the sandbox's records.
        mismatched: list[str] = []
        stored_rows = 0
        trackstar = load_connectors()["trackstar"]
        with open_inbox(warehouse_url) as wh:
            for stream in STREAMS:
                rows = wh.read_records(table_spec_for(trackstar, stream))
                stored_rows += len(rows)
                held: dict[str, set[str]] = {}
                for row in rows:
                    held.setdefault(row["_connection_id"], set()).add(row["id"])
                for cid in ids:
                    truth = {r["id"] for r in sandbox.truth(stream, cid)}
                    if held.get(cid, set()) != truth:
                        mismatched.append(f"{stream}/{cid}: {len(held.get(cid, set()))} stored, {len(truth)} true")
    calls = sum(v for k, v in served.items() if k.startswith("GET /wms/"))
    per_connection = calls / connections
    at_once = min(runs * CONNECTION_CONCURRENCY, connections)
    # Each token's own 10 req/s bounds its connection; at_once tokens read at once bound the whole.
    optimum = max(per_connection / RATE, calls / (at_once * RATE))
    result = {
        "connections": connections,
        "streams": len(STREAMS),
        "days": days,
        "group": group,
        "runs_at_once": runs,
        "dagster_storage": "postgres" if storage_url else "sqlite",
        "runs": expected,
        "failed_runs": failed,
        "calls": calls,
        "rate_limited": served.get("429", 0),
        "wall_seconds": ended - started,
        "submitted_to_end_seconds": ended - submitted,
        "optimum_seconds": optimum,
        "peak_rss_total_mib": peak["total"],
        "peak_rss_largest_mib": peak["largest"],
        "stored_rows": stored_rows,
        "true_rows": connections * records * len(STREAMS),
        "mismatched": mismatched[:10],
        "mismatched_count": len(mismatched),
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--group", type=int, default=50, help="connections per run")
    parser.add_argument("--runs", type=int, default=4, help="runs at once (the queue's limit)")
    parser.add_argument("--records", type=int, default=20, help="records per stream per connection")
    parser.add_argument("--page-size", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument(
        "--dagster-storage", choices=("postgres", "sqlite"), default="postgres", help="the Dagster instance's storage"
    )
    args = parser.parse_args(argv)
    shape = Shape(args.connections, args.days, args.group, args.runs, args.records, args.page_size, args.timeout)
    result = simulate(shape, args.dagster_storage)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
