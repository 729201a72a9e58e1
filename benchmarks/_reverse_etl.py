"""Reverse-ETL benchmarks: push write calls (exact counts) and diff time (a same-run ratio).

4. Push write calls: SALESmanago contacts through ``engine.write.push.push`` into the ``salesmanago`` sink
   ``contacts_batch``, against the SALESmanago sandbox in-process (``httpx.MockTransport``), with a
   DuckDB warehouse in a temp dir as the DeliveryLog. Counts, not timings:
   N new contacts -> ⌈N / batch_size⌉ calls and the sandbox holds exactly N contacts; the same N
   again -> 0 calls; 1% changed -> ⌈N/100 / batch_size⌉ calls, updated = N/100. ``batch_size`` comes
   from the spec.
5. Diff time: N records already delivered (``record_delivery`` of key + ``record_hash``), 1% changed;
   ``read_delivered(state_key)`` + ``plan(sink, records, delivered)`` versus reading the same N
   records from a warehouse table with ``read_records`` (loaded first through the Warehouse API's
   staged load). 3 runs per side, alternating, medians compared. Target: <= 10 x.

Imported by ``run.py`` after the memory benchmark has spawned its children (this pulls in duckdb).
"""

from __future__ import annotations

import gc
import math
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from integrations_pipeline.connectors import load_connectors
from integrations_pipeline.engine.auth import Credentials, secret_env_vars
from integrations_pipeline.engine.client import ClientFactory
from integrations_pipeline.engine.write.plan import plan, record_hash
from integrations_pipeline.engine.write.push import push
from integrations_pipeline.sandbox.salesmanago import SalesmanagoSandbox, normalise_email
from integrations_pipeline.warehouse import Column, TableSpec, connect_warehouse

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _support import BenchmarkError, Report, SandboxServer, measure, median  # noqa: E402

CONNECTOR = "salesmanago"
SINK = "contacts_batch"
STATE_KEY = "bench.salesmanago_contacts_batch"
DIFF_TARGET = 10.0
CHANGED_EVERY = 100  # 1% of the records change
LOAD_PAGE = 10_000  # records per write_batch when loading the baseline table
# The flat source table the baseline reads: one row per contact, keyed by email.
SOURCE_TABLE = TableSpec(
    schema="bench",
    name="contacts",
    columns=(Column("email", "string"), Column("name", "string")),
    primary_key=("email",),
    cursor_field=None,
)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _k(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else f"{n // 1000}k"


def _email(i: int) -> str:
    return f"c{i:07d}@bench.test"


def _contact(i: int, version: str = "") -> dict[str, Any]:
    return {"contact": {"email": _email(i), "name": f"Contact {i}{version}"}}


def _expect(ok: bool, message: str) -> None:
    if not ok:
        raise BenchmarkError(message)


def _scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="ip-bench-retl-"))


# -------------------------------------------------------------------------- 4. push write calls


def bench_push_calls(report: Report, n: int) -> None:
    name = "4 push write calls"
    spec = load_connectors()[CONNECTOR]
    sink = spec.sinks[SINK]
    batch = sink.batch_size
    # A budget far above what the benchmark sends: the client's limiter (which reads the budget from
    # the sandbox's environment) never paces, and the sandbox never refuses.
    sandbox = SalesmanagoSandbox(requests_per_hour=1_000_000)
    env = sandbox.environment("http://salesmanago.sandbox.test")  # in-process: never resolved
    transport = sandbox.transport()
    credentials = Credentials.from_environ(spec.name, secret_env_vars(spec), env)
    scratch = _scratch()
    warehouse = connect_warehouse(f"duckdb://{scratch / 'warehouse.duckdb'}")

    def run(records: list[dict]) -> tuple[float, Any, int]:
        before = sandbox.write_calls
        seconds, result = measure(
            lambda: push(
                records,
                spec=spec,
                sink_name=SINK,
                ledger=warehouse,
                state_key=STATE_KEY,
                clients=ClientFactory(credentials, transport=transport, environ=env),
            )
        )
        return seconds, result, sandbox.write_calls - before

    def check(figure: str, expected: int, got: int, formula: str) -> None:
        report.check(name, figure, f"expected {expected}, got {got}", formula, got == expected)

    changed_n = len(range(0, n, CHANGED_EVERY))
    try:
        records = [_contact(i) for i in range(n)]
        say(f"[push] {n} new contacts to {CONNECTOR}/{SINK} (batch_size {batch} from the spec)")
        seconds, first, server_calls = run(records)
        expected = math.ceil(n / batch)
        check(f"{_k(n)} new: write calls (push report)", expected, first.write_calls, f"= ⌈{n} / {batch}⌉")
        check(f"{_k(n)} new: sandbox write calls", expected, server_calls, f"= ⌈{n} / {batch}⌉")
        check(f"{_k(n)} new: contacts the sandbox holds", n, len(sandbox.contacts), f"= {n}")
        check(f"{_k(n)} new: created", n, first.created, f"= {n}")
        report.info(name, f"{_k(n)} new: push seconds", f"{seconds:.2f} s")

        say(f"[push] the same {n} contacts again")
        seconds, again, server_calls = run(records)
        check(f"same {_k(n)} again: write calls (push report)", 0, again.write_calls, "= 0")
        check(f"same {_k(n)} again: sandbox write calls", 0, server_calls, "= 0")
        check(f"same {_k(n)} again: unchanged", n, again.unchanged, f"= {n}")
        report.info(name, f"same {_k(n)} again: push seconds", f"{seconds:.2f} s")

        say(f"[push] {changed_n} of {n} contacts changed (1%)")
        for i in range(0, n, CHANGED_EVERY):
            records[i] = _contact(i, " v2")
        seconds, changed, server_calls = run(records)
        expected = math.ceil(changed_n / batch)
        check("1% changed: write calls (push report)", expected, changed.write_calls, f"= ⌈{changed_n} / {batch}⌉")
        check("1% changed: sandbox write calls", expected, server_calls, f"= ⌈{changed_n} / {batch}⌉")
        check("1% changed: updated", changed_n, changed.updated, f"= {changed_n}")
        renamed = sum(
            1
            for i in range(0, n, CHANGED_EVERY)
            if sandbox.contacts[normalise_email(_email(i))].get("name") == f"Contact {i} v2"
        )
        check("1% changed: sandbox holds the new names", changed_n, renamed, f"= {changed_n}")
        report.info(name, "1% changed: created / unchanged", f"{changed.created} / {changed.unchanged}")
        report.info(name, "1% changed: push seconds", f"{seconds:.2f} s")
    finally:
        warehouse.close()
        shutil.rmtree(scratch, ignore_errors=True)
    report.notes.append(
        f"4 Push write calls: engine.push.push into {CONNECTOR}/{SINK} (batch_size {batch} from the spec) against "
        "the SALESmanago sandbox in-process (httpx.MockTransport, budget 1,000,000 requests/h), DuckDB "
        "warehouse in a temp dir as the DeliveryLog. Exact counts, from push's report and the sandbox's counter."
    )


# ------------------------------------------------------------------------------- 5. diff time


def _load_source(warehouse: Any, n: int) -> None:
    """The N contacts, flat (email, name), into ``bench.contacts`` through one staged load."""
    warehouse.ensure_table(SOURCE_TABLE)
    with warehouse.open_load(SOURCE_TABLE, "bench.contacts") as load:
        for start in range(0, n, LOAD_PAGE):
            load.write_batch(
                [{"email": _email(i), "name": f"Contact {i}"} for i in range(start, min(n, start + LOAD_PAGE))]
            )
        load.commit(None)


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()  # garbage of the previous run is not this run's cost
    return measure(fn)


def bench_diff_time(report: Report, n: int, repeats: int) -> None:
    name = "5 diff time"
    spec = load_connectors()[CONNECTOR]
    sink = spec.sinks[SINK]
    scratch = _scratch()
    warehouse = connect_warehouse(f"duckdb://{scratch / 'warehouse.duckdb'}")
    try:
        say(f"[diff] recording {n} deliveries (key + record_hash) and loading {n} source rows")
        records = [_contact(i) for i in range(n)]
        seconds, _ = measure(
            lambda: warehouse.record_delivery(
                STATE_KEY, [(r["contact"]["email"], record_hash(r), None) for r in records]
            )
        )
        say(f"[diff] record_delivery of {n} keys: {seconds:.2f} s")
        seconds, _ = measure(lambda: _load_source(warehouse, n))
        say(f"[diff] staged load of {n} rows into {SOURCE_TABLE.full_name}: {seconds:.2f} s")
        for i in range(0, n, CHANGED_EVERY):
            records[i] = _contact(i, " v2")
        changed_n = len(range(0, n, CHANGED_EVERY))

        base_runs: list[float] = []
        read_runs: list[float] = []
        diff_runs: list[float] = []
        total_runs: list[float] = []
        for rep in range(repeats):
            # Alternate baseline / diff so drift in machine load hits both sides alike.
            seconds, rows = _timed(lambda: warehouse.read_records(SOURCE_TABLE))
            _expect(len(rows) == n, f"read_records returned {len(rows)} rows, expected {n}")
            del rows
            base_runs.append(seconds)
            say(f"[diff] run {rep + 1}: read_records {seconds:6.2f} s")

            gc.collect()
            read_s, delivered = measure(lambda: warehouse.read_delivered(STATE_KEY))
            diff_s, planned = measure(lambda delivered=delivered: plan(sink, records, delivered))
            _expect(len(delivered) == n, f"read_delivered returned {len(delivered)} keys, expected {n}")
            counts = planned.counts()
            _expect(
                counts["updated"] == changed_n and counts["unchanged"] == n - changed_n and counts["created"] == 0,
                f"diff counted {counts}, expected {changed_n} updated and {n - changed_n} unchanged",
            )
            del delivered, planned
            read_runs.append(read_s)
            diff_runs.append(diff_s)
            total_runs.append(read_s + diff_s)
            say(
                f"[diff] run {rep + 1}: read_delivered {read_s:6.2f} s + diff {diff_s:6.2f} s = {read_s + diff_s:6.2f} s"
            )
    finally:
        warehouse.close()
        shutil.rmtree(scratch, ignore_errors=True)
    runs = lambda xs: ", ".join(f"{x:.2f}" for x in xs)  # noqa: E731
    base_med, total_med = median(base_runs), median(total_runs)
    ratio = total_med / base_med
    report.info(name, f"baseline read_records, {_k(n)} rows", f"median {base_med:.2f} s  (runs {runs(base_runs)})")
    report.info(name, f"read_delivered, {_k(n)} keys", f"median {median(read_runs):.2f} s  (runs {runs(read_runs)})")
    report.info(
        name, f"diff, {_k(n)} records, 1% changed", f"median {median(diff_runs):.2f} s  (runs {runs(diff_runs)})"
    )
    report.info(name, "read_delivered + diff", f"median {total_med:.2f} s  (runs {runs(total_runs)})")
    report.check(
        name,
        "(read_delivered + diff) / read_records (medians)",
        f"{ratio:.2f} x",
        f"<= {DIFF_TARGET:g} x",
        ratio <= DIFF_TARGET,
    )
    report.notes.append(
        f"5 Diff time: {_k(n)} contacts delivered before (record_delivery of key + record_hash), 1% renamed; "
        f"the baseline reads the same {_k(n)} contacts as flat rows (email, name) of a DuckDB table loaded "
        "through Warehouse.open_load, with read_records. gc.collect() before each timed run."
    )


# ------------------------------------------------------------------ 6. intent/record overhead

LEDGER_TARGET = 1.1


def _postgres_url() -> str | None:
    """A fresh database on the local PostgreSQL (TEST_POSTGRES_URL or 127.0.0.1:5432), or None."""
    import os
    import uuid

    try:
        import psycopg
    except ImportError:
        return None
    base = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    name = f"ip_bench_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(base, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"CREATE DATABASE {name}")
    except psycopg.Error:
        return None
    return base.rsplit("/", 1)[0] + f"/{name}"


def _drop_postgres(url: str) -> None:
    import os

    import psycopg

    base = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


def bench_ledger_overhead(report: Report, n: int, repeats: int, latency: float = 0.0) -> None:
    """push() (an intent before and a record after every call) against the same records sent by the
    pre-ledger path: plan, one SinkWriter.send per batch, one record_delivery at the end."""
    from integrations_pipeline.engine.write.sinks import SinkWriter

    name = "6 intent/record overhead"
    spec = load_connectors()[CONNECTOR]
    sink = spec.sinks[SINK]
    label = f"{_k(n)} contacts" + (f", vendor latency {latency * 1000:.0f} ms/call" if latency else "")
    backends = [("DuckDB", None)]
    pg = _postgres_url()
    if pg is not None:
        backends.append(("PostgreSQL", pg))
    records = [_contact(i) for i in range(n)]
    for backend, url in backends:
        scratch = _scratch()
        url = url or f"duckdb://{scratch / 'warehouse.duckdb'}"
        warehouse = connect_warehouse(url)
        with_runs: list[float] = []
        without_runs: list[float] = []
        try:
            # The vendor in its own process, as a real one is: accepting 1,000 contacts costs it CPU that,
            # in this process, would compete for the GIL with the push being measured.
            with SandboxServer(vendor=CONNECTOR, latency_ms=latency * 1000) as server:
                env = server.env
                credentials = Credentials.from_environ(spec.name, secret_env_vars(spec), env)

                clients = ClientFactory(credentials, environ=env)

                for rep in range(repeats):
                    gc.collect()
                    state = f"bench.ledger.{rep}"
                    seconds, pushed = measure(
                        lambda state=state, warehouse=warehouse, clients=clients: push(
                            records,
                            spec=spec,
                            sink_name=SINK,
                            ledger=warehouse,
                            state_key=state + ".with",
                            clients=clients,
                        )
                    )
                    _expect(
                        pushed.write_calls == math.ceil(n / sink.batch_size), f"push made {pushed.write_calls} calls"
                    )
                    with_runs.append(seconds)

                    def without(
                        state: str = state, warehouse: Any = warehouse, clients: ClientFactory = clients
                    ) -> int:
                        planned = plan(sink, records, warehouse.read_delivered(state + ".without"))
                        rows = []
                        with SinkWriter(clients.sink(spec, SINK), spec, SINK) as writer:
                            for batch in planned.batches():
                                result = writer.send(batch)
                                by_index = {i.index: i for i in batch}
                                rows += [
                                    (by_index[o.index].key, by_index[o.index].hash, o.response)
                                    for o in result.outcomes
                                    if o.status == "sent"
                                ]
                        return warehouse.record_delivery(state + ".without", rows)

                    gc.collect()
                    seconds, recorded = measure(without)
                    _expect(recorded == n, f"the pre-ledger path recorded {recorded} of {n}")
                    without_runs.append(seconds)
                    say(
                        f"[ledger] {backend} run {rep + 1}: push {with_runs[-1]:.2f} s, without per-call recording {seconds:.2f} s"
                    )
                again = push(
                    records,
                    spec=spec,
                    sink_name=SINK,
                    ledger=warehouse,
                    state_key="bench.ledger.0.with",
                    clients=clients,
                )
                report.check(
                    name,
                    f"{backend}, {label}: calls of an unchanged re-run",
                    f"{again.write_calls}",
                    "= 0",
                    again.write_calls == 0,
                )
        finally:
            warehouse.close()
            shutil.rmtree(scratch, ignore_errors=True)
            if backend == "PostgreSQL":
                _drop_postgres(url)
        ratio = median(with_runs) / median(without_runs)
        runs = lambda xs: ", ".join(f"{x:.2f}" for x in xs)  # noqa: E731
        report.info(
            name,
            f"{backend}, {label}: push / without",
            f"{median(with_runs):.2f} s / {median(without_runs):.2f} s (runs {runs(with_runs)} / {runs(without_runs)})",
        )
        report.check(
            name,
            f"{backend}, {label}: push / without per-call recording (medians)",
            f"{ratio:.2f} x",
            f"<= {LEDGER_TARGET:g} x",
            ratio <= LEDGER_TARGET,
        )
        per_call = (median(with_runs) - median(without_runs)) / math.ceil(n / sink.batch_size) * 1000
        report.info(name, f"{backend}, {label}: cost of the intent + record", f"{per_call:.1f} ms per call")
    if pg is None:
        report.info(name, "PostgreSQL", "skipped: no server at TEST_POSTGRES_URL or 127.0.0.1:5432")
    note = (
        f"6 Intent/record overhead: {_k(n)} SALESmanago contacts into {CONNECTOR}/{SINK} (1,000 per call) against the "
        "sandbox in its own process on loopback, through push() (lease, an intent before and a record after each call, "
        "each one transaction; for an idempotent sink, call k-1's record and call k+1's intent written while call k is sent) versus the pre-ledger path (plan, one send per batch, one record_delivery at the end). "
        f"{repeats} alternating runs per side, fresh delivered state each run; the 'latency' rows add a fixed delay per "
        "vendor call, as a real vendor has."
    )
    if note not in report.notes:  # the benchmark runs twice (with and without latency): one note
        report.notes.append(note)
