"""The two things the benchmarks time: the real engine path and a bare httpx loop.

- ``run_engine``: ``VendorClient`` + ``load_stream`` + ``WarehouseDestination`` (the adapter the
  Dagster assets use) into a DuckDB file, exactly as an asset materialisation runs, for the
  trackstar ``inventory`` stream over a window that covers all sandbox data.
- ``run_connections``: N connections of the same stream through the asset step's connection fan-out
  (``defs.assets._sync_one``), for the aggregate-rate benchmark;
- ``run_bare``: the same pages fetched with plain httpx (same params: ``limit``,
  ``updated_date[gte]``/``[lt]``, ``page_token``) and ``json.loads``; nothing else. It is the floor
  that server time, loopback HTTP and JSON decoding impose, so the engine is judged by its overhead.

Run as a script it is the child process of the memory benchmark (and the profiler target):
``python benchmarks/_workloads.py engine --db PATH [--profile FILE]`` with the TRACKSTAR_*
variables in the environment; it prints one JSON line with the figures, including peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.defs.assets import WarehouseDestination
from integrations_pipeline.engine.auth import Credentials, secret_env_vars
from integrations_pipeline.engine.client import VendorClient, parse_connections
from integrations_pipeline.engine.read.extract import Window
from integrations_pipeline.engine.read.load import load_stream
from integrations_pipeline.engine.spec import ConnectorSpec
from integrations_pipeline.warehouse import connect_warehouse, table_spec_for

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _support import hwm_mib, peak_rss_mib, rss_now_mib  # noqa: E402  (benchmarks/ is not a package)

STREAM = "inventory"
# The sandbox's data lies in [2026-10-01, 2026-11-21); a day more on the right keeps every record in.
WINDOW = Window(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 22, tzinfo=UTC))
BOUND_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # the sandbox's strict filter format (and the spec's default)
MAX_PAGES = 100_000  # loop bound for the bare client: far above any size benchmarked


def trackstar_spec(*, rate_limits: bool, page_size: int | None = None) -> ConnectorSpec:
    """The shipped trackstar spec; optionally without its limiter, optionally with another page size."""
    spec = load_connectors()["trackstar"]
    update: dict[str, Any] = {}
    if not rate_limits:
        update["rate_limits"] = []
    if page_size is not None:
        stream = spec.streams[STREAM]
        pagination = stream.pagination.model_copy(update={"page_size": page_size})
        update["streams"] = {**spec.streams, STREAM: stream.model_copy(update={"pagination": pagination})}
    return spec.model_copy(update=update) if update else spec


class TimingTransport(httpx.HTTPTransport):
    """An ``HTTPTransport`` that notes when each request starts and its response headers arrive, in its own
    lists or in lists shared by several transports (a client per connection: each closes its own)."""

    def __init__(self, starts: list[float] | None = None, ends: list[float] | None = None) -> None:
        super().__init__()
        # list.append is atomic: the threads of several connections may share these.
        self.starts: list[float] = starts if starts is not None else []
        self.ends: list[float] = ends if ends is not None else []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.starts.append(time.perf_counter())
        response = super().handle_request(request)
        self.ends.append(time.perf_counter())
        return response


def run_engine(
    env: Mapping[str, str],
    db_path: Path,
    spec: ConnectorSpec,
    *,
    transport: httpx.BaseTransport | None = None,
) -> dict[str, Any]:
    """One full engine sync of the inventory stream into a fresh DuckDB file; figures as a dict."""
    credentials = Credentials.from_environ(spec.name, secret_env_vars(spec), env)
    connections = parse_connections(spec, credentials)
    table = table_spec_for(spec, STREAM)
    warehouse = connect_warehouse(f"duckdb://{db_path}")
    rss_before = rss_now_mib()
    last_page = {"at": 0.0, "hwm": float("nan"), "rss": float("nan")}

    def progress(message: str) -> None:
        # Called after each page is staged: the last call marks the end of fetch+stage, and the
        # peak RSS then excludes the DuckDB commit that follows. Two /proc reads per page: ~20 us.
        last_page["at"] = time.perf_counter()
        last_page["hwm"] = hwm_mib()
        last_page["rss"] = rss_now_mib()

    # An explicit transport also keeps httpx from mounting HTTP(S)_PROXY from the environment:
    # the traffic must stay on loopback.
    transport = transport if transport is not None else httpx.HTTPTransport()
    try:
        with VendorClient(spec, credentials, environ=dict(env), transport=transport) as client:
            started = time.perf_counter()
            warehouse.ensure_table(table)
            result = load_stream(
                client, STREAM, WarehouseDestination(warehouse, table), connections, window=WINDOW, progress=progress
            )
            finished = time.perf_counter()
            stats = client.stats.as_dict()
        rows = warehouse.row_count(table)
    finally:
        warehouse.close()
    return {
        "seconds": finished - started,
        "fetch_stage_seconds": last_page["at"] - started if last_page["at"] else 0.0,
        "commit_seconds": finished - last_page["at"] if last_page["at"] else 0.0,
        "records": result.records,
        "pages": result.pages,
        "rows": rows,
        "inserted": sum(o.inserted for o in result.outcomes),
        "skipped": len(result.skipped),
        "calls": int(stats["calls"]),
        "rate_limited": int(stats["rate_limited"]),
        "retries": int(stats["retries"]),
        "waited_seconds": stats["waited_seconds"],
        "rss_before_mib": rss_before,  # VmRSS after imports, before the sync
        "rss_last_page_mib": last_page["rss"],  # VmRSS right after the last page was staged
        "hwm_fetch_mib": last_page["hwm"],  # VmHWM then: the peak of fetch + stage
        "hwm_peak_mib": hwm_mib(),  # VmHWM at the end: the peak including the commit
        "maxrss_peak_mib": peak_rss_mib(),  # ru_maxrss at the end (see peak_rss_mib's caveat)
    }


class _StepLog:
    """What ``defs.assets._sync_one`` uses of a Dagster context: its log (kept quiet here)."""

    def info(self, message: str) -> None:
        pass

    warning = error = info


class _StepContext:
    log = _StepLog()


def run_connections(env: Mapping[str, str], db_path: Path, spec: ConnectorSpec) -> dict[str, Any]:
    """Every connection in ``TRACKSTAR_ACCESS_TOKEN`` read by the asset step's own fan-out
    (``defs.assets._sync_one``: ``CONNECTION_CONCURRENCY`` connections at once, a client and a limiter
    each) into a fresh DuckDB file; figures as a dict (``starts``/``ends``: every request's times)."""
    from integrations_pipeline.defs.assets import _sync_one
    from integrations_pipeline.defs.translator import StreamProps

    credentials = Credentials.from_environ(spec.name, secret_env_vars(spec), env)
    connections = parse_connections(spec, credentials)
    props = StreamProps(spec, STREAM)
    starts: list[float] = []
    ends: list[float] = []
    failed: dict[str, str] = {}
    warehouse = connect_warehouse(f"duckdb://{db_path}")
    try:
        started = time.perf_counter()
        loaded = _sync_one(
            _StepContext(),
            lambda: VendorClient(spec, credentials, environ=dict(env), transport=TimingTransport(starts, ends)),
            warehouse,
            props,
            connections,
            WINDOW,
            failed,
        )
        seconds = time.perf_counter() - started
        rows = warehouse.row_count(props.table)
    finally:
        warehouse.close()
    if failed:
        raise RuntimeError(f"connections failed: {failed}")
    return {
        "seconds": seconds,
        "connections": len(connections),
        "rows": rows,
        "records": sum(x.result.records for x in loaded.values()),
        "pages": sum(x.result.pages for x in loaded.values()),
        "calls": sum(int(x.stats["calls"]) for x in loaded.values()),
        "rate_limited": sum(int(x.stats["rate_limited"]) for x in loaded.values()),
        "starts": sorted(starts),
        "ends": sorted(ends),
    }


def run_bare(env: Mapping[str, str], *, page_size: int = 1000) -> dict[str, Any]:
    """Fetch every page of the window with plain httpx and ``json.loads``; no engine code at all."""
    token = env["TRACKSTAR_ACCESS_TOKEN"]
    token = token.partition("=")[2] if "=" in token else token  # "conn_a=tok" → "tok"
    headers = {
        "accept": "application/json",
        "x-trackstar-api-key": env["TRACKSTAR_API_KEY"],
        "x-trackstar-access-token": token,
    }
    params = {
        "limit": page_size,
        "updated_date[gte]": WINDOW.start.strftime(BOUND_FORMAT),
        "updated_date[lt]": WINDOW.end.strftime(BOUND_FORMAT),
    }
    records = pages = 0
    started = time.perf_counter()
    # trust_env=False: no proxies from the environment, like the engine's explicit transport.
    with httpx.Client(base_url=env["TRACKSTAR_BASE_URL"], headers=headers, timeout=60, trust_env=False) as http:
        next_token = None
        while pages < MAX_PAGES:
            query = params if next_token is None else {**params, "page_token": next_token}
            response = http.get("/wms/inventory", params=query)
            response.raise_for_status()
            body = json.loads(response.content)
            records += len(body["data"])
            pages += 1
            next_token = body.get("next_token")
            if not next_token:
                break
    return {"seconds": time.perf_counter() - started, "records": records, "pages": pages}


# ------------------------------------------------------------------------------- child process


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="One engine extraction in this process; prints a JSON line.")
    parser.add_argument("what", choices=["engine", "bare"])
    parser.add_argument("--db", type=Path, help="DuckDB file (default: a fresh temporary one, removed after)")
    parser.add_argument("--with-rate-limits", action="store_true", help="keep the spec's limiter (default: removed)")
    parser.add_argument("--page-size", type=int, default=None)
    parser.add_argument("--profile", type=Path, default=None, help="write cProfile stats of the run here")
    args = parser.parse_args(argv)

    env = {k: v for k, v in os.environ.items() if k.startswith("TRACKSTAR_")}
    if not env.get("TRACKSTAR_BASE_URL", "").startswith("http://127.0.0.1:"):
        raise SystemExit("TRACKSTAR_BASE_URL must point at a loopback sandbox (http://127.0.0.1:PORT)")
    scratch = None
    db_path = args.db
    if db_path is None and args.what == "engine":
        scratch = Path(tempfile.mkdtemp(prefix="ip-bench-"))
        db_path = scratch / "warehouse.duckdb"
    try:
        if args.what == "engine":
            spec = trackstar_spec(rate_limits=args.with_rate_limits, page_size=args.page_size)

            def work() -> dict[str, Any]:
                return run_engine(env, db_path, spec)
        else:

            def work() -> dict[str, Any]:
                return run_bare(env, page_size=args.page_size or 1000)

        if args.profile is not None:
            import cProfile

            profiler = cProfile.Profile()
            figures = profiler.runcall(work)
            profiler.dump_stats(str(args.profile))
        else:
            figures = work()
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
