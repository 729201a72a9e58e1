"""Several runs at once: DuckDB's single-writer file lock (retry with back-off), threads, PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import pytest

import integrations_pipeline.warehouse.duckdb as duckdb_backend
from integrations_pipeline.warehouse import Column, LoadResult, TableSpec, WarehouseError, connect_warehouse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

HOLDER = textwrap.dedent(
    """
    import sys, time, duckdb
    conn = duckdb.connect(sys.argv[1])
    print("locked", flush=True)
    sys.stdin.readline()  # hold the file until told to let go
    conn.close()
    """
)


def _table(schema: str) -> TableSpec:
    return TableSpec(schema, "items", (Column("id", "string"), Column("v", "integer")), ("id",), None)


class Holder:
    """Another process with the DuckDB file open (so it holds the file lock) until ``release()``."""

    def __init__(self, path: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
        self.proc.wait(timeout=30)


@pytest.fixture
def holder(duckdb_url):
    holders: list[Holder] = []

    def start() -> Holder:
        h = Holder(duckdb_url.removeprefix("duckdb://"))
        holders.append(h)
        return h

    yield start
    for h in holders:
        h.release()


def test_commit_waits_for_another_process_to_release_the_lock(duckdb_url, holder, monkeypatch, unique_schema):
    table = _table(unique_schema("lock"))
    wh = connect_warehouse(duckdb_url)
    wh.ensure_table(table)
    load = wh.open_load(table, "k")
    h = holder()
    load.write_batch([{"id": "a", "v": 1}])  # staging needs no lock

    sleeps: list[float] = []
    real_sleep = duckdb_backend.time.sleep

    def counting_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            h.release()  # the other run finishes while we back off
        real_sleep(seconds)

    monkeypatch.setattr(duckdb_backend.time, "sleep", counting_sleep)
    assert load.commit({"s": 1}) == LoadResult(1, 1, 0, 0)
    assert len(sleeps) >= 3
    assert sleeps[1] > sleeps[0] * 0.5  # backing off, not spinning
    assert wh.read_records(table) == [{"id": "a", "v": 1}]
    assert wh.read_state("k") == {"s": 1}


def test_reads_wait_too(duckdb_url, holder, unique_schema):
    table = _table(unique_schema("lock"))
    wh = connect_warehouse(duckdb_url)
    wh.ensure_table(table)
    h = holder()
    timer = threading.Timer(0.3, h.release)
    timer.start()
    try:
        assert wh.row_count(table) == 0
    finally:
        timer.cancel()


def test_lock_timeout_is_a_warehouse_error(duckdb_url, holder, unique_schema):
    table = _table(unique_schema("lock"))
    wh = connect_warehouse(duckdb_url, lock_timeout=0.3)
    wh.ensure_table(table)
    holder()
    with wh.open_load(table, "k") as load:
        load.write_batch([{"id": "a", "v": 1}])
        with pytest.raises(WarehouseError, match=r"stayed locked by another process for 0\.3 s"):
            load.commit(None)
        assert load.status == "open"
    assert load.status == "aborted"


WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from integrations_pipeline.warehouse import Column, TableSpec, connect_warehouse
    table = TableSpec({schema!r}, "items", (Column("id", "string"), Column("v", "integer")), ("id",), None)
    wh = connect_warehouse({url!r})
    name = sys.argv[1]
    for i in range(8):
        with wh.open_load(table, "k:" + name) as load:
            load.write_batch([{{"id": name + str(i), "v": i}}, {{"id": "shared", "v": i}}])
            load.commit({{"i": i}})
        wh.row_count(table)
    print("ok", flush=True)
    """
)


def test_two_processes_write_one_file(warehouse_url, unique_schema):
    schema = unique_schema("procs")
    code = WRITER.format(root=ROOT, schema=schema, url=warehouse_url)
    procs = [
        subprocess.Popen([sys.executable, "-c", code, n], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in ("p", "q")
    ]
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0 and out.strip() == "ok", err
    with connect_warehouse(warehouse_url) as wh:
        table = _table(schema)
        rows = wh.read_records(table)
        assert len(rows) == 17  # 8 + 8 + "shared"
        assert {r["id"] for r in rows} == {f"{n}{i}" for n in "pq" for i in range(8)} | {"shared"}
        assert wh.read_state("k:p") == {"i": 7} and wh.read_state("k:q") == {"i": 7}


def test_threads_commit_concurrently(warehouse, unique_schema):
    table = _table(unique_schema("threads"))
    errors: list[BaseException] = []

    def run(name: str) -> None:
        try:
            for i in range(5):
                with warehouse.open_load(table, f"k:{name}") as load:
                    load.write_batch([{"id": f"{name}{i}", "v": i}, {"id": "shared", "v": i}])
                    load.commit({"i": i})
                warehouse.read_records(table)
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in "abcd"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    rows = warehouse.read_records(table)
    assert len(rows) == 21 and warehouse.row_count(table) == 21
    assert all(warehouse.read_state(f"k:{n}") == {"i": 4} for n in "abcd")
