"""Webhook → SALESmanago latency under a real Dagster daemon: the figure a deployment sees.

``.venv/bin/python benchmarks/webhook_daemon.py [--rounds 3] [--postgres postgresql://postgres@127.0.0.1:5432/test]``

``webhook_latency.py`` evaluates the sensors in-process; this one runs what a deployment runs: a Dagster instance
in a temp ``DAGSTER_HOME`` (SQLite storage, the default queued run coordinator and subprocess run launcher), the
``dagster-daemon`` process loading ``workspace.yaml``, the ``webhook_events`` sensor started with
``dagster sensor start``, the service (uvicorn on loopback, in this process) and the sandbox vendors (loopback, in
this process, so the SALESmanago call is stamped where it lands). The warehouse is a fresh PostgreSQL database
(the daemon, its runs and the service are separate processes: the embedded DuckDB file takes one writer at a
time), dropped at the end.

Setup: the CRM streams loaded and the CRM syncs run once (in-process, on the same instance). Each round: an open
Salestrekker deal moves a stage, the sandbox posts ``{id, event}`` to the service (**t0**: the POST starts), and
the round waits for the SALESmanago sandbox's external-events call (**t1**). Printed per round: t1 - t0 split into
the wait for the sensor's tick (until the run is created), the queue and launch (created → started) and the run
itself (started → the call); then the medians and the ratio of the latency to the sensor's interval plus the
run's own duration (the goal: within the interval plus one run, i.e. a ratio at most 1).

Then (unless ``--no-onboard``) a Trackstar customer connects: the sandbox posts ``connection.created`` with its token,
the daemon's ``webhook_events`` run seals it into the registry and ``trackstar_connections`` adds the connection's
partition and launches one run of its whole history (range tags ``conn|first … conn|last``, a single run): printed
are the time from the webhook to that run's end, its status and whether the connection's orders are all in the
warehouse. Timings vary by machine; no test asserts them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
from cryptography.fernet import Fernet

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.dagster import build_definitions
from integrations_pipeline.defs.events import SENSOR_NAME
from integrations_pipeline.demo import service_client
from integrations_pipeline.sandbox import default_sandboxes, sandbox_environment
from integrations_pipeline.sandbox.server import serve

sys.path.insert(0, str(Path(__file__).resolve().parent))
from webhook_latency import (  # noqa: E402  (a sibling script, not a package)
    AT,
    CRM,
    CRM_DAYS,
    QUIET,
    SIZES,
    TO_SM_EVENTS,
    _open_deal,
    _stamp_calls,
)

ROOT = Path(__file__).resolve().parents[1]
TO_SM_CONTACTS = dg.AssetKey(["salesmanago", "salestrekker_contacts_to_salesmanago_contacts"])
INTERVAL = 30  # the webhook_events sensor's minimum_interval_seconds


def _database(server: str, name: str, *, drop: bool) -> str:
    import psycopg

    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"' if drop else f'CREATE DATABASE "{name}"')
    parts = urlsplit(server)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _wait(what: str, check, timeout: float, step: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(step)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


def _onboard(instance: dg.DagsterInstance, http, trackstar, url: str, env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """Phase 2: a customer links a WMS; Trackstar posts ``connection.created`` (its token inside). The daemon runs
    ``webhook_events`` (the token sealed into the registry), then ``trackstar_connections`` (a partition for the
    connection and one run of its whole history, a multi-partition range run): how long until that run ends, and
    whether the warehouse then holds exactly the connection's orders."""
    from integrations_pipeline.connectors import load_connectors
    from integrations_pipeline.defs.connections import CONNECTION_TAG
    from integrations_pipeline.warehouse import table_spec_for
    from integrations_pipeline.warehouse.inbox import open_inbox

    trackstar.webhooks.subscribe(f"{str(http.base_url).rstrip('/')}/webhooks/trackstar")
    try:
        trackstar.connect("conn_new")
        t0 = time.perf_counter()
        if trackstar.webhooks.deliver(http) != 1:
            raise SystemExit("the service did not store connection.created")
    finally:
        trackstar.webhooks.url = None

    def history_run():  # type: ignore[no-untyped-def]
        runs = instance.get_runs(filters=dg.RunsFilter(tags={CONNECTION_TAG: "conn_new"}))
        return next((r for r in runs if r.is_finished), None)

    run = _wait("the history run of conn_new", history_run, timeout=600, step=0.5)
    took = time.perf_counter() - t0
    tags = run.tags
    with open_inbox(url) as wh:
        rows = wh.read_records(table_spec_for(load_connectors()["trackstar"], "orders"))
    stored = {r["id"] for r in rows if r["_connection_id"] == "conn_new"}
    truth = {o["id"] for o in trackstar.truth("orders", "conn_new")}
    print(
        f"onboarding under the daemon: connection.created → history run {run.status.value} in {took:.1f} s "
        f"(range {tags.get('dagster/asset_partition_range_start')} … {tags.get('dagster/asset_partition_range_end')});"
        f" conn_new orders in the warehouse {len(stored)} of {len(truth)}" + ("" if stored == truth else " — MISMATCH")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test", help="server to use")
    parser.add_argument(
        "--no-onboard",
        dest="onboard",
        action="store_false",
        help="skip the second phase: a Trackstar customer connecting, onboarded by the daemon",
    )
    args = parser.parse_args(argv)

    boxes = default_sandboxes(seed=3, sizes=SIZES)
    st = boxes["salestrekker"]
    sm_calls = _stamp_calls(boxes["salesmanago"], "ExtEvent")
    specs = load_connectors()
    name = f"ip_daemon_{uuid.uuid4().hex[:8]}"
    url = _database(args.postgres, name, drop=False)
    daemon: subprocess.Popen[bytes] | None = None
    try:
        with tempfile.TemporaryDirectory() as home, serve(boxes) as servers:
            env = {
                **os.environ,
                **sandbox_environment(servers.base_urls, boxes),
                "WAREHOUSE_URL": url,
                "DAGSTER_HOME": home,
                "INTEGRATIONS_PIPELINE_API_KEY": uuid.uuid4().hex,
                "INTEGRATIONS_PIPELINE_SECRET_KEY": Fernet.generate_key().decode(),
            }
            # Trackstar connections come from the link flow only (the onboarding phase links one): no fallback.
            env.pop("TRACKSTAR_ACCESS_TOKEN", None)
            os.environ.pop("TRACKSTAR_ACCESS_TOKEN", None)
            os.environ.update(env)  # the in-process setup runs and the service read the same variables
            Path(home, "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
            defs = build_definitions()
            with dg.DagsterInstance.get() as instance:
                for keys, tags in ((CRM, CRM_DAYS), ([TO_SM_EVENTS, TO_SM_CONTACTS], {})):
                    result = dg.materialize(
                        list(defs.assets),
                        selection=keys,
                        resources=defs.resources,
                        tags=tags,
                        instance=instance,
                        run_config=QUIET,
                    )
                    if not result.success:
                        raise SystemExit(f"setup run of {keys} failed")
                workspace = ["-w", str(ROOT / "workspace.yaml")]
                for sensor in [SENSOR_NAME, *(["trackstar_connections"] if args.onboard else [])]:
                    subprocess.run(
                        [str(Path(sys.executable).with_name("dagster")), "sensor", "start", sensor, *workspace],
                        env=env,
                        cwd=ROOT,
                        check=True,
                        capture_output=True,
                    )
                log = open(Path(home) / "daemon.log", "wb")  # noqa: SIM115 (closed with the process)
                daemon = subprocess.Popen(
                    [str(Path(sys.executable).with_name("dagster-daemon")), "run", *workspace],
                    env=env,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
                with service_client(specs, env, url) as http:
                    st.webhooks.subscribe(f"{str(http.base_url).rstrip('/')}/webhooks/salestrekker/{st.webhook_token}")
                    taken: set[str] = set()
                    rows = []
                    print(
                        f"daemon up (pid {daemon.pid}); sensor {SENSOR_NAME} every {INTERVAL} s; {args.rounds} rounds"
                    )
                    print("round  to_run_created  queue_to_start  run_to_call  total   run_duration")
                    for n in range(1, args.rounds + 1):
                        deal = _open_deal(st, taken)
                        taken.add(deal)
                        st.change_deal(deal, AT + timedelta(minutes=n))
                        calls, runs_before = len(sm_calls), {r.run_id for r in instance.get_runs()}
                        t0 = time.perf_counter()
                        wall0 = datetime.now(UTC).timestamp()
                        if st.webhooks.deliver(http) != 1:
                            raise SystemExit("the service did not store the webhook")
                        _wait("the SALESmanago call", lambda c=calls: len(sm_calls) > c, timeout=300)
                        t1 = sm_calls[-1]
                        (run,) = [r for r in instance.get_runs() if r.run_id not in runs_before]
                        _wait("the run's end", lambda r=run: instance.get_run_by_id(r.run_id).is_finished, 300)
                        record = instance.get_run_record_by_id(run.run_id)
                        assert record is not None and record.start_time and record.end_time
                        created = record.create_timestamp.timestamp() - wall0
                        started = record.start_time - wall0
                        duration = record.end_time - record.start_time
                        rows.append((created, started - created, (t1 - t0) - started, t1 - t0, duration))
                        print(
                            f"{n:>5}  {created:14.2f}  {started - created:14.2f}  {(t1 - t0) - started:11.2f}  "
                            f"{t1 - t0:5.2f}  {duration:12.2f}"
                        )
                    st.webhooks.url = None
                    if args.onboard:
                        _onboard(instance, http, boxes["trackstar"], url, env)
            total = statistics.median(r[3] for r in rows)
            duration = statistics.median(r[4] for r in rows)
            print(
                f"webhook received -> SALESmanago call under the daemon: median {total:.1f} s (sensor wait "
                f"{statistics.median(r[0] for r in rows):.1f} s, queue and launch {statistics.median(r[1] for r in rows):.1f}"
                f" s, run to the call {statistics.median(r[2] for r in rows):.1f} s); the goal, the sensor's interval "
                f"plus one run: {INTERVAL} + {duration:.1f} s; ratio {total / (INTERVAL + duration):.2f}x"
            )
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(timeout=60)
        _database(args.postgres, name, drop=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
