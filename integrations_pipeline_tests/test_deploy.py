"""The production deployment of ``deploy/``, on real parts: Dagster on PostgreSQL with its daemon and run queue,
steps on Celery workers over RabbitMQ, a PostgreSQL warehouse.

The test starts what a deployment runs, each as its own process: ``dagster-daemon run`` on ``deploy/workspace.yaml``
with ``deploy/dagster.yaml`` as the instance (its Trackstar run limit lowered to 1 so the limit is visible) and a
``dagster-celery`` worker. The sandbox vendors serve on loopback from this process. Three Trackstar customers link
their WMS through the service (tokens sealed into the warehouse's registry); ``deploy/backfill.py`` stores range
backfills of two streams, as the UI's "Launch backfill" does: one of the first connection, held at the sandbox
until its run worker is killed, one over the other two, and then:

- the daemon turns each into runs (one per connection's range of days), each tagged with the vendor by the run
  coordinator, none of them overlapping another (the queue's Trackstar limit of 1): none of the second backfill's
  runs runs while the first holds the limit;
- the run worker killed with SIGKILL is marked failed and frees its place in the queue (the next runs start);
  a new backfill of its connection then completes it;
- every step of the runs that finished ran on the Celery worker, not in the run worker;
- the warehouse holds exactly the sandbox's records of those days, for each connection, no more, no fewer.

It needs RabbitMQ on 127.0.0.1:5672 (``.ci/run`` starts it) and PostgreSQL: skipped without them, failed under
``CI=true``. Nothing here asserts a duration; the waits are bounded only so a broken deployment fails the test.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from cryptography.fernet import Fernet
from dagster._core.execution.backfill import BulkActionStatus

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.defs.constants import VENDOR_TAG
from integrations_pipeline.sandbox import default_sandboxes, sandbox_environment
from integrations_pipeline.sandbox.server import serve
from integrations_pipeline_tests.conftest import service_missing
from integrations_pipeline_tests.linking import link, service
from integrations_pipeline_tests.partitions import stored_by_connection

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
SPECS = load_connectors()
STREAMS = ("orders", "products")
CONNECTIONS = ("conn_a", "conn_b", "conn_c")
FIRST, LAST = "2026-10-01", "2026-10-05"
WAIT = 300.0  # seconds: a bound for a broken deployment, never a figure the test checks


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=3):
            return True
    except OSError:
        return False


@pytest.fixture
def rabbitmq() -> None:
    if not _reachable("127.0.0.1", 5672):
        service_missing("RabbitMQ not reachable at 127.0.0.1:5672 (the Celery broker)")


def _wait(what: str, check: Callable[[], Any], procs: list[subprocess.Popen[bytes]], home: Path) -> Any:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"{proc.args[0]} exited ({proc.returncode}) waiting for {what}:\n{_logs(home)}")
        time.sleep(0.5)
    raise AssertionError(f"no {what} within {WAIT:.0f} s:\n{_logs(home)}")


def _logs(home: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(home.glob("*.log")))


def _truth(trackstar: Any, stream: str) -> dict[str, set[str]]:
    """Each connection's records whose cursor falls on one of the backfilled days (UTC)."""
    cursor = SPECS["trackstar"].streams[stream].incremental.cursor_field  # type: ignore[union-attr]
    return {
        conn: {r["id"] for r in trackstar.truth(stream, conn) if FIRST <= str(r[cursor])[:10] <= LAST}
        for conn in CONNECTIONS
    }


def _backfill(env: dict[str, str], *connections: str) -> str:
    assets = [arg for s in STREAMS for arg in ("--asset", f"trackstar/{s}")]
    out = subprocess.run(
        [str(BIN / "python"), str(DEPLOY / "backfill.py"), *assets, "--from", FIRST, "--to", LAST]
        + ["--connections", ",".join(connections)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    # The code server the script starts logs to the same stdout, after the id at times: the id is its own line.
    (backfill_id,) = re.findall(r"^[a-z0-9]{8}$", out.stdout, flags=re.MULTILINE)
    return backfill_id


def _run_worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The run worker's pid, from the engine event the code server reports when it starts the run's process
    (``dagster/_grpc/impl.py``: "Started process for run (pid: N).")."""
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        found = re.fullmatch(r"Started process for run \(pid: (\d+)\)\.", record.message or "")
        if found:
            return int(found.group(1))
    return None


@pytest.mark.postgres
def test_a_range_backfill_runs_through_the_queue_on_celery_workers_and_the_warehouse_equals_the_truth(
    rabbitmq, postgres_url, tmp_path, monkeypatch
):
    home = tmp_path / "dagster_home"
    home.mkdir()
    # Dagster's runs, event logs and schedules beside the warehouse's schemas, in its database. The URL names
    # psycopg2, which dagster-postgres is written for: SQLAlchemy 2.1 picks psycopg 3 for a bare postgresql://
    # (README, "Beyond one machine").
    storage_url = postgres_url.replace("postgresql://", "postgresql+psycopg2://", 1)
    config = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    limits = config["run_coordinator"]["config"]["tag_concurrency_limits"]
    (trackstar_limit,) = [lim for lim in limits if lim["key"] == VENDOR_TAG and lim["value"] == "trackstar"]
    trackstar_limit["limit"] = 1  # one Trackstar run at a time: overlapping runs would show the limit failed
    config["run_coordinator"]["config"]["dequeue_interval_seconds"] = 1
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))

    boxes = default_sandboxes(seed=5, sizes={"orders": 240, "products": 120})
    trackstar = boxes["trackstar"]
    procs: list[subprocess.Popen[bytes]] = []
    with serve(boxes) as servers:
        env = {
            **os.environ,
            **sandbox_environment(servers.base_urls, boxes),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # dagster-celery starts `celery`
            "DAGSTER_HOME": str(home),
            "DAGSTER_PG_URL": storage_url,
            "WAREHOUSE_URL": postgres_url,
            "RATE_LIMIT_URL": f"sqlite:///{tmp_path / 'budgets.sqlite'}",
            "INTEGRATIONS_PIPELINE_API_KEY": uuid.uuid4().hex,
            "INTEGRATIONS_PIPELINE_SECRET_KEY": Fernet.generate_key().decode(),
        }
        env.pop("TRACKSTAR_ACCESS_TOKEN", None)  # connections come from the link flow only
        trackstar.connect("conn_c")
        for conn in CONNECTIONS:
            link(service(env, postgres_url), env, f"code_{conn}")
        monkeypatch.setenv("DAGSTER_PG_URL", storage_url)  # this process reads the same instance
        # Opened first: it creates the storage's tables once. The daemon and the worker opening an empty database
        # at the same moment race on it (two CREATE TABLE alembic_version); a deployment runs
        # `dagster instance migrate` before starting them (README, "Beyond one machine").
        with dg.DagsterInstance.from_config(str(home)) as instance:
            try:
                for name, command in (
                    ("celery", [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app"]),
                    ("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(DEPLOY / "workspace.yaml")]),
                ):
                    log = open(home / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
                    procs.append(
                        subprocess.Popen(
                            command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                        )
                    )
                instance.add_dynamic_partitions("trackstar_connections", list(CONNECTIONS))
                _check_deployment(instance, env, home, procs, trackstar, postgres_url)
            finally:
                for proc in procs:  # each in a session of its own: its children (celery, code server) go with it
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGTERM)
                for proc in procs:
                    try:
                        proc.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(proc.pid, signal.SIGKILL)
                shutil.rmtree(home / "dagster_celery", ignore_errors=True)


class _Gate:
    """Holds every Trackstar request of one connection until released: the run reading it is surely running."""

    def __init__(self, trackstar: Any, connection: str) -> None:
        self.trackstar, self.connection = trackstar, connection
        self.reached, self.released = threading.Event(), threading.Event()
        self._handle = trackstar.handle

    def handle(self, request: Any) -> Any:
        if request.headers.get("x-trackstar-access-token") == self.trackstar.connections.get(self.connection):
            self.reached.set()
            self.released.wait(WAIT)
        return self._handle(request)


def _check_deployment(instance, env, home, procs, trackstar, warehouse_url) -> None:  # type: ignore[no-untyped-def]
    def runs_of(backfill_id: str) -> list[dg.DagsterRun]:
        return list(instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id})))

    def ended(backfill_id: str) -> bool:
        backfill = instance.get_backfill(backfill_id)
        return backfill is not None and backfill.status != BulkActionStatus.REQUESTED

    killed_conn, rest = CONNECTIONS[0], CONNECTIONS[1:]
    gate = _Gate(trackstar, killed_conn)
    trackstar.handle = gate.handle
    try:
        first = _backfill(env, killed_conn)
        second = _backfill(env, *rest)  # one backfill over two connections' ranges of days
        assert instance.get_backfill(first) is not None and instance.get_backfill(second) is not None, (first, second)
        _wait("the first run's request", gate.reached.is_set, procs, home)
        (run,) = _wait(
            "the first run's worker",
            lambda: [r for r in runs_of(first) if _run_worker_pid(instance, r.run_id)],
            procs,
            home,
        )
        # The Trackstar limit is 1: while the first run holds it, none of the second backfill's runs is running
        # (the daemon may have run one of them before the first backfill's run was queued).
        waiting = [r.status for r in runs_of(second)]
        assert not set(waiting) & {dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED}, waiting
        os.kill(_run_worker_pid(instance, run.run_id), signal.SIGKILL)  # type: ignore[arg-type]  # as the OOM killer would
        _wait("the killed run's failure", lambda: instance.get_run_by_id(run.run_id).is_finished, procs, home)
    finally:
        gate.released.set()
    killed = instance.get_run_by_id(run.run_id)
    assert killed is not None and killed.status == dg.DagsterRunStatus.FAILURE

    # The killed run freed its place: the second backfill runs, then a new backfill of the killed connection.
    _wait("the second backfill's end", lambda: ended(second), procs, home)
    third = _backfill(env, killed_conn)
    _wait("the third backfill's end", lambda: ended(third), procs, home)
    runs = [killed, *runs_of(second), *runs_of(third)]
    # One run per connection's range of days (the streams' single-run backfill policy), each succeeded.
    assert [r.status for r in runs[1:]] == [dg.DagsterRunStatus.SUCCESS] * 3, [(r.run_id, r.status) for r in runs]

    # The queue: every run tagged with its vendor by the coordinator, never two Trackstar runs at once.
    assert all(r.tags.get(VENDOR_TAG) == "trackstar" for r in runs), [r.tags for r in runs]
    records = [instance.get_run_record_by_id(r.run_id) for r in runs]
    spans = sorted((rec.start_time, rec.end_time) for rec in records if rec is not None)
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:], strict=False)), spans

    # The steps ran on the Celery worker: the run worker hands each one to the broker.
    for run in runs[1:]:
        messages = [e.message for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)]
        assert any("in celery worker" in (m or "") for m in messages), messages

    for stream in STREAMS:
        assert all(_truth(trackstar, stream).values()), stream  # records on those days, for each
        assert stored_by_connection(warehouse_url, stream) == _truth(trackstar, stream), stream
