"""Webhook → SALESmanago latency for a Salestrekker deal moved a stage: one run against two, sensors evaluated at once.

``.venv/bin/python benchmarks/webhook_latency.py [--rounds 5] [--warehouse duckdb|URL]``

Every vendor's sandbox on loopback (small CRM: 60 deals, 60 contacts), a DuckDB warehouse in a temp dir (or the
PostgreSQL URL given), the service in-process (Starlette's TestClient), one ephemeral Dagster instance. Setup:
the CRM streams loaded, deals → SALESmanago synced once, the sync sensor's cursor taken. Then each round:

1. an open deal moves to its next stage (won at the last); the sandbox posts ``{id, event}`` to the service: **t0** is
   when that POST starts;
2. the ``webhook_events`` sensor is evaluated (a tick); then, alternating by round, either its one run request is run
   in-process (``salestrekker/webhook_events`` reads the deal by id and merges it, then the syncs reading deals), or,
   the baseline, ``apply_webhook_events`` runs alone and the ``syncs_on_source_update`` sensor's request after it;
3. **t1** is when the SALESmanago sandbox receives the external-events call.

It prints each round's phases, the median of t1 - t0 per path and their ratio. What it leaves out, and a deployment
adds: the sensors' intervals (30 s for the one run; 30 s and 60 s for the two), the daemon's tick loop, and launching each run in its own
process (a few seconds each with the default run launcher). Timings vary by machine: read them as orders of
magnitude, not a contract; no test asserts them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
from starlette.testclient import TestClient

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.dagster import build_definitions
from integrations_pipeline.defs import constants as c
from integrations_pipeline.defs.events import JOB_NAME
from integrations_pipeline.defs.events import SENSOR_NAME as EVENTS_SENSOR
from integrations_pipeline.defs.resources import WarehouseResource
from integrations_pipeline.defs.sensors import SENSOR_NAME as SYNC_SENSOR
from integrations_pipeline.engine.auth import Credentials, secret_env_vars
from integrations_pipeline.engine.client import ClientFactory
from integrations_pipeline.sandbox import default_sandboxes, sandbox_environment
from integrations_pipeline.sandbox.server import serve
from integrations_pipeline.service.app import ServiceSettings, create_app
from integrations_pipeline.warehouse.inbox import open_inbox

SIZES = {"deals": 60, "contacts": 60, "orders": 5, "products": 5, "inventory": 5}
CRM = [dg.AssetKey(["salestrekker", s]) for s in ("deals", "contacts", "workflows")]
CRM_DAYS = {"dagster/asset_partition_range_start": "2026-10-01", "dagster/asset_partition_range_end": "2026-11-21"}
TO_SM_EVENTS = dg.AssetKey(["salesmanago", "salestrekker_deals_to_salesmanago_events"])
AT = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}  # the runs' DEBUG lines would drown the table


def _stamp_calls(sandbox: Any, marker: str) -> list[float]:
    """perf_counter stamps of the sandbox's requests whose path contains ``marker`` (its handle, wrapped)."""
    stamps: list[float] = []
    handle: Callable[[httpx.Request], httpx.Response] = sandbox.handle

    def stamped(request: httpx.Request) -> httpx.Response:
        if marker in request.url.path:
            stamps.append(time.perf_counter())
        return handle(request)

    sandbox.handle = stamped
    return stamps


def _open_deal(st: Any, taken: set[str]) -> str:
    """A deal not yet used that can move a stage (open, not at its workflow's last stage)."""
    last = {w["id"]: w["stages"][-1]["id"] for w in st.truth("workflows") if w["stages"]}
    for deal in st.truth("deals"):
        if (
            deal["id"] not in taken
            and not deal["isWon"]
            and not deal["isLost"]
            and last.get(deal["idWorkflow"]) != deal["idStage"]
        ):
            return str(deal["id"])
    raise SystemExit("no open deal is left: use fewer rounds")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warehouse", default="duckdb", help="'duckdb' (a temp file) or a postgresql:// URL")
    args = parser.parse_args(argv)

    boxes = default_sandboxes(seed=3, sizes=SIZES)
    st, sm = boxes["salestrekker"], boxes["salesmanago"]
    sm_calls = _stamp_calls(sm, "ExtEvent")
    specs = load_connectors()
    with tempfile.TemporaryDirectory() as tmp, serve(boxes) as servers:
        url = f"duckdb://{Path(tmp) / 'w.duckdb'}" if args.warehouse == "duckdb" else args.warehouse
        env = sandbox_environment(servers.base_urls, boxes)
        os.environ.update(env)  # the credentials resources bind their variables by name
        os.environ.pop("WAREHOUSE_URL", None)
        defs = build_definitions(warehouse_url=url)
        instance = dg.DagsterInstance.ephemeral()

        def client_for(spec):
            credentials = Credentials.from_environ(spec.name, secret_env_vars(spec), env)
            return ClientFactory(credentials, environ=env).connector(spec)

        http = TestClient(
            create_app(ServiceSettings.from_environ(specs, env), specs, lambda: open_inbox(url), client_for)
        )
        st.webhooks.subscribe(f"http://testserver/webhooks/salestrekker/{st.webhook_token}")
        resources = {c.WAREHOUSE_RESOURCE: WarehouseResource(url=url)}
        events_sensor = next(s for s in defs.sensors if s.name == EVENTS_SENSOR)
        sync_sensor = next(s for s in defs.sensors if s.name == SYNC_SENSOR)

        def run(keys, tags=None) -> None:
            result = dg.materialize(
                list(defs.assets),
                selection=keys,
                resources=defs.resources,
                tags=tags or {},
                instance=instance,
                run_config=QUIET,
            )
            if not result.success:
                raise SystemExit(f"run of {keys} failed")

        run(CRM, CRM_DAYS)
        run([TO_SM_EVENTS])
        sync_cursor = sync_sensor(dg.build_sensor_context(instance=instance)).cursor
        events_cursor: str | None = None  # no webhook stored yet

        taken: set[str] = set()
        totals: dict[str, list[float]] = {"one run": [], "two runs": []}
        print(f"warehouse: {url.split('://')[0]}; rounds: {args.rounds} per path; seconds per phase")
        print("round  path      store  events_tick  runs_to_call  total")
        for n in range(1, 2 * args.rounds + 1):
            # Alternating, so both paths see the same warehouse growth and machine load.
            path = "one run" if n % 2 else "two runs"
            deal = _open_deal(st, taken)
            taken.add(deal)
            st.change_deal(deal, AT + timedelta(minutes=n))
            calls_before = len(sm_calls)
            t0 = time.perf_counter()
            if st.webhooks.deliver(http) != 1:
                raise SystemExit("the service did not store the webhook")
            t_store = time.perf_counter()
            tick = events_sensor(dg.build_sensor_context(instance=instance, cursor=events_cursor, resources=resources))
            events_cursor = tick.cursor
            t_tick = time.perf_counter()
            if not tick.run_requests:
                raise SystemExit("the events sensor asked for no run")
            if path == "one run":
                # What the daemon launches: the events assets and the syncs reading deals, in one run.
                run(list(tick.run_requests[0].asset_selection))
            else:
                # The baseline: the events assets alone (apply_webhook_events), then the sync sensor's own run.
                if not defs.resolve_job_def(JOB_NAME).execute_in_process(instance=instance, run_config=QUIET).success:
                    raise SystemExit("the events job failed")
                due = sync_sensor(dg.build_sensor_context(instance=instance, cursor=sync_cursor))
                (request,) = due.run_requests
                run(list(request.asset_selection))
            sync_cursor = sync_sensor(dg.build_sensor_context(instance=instance, cursor=sync_cursor)).cursor
            if len(sm_calls) != calls_before + 1:
                raise SystemExit(f"expected one SALESmanago events call, saw {len(sm_calls) - calls_before}")
            t1 = sm_calls[-1]
            totals[path].append(t1 - t0)
            print(
                f"{n:>5}  {path:8}  {t_store - t0:5.3f}  {t_tick - t_store:11.3f}  {t1 - t_tick:12.3f}  {t1 - t0:5.3f}"
            )
        one, two = (statistics.median(totals[k]) for k in ("one run", "two runs"))
        print(
            f"webhook received -> SALESmanago call, sensors evaluated at once, runs in-process: one run (the events "
            f"sensor's) median {one:.2f} s; two runs (events job, then the sync sensor's run) median {two:.2f} s; "
            f"ratio {one / two:.2f}x. A deployment adds the events sensor's interval (30 s) to the first, and both "
            "sensors' (30 s + 60 s) to the second."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
